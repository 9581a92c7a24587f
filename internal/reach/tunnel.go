// Package reach gets a local URL for the vLLM server: a port-forward through
// the Kubernetes API server to a Ready pod behind the Service (what
// `kubectl port-forward service/...` does), which moves to another Ready pod
// when its connection breaks.
package reach

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	"github.com/vllm-hpa/vllm-hpa/internal/kube"
)

// Tunnel is a port-forward to one Ready pod of a Service at a time.
type Tunnel struct {
	client    kubernetes.Interface
	config    *rest.Config
	namespace string
	service   string
	port      int32 // the Service's port

	mu        sync.Mutex
	localPort int
	pod       string
	failed    map[string]bool // pods whose connection broke
	moves     int             // how often the tunnel moved to another pod
	stop      chan struct{}
	done      chan struct{}
	// OnMove, if set, is told when the tunnel moves and why.
	OnMove func(from, to string, why error)
}

// Open forwards a local port on 127.0.0.1 to the Service's port on a Ready
// pod and keeps it forwarded until ctx ends or Close.
func Open(ctx context.Context, client kubernetes.Interface, config *rest.Config, namespace, service string, port int32) (*Tunnel, error) {
	t := &Tunnel{client: client, config: config, namespace: namespace, service: service, port: port, failed: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	errc, err := t.forward(ctx)
	if err != nil {
		return nil, err
	}
	go t.supervise(ctx, errc)
	return t, nil
}

// URL is the local base URL, e.g. http://127.0.0.1:40123.
func (t *Tunnel) URL() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return fmt.Sprintf("http://127.0.0.1:%d", t.localPort)
}

// Pod is the pod currently forwarded to.
func (t *Tunnel) Pod() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pod
}

// Moves is how often the tunnel has moved to another pod: requests in
// flight across a move fail, and what they measured is not the server's.
func (t *Tunnel) Moves() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.moves
}

// Close stops forwarding.
func (t *Tunnel) Close() {
	select {
	case <-t.stop:
	default:
		close(t.stop)
	}
	<-t.done
}

// supervise restarts the forward on another Ready pod when it breaks.
func (t *Tunnel) supervise(ctx context.Context, errc <-chan error) {
	defer close(t.done)
	for {
		select {
		case <-t.stop:
			return
		case <-ctx.Done():
			return
		case err := <-errc:
			from := t.Pod()
			t.mu.Lock()
			t.failed[from] = true
			t.mu.Unlock()
			for {
				var ferr error
				errc, ferr = t.forward(ctx)
				if ferr == nil {
					t.mu.Lock()
					t.moves++
					t.mu.Unlock()
					if t.OnMove != nil {
						t.OnMove(from, t.Pod(), err)
					}
					break
				}
				select {
				case <-t.stop:
					return
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
			}
		}
	}
}

// forward chooses a pod and starts forwarding to it on the tunnel's local
// port (a free one the first time).
func (t *Tunnel) forward(ctx context.Context) (<-chan error, error) {
	svc, err := t.client.CoreV1().Services(t.namespace).Get(ctx, t.service, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("service %s/%s: %w", t.namespace, t.service, err)
	}
	pods, err := t.client.CoreV1().Pods(t.namespace).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(svc.Spec.Selector).String()})
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	pod, err := ChoosePod(pods.Items, t.failed)
	t.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("service %s/%s: %w", t.namespace, t.service, err)
	}
	remote, err := TargetPort(svc, t.port, pod)
	if err != nil {
		return nil, err
	}

	rt, upgrader, err := spdy.RoundTripperFor(t.config)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(t.config.Host)
	if err != nil {
		return nil, err
	}
	u.Path = fmt.Sprintf("%s/api/v1/namespaces/%s/pods/%s/portforward", u.Path, pod.Namespace, pod.Name)
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, u)

	t.mu.Lock()
	local := t.localPort
	t.mu.Unlock()
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("%d:%d", local, remote)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		return nil, err
	}
	errc := make(chan error, 1)
	ended := make(chan struct{})
	go func() {
		err := fw.ForwardPorts()
		close(ended)
		if err == nil {
			err = errors.New("port-forward ended")
		}
		errc <- err
	}()
	// Stop this forward when the tunnel stops.
	go func() {
		select {
		case <-t.stop:
		case <-ctx.Done():
		case <-ended:
		}
		close(stop)
	}()
	select {
	case <-ready:
	case err := <-errc:
		return nil, fmt.Errorf("port-forward to %s: %w", pod.Name, err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) == 0 {
		return nil, fmt.Errorf("port-forward to %s: no local port: %v", pod.Name, err)
	}
	t.mu.Lock()
	t.localPort, t.pod = int(ports[0].Local), pod.Name
	t.mu.Unlock()
	return errc, nil
}

// ChoosePod picks a Running, Ready pod that is not being deleted,
// preferring pods whose connection has not broken before; by name among
// equals, so the choice is stable.
func ChoosePod(pods []corev1.Pod, failed map[string]bool) (*corev1.Pod, error) {
	var fresh, retried []*corev1.Pod
	for i := range pods {
		p := &pods[i]
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || !kube.PodReady(p) {
			continue
		}
		if failed[p.Name] {
			retried = append(retried, p)
		} else {
			fresh = append(fresh, p)
		}
	}
	for _, set := range [][]*corev1.Pod{fresh, retried} {
		if len(set) > 0 {
			sort.Slice(set, func(i, j int) bool { return set[i].Name < set[j].Name })
			return set[0], nil
		}
	}
	return nil, fmt.Errorf("no Running and Ready pod among %d", len(pods))
}

// TargetPort resolves the Service port to the pod's container port (by
// number or by name), as kubectl port-forward service/... does.
func TargetPort(svc *corev1.Service, port int32, pod *corev1.Pod) (int, error) {
	for _, sp := range svc.Spec.Ports {
		if sp.Port != port {
			continue
		}
		tp := sp.TargetPort
		switch {
		case tp.Type == intstr.Int && tp.IntVal != 0:
			return int(tp.IntVal), nil
		case tp.Type == intstr.String && tp.StrVal != "":
			for _, c := range pod.Spec.Containers {
				for _, cp := range c.Ports {
					if cp.Name == tp.StrVal {
						return int(cp.ContainerPort), nil
					}
				}
			}
			return 0, fmt.Errorf("pod %s has no port named %q", pod.Name, tp.StrVal)
		default:
			return int(sp.Port), nil
		}
	}
	return 0, fmt.Errorf("service %s/%s has no port %d", svc.Namespace, svc.Name, port)
}
