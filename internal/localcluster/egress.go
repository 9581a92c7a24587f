package localcluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// egressProxy is kube-apiserver's way into the "cluster network", as
// Konnectivity is on GKE: kube-apiserver's egress selector sends every
// connection to a Service or node through it as an HTTP CONNECT on a Unix
// socket. It maps a Service's ClusterIP:port to a local listener registered
// with ServeService, passes loopback targets (the kubelet stand-in) through,
// and refuses everything else: nothing but loopback is ever dialed.
type egressProxy struct {
	cp       *ControlPlane
	socket   string
	listener net.Listener

	mu       sync.Mutex
	services map[string]string // "namespace/name:port" -> local host:port

	// Services and pods by IP, watched (see watch): kube-apiserver opens a
	// connection per aggregated request (each HPA sync, each APIService
	// check) and per proxied request, and resolving each by a LIST of pods
	// and of Services was 7,300 of the CLI suite's 42,500 requests.
	byIP struct {
		services, pods cache.Indexer
	}
}

// ipIndex indexes Services by ClusterIP and pods by IP.
const ipIndex = "ip"

// resolveTimeout bounds the LISTs resolve makes when the watch has not
// seen an address.
const resolveTimeout = 10 * time.Second

const egressConfig = `apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: %s
`

// startEgress listens on a socket in dir and returns kube-apiserver's flag.
func (cp *ControlPlane) startEgress() ([]string, error) {
	// Unix socket paths are limited to ~108 bytes; the temp dir is short.
	p := &egressProxy{cp: cp, socket: filepath.Join(cp.Dir, "egress.sock"), services: map[string]string{}}
	l, err := net.Listen("unix", p.socket)
	if err != nil {
		return nil, err
	}
	p.listener = l
	cp.egress = p
	go p.serve()
	cfgPath := filepath.Join(cp.Dir, "egress-selector.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(egressConfig, p.socket)), 0o600); err != nil {
		return nil, err
	}
	return []string{"--egress-selector-config-file", cfgPath}, nil
}

// ServeService routes connections for the Service namespace/name on port to
// the local address addr (host:port on loopback); namespace "*" matches any.
func (cp *ControlPlane) ServeService(namespace, name string, port int32, addr string) {
	cp.egress.mu.Lock()
	defer cp.egress.mu.Unlock()
	cp.egress.services[fmt.Sprintf("%s/%s:%d", namespace, name, port)] = addr
}

func (p *egressProxy) serve() {
	for {
		conn, err := p.listener.Accept()
		if err != nil {
			return
		}
		go p.handle(conn)
	}
}

func (p *egressProxy) handle(conn net.Conn) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	req, err := http.ReadRequest(br)
	if err != nil || req.Method != http.MethodConnect {
		io.WriteString(conn, "HTTP/1.1 400 Bad Request\r\n\r\n")
		return
	}
	// The target is in the request line; the Host header says 127.0.0.1.
	target := req.RequestURI
	local, ok := p.resolve(target)
	if !ok {
		io.WriteString(conn, "HTTP/1.1 403 Forbidden\r\n\r\n")
		return
	}
	up, err := net.Dial("tcp", local)
	if err != nil {
		io.WriteString(conn, "HTTP/1.1 503 Service Unavailable\r\n\r\n")
		return
	}
	defer up.Close()
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, br); done <- struct{}{} }()
	go func() { io.Copy(conn, up); done <- struct{}{} }()
	<-done
}

// watch keeps byIP up to date until ctx ends.
func (p *egressProxy) watch(ctx context.Context) {
	factory := informers.NewSharedInformerFactory(p.cp.Client, 0)
	services := factory.Core().V1().Services().Informer()
	pods := factory.Core().V1().Pods().Informer()
	services.AddIndexers(cache.Indexers{ipIndex: func(obj any) ([]string, error) {
		return []string{obj.(*corev1.Service).Spec.ClusterIP}, nil
	}})
	pods.AddIndexers(cache.Indexers{ipIndex: func(obj any) ([]string, error) {
		return []string{obj.(*corev1.Pod).Status.PodIP}, nil
	}})
	p.mu.Lock()
	p.byIP.services, p.byIP.pods = services.GetIndexer(), pods.GetIndexer()
	p.mu.Unlock()
	factory.Start(ctx.Done())
	go func() { <-ctx.Done(); factory.Shutdown() }()
}

