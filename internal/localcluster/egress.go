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

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
}

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

// resolve maps a CONNECT target to a loopback address, or refuses it.
func (p *egressProxy) resolve(target string) (string, bool) {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return "", false
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return target, true // the kubelet stand-in
	}
	if addr, ok := p.resolvePod(host, port); ok {
		return addr, true
	}
	svcs, err := p.cp.Client.CoreV1().Services("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return "", false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range svcs.Items {
		if s.Spec.ClusterIP != host {
			continue
		}
		for _, sp := range s.Spec.Ports {
			if fmt.Sprint(sp.Port) == port {
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

// resolvePod maps a pod's IP and port (kube-apiserver proxying to a pod)
// to the loopback address PodBackend gives for it.
func (p *egressProxy) resolvePod(ip, port string) (string, bool) {
	backend := p.cp.PodAddress
	n, err := strconv.Atoi(port)
	if backend == nil || err != nil {
		return "", false
	}
	pods, err := p.cp.Client.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{FieldSelector: "status.podIP=" + ip})
	if err != nil || len(pods.Items) != 1 {
		return "", false
	}
	addr, ok := backend(pods.Items[0].Namespace, pods.Items[0].Name, n)
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
	srv.StartTLS()
	return srv
}