// watched returns the objects of T the watch has seen at ip in idx, none
// when it has not (yet) seen any.
func watched[T any](idx cache.Indexer, ip string) []T {
	if idx == nil {
		return nil
	}
	objs, _ := idx.ByIndex(ipIndex, ip)
	var out []T
	for _, o := range objs {
		out = append(out, *o.(*T))
	}
	return out
}

// resolve maps a CONNECT target to a loopback address, or refuses it: a
// Service's ClusterIP to the listener ServeService registered, a pod's IP
// to the one PodAddress gives.
func (p *egressProxy) resolve(target string) (string, bool) {
	host, portText, err := net.SplitHostPort(target)
	if err != nil {
		return "", false
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return target, true // the kubelet stand-in
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return "", false
	}
	p.mu.Lock()
	serviceIndex, podIndex := p.byIP.services, p.byIP.pods // nil until watch starts
	p.mu.Unlock()
	if svcs := watched[corev1.Service](serviceIndex, host); len(svcs) > 0 {
		return p.serviceAddr(svcs, port)
	}
	if pods := watched[corev1.Pod](podIndex, host); len(pods) > 0 {
		return p.podAddr(pods, port)
	}
	// Not seen by the watch (yet): a LIST of each says, within a bound
	// (an API server that stops answering fails the connection, not the
	// proxy's goroutine forever).
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	if pods, err := p.cp.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "status.podIP=" + host}); err == nil && len(pods.Items) > 0 {
		return p.podAddr(pods.Items, port)
	}
	svcs, err := p.cp.Client.CoreV1().Services("").List(ctx, metav1.ListOptions{FieldSelector: "spec.clusterIP=" + host})
	if err != nil {
		return "", false
	}
	return p.serviceAddr(svcs.Items, port)
}

// serviceAddr is the listener ServeService registered for the Service of
// svcs that has port.
func (p *egressProxy) serviceAddr(svcs []corev1.Service, port int) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range svcs {
		for _, sp := range s.Spec.Ports {
			if int(sp.Port) == port {
				addr, ok := p.services[fmt.Sprintf("%s/%s:%d", s.Namespace, s.Name, sp.Port)]
				if !ok {
					addr, ok = p.services[fmt.Sprintf("*/%s:%d", s.Name, sp.Port)]
				}
				return addr, ok && isLoopbackAddr(addr)
			}
		}
	}
	return "", false
}

// podAddr is the loopback address PodAddress gives for the pod's port
// (kube-apiserver proxying to a pod), when one pod has the IP.
func (p *egressProxy) podAddr(pods []corev1.Pod, port int) (string, bool) {
	backend := p.cp.PodAddress
	if backend == nil || len(pods) != 1 {
		return "", false
	}
	addr, ok := backend(pods[0].Namespace, pods[0].Name, port)
	return addr, ok && isLoopbackAddr(addr)
}

func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	return err == nil && ip != nil && ip.IsLoopback()
}

// DiscoveryBackend is an HTTPS server that answers the aggregated
// discovery of the metrics APIs (enough for kube-apiserver to mark their
// APIServices Available); handler, if not nil, serves everything else.
func DiscoveryBackend(groupVersions []string, handler http.Handler) *httptest.Server {
	mux := http.NewServeMux()
	for _, gv := range groupVersions {
		list := map[string]any{"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": []any{}}
		body, _ := json.Marshal(list)
		mux.HandleFunc("/apis/"+gv, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		})
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	if handler != nil {
		mux.Handle("/", handler)
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.TLS = &tls.Config{NextProtos: []string{"http/1.1"}}
	if cert, err := loopbackCert(); err == nil {
		srv.TLS.Certificates = []tls.Certificate{cert}
	} // else httptest's own
	srv.StartTLS()
	return srv
}
