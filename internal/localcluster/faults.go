package localcluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"sync/atomic"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// FaultProxy sits between a client and kube-apiserver and breaks a share
// of requests the way a flaky control plane or network does: 500, 429 (with
// Retry-After), or a connection reset; and it closes watches at random.
// At rate 0 it breaks nothing and only counts.
type FaultProxy struct {
	Kubeconfig string // a kubeconfig that goes through the proxy
	// Counts of what passed and what was injected.
	Requests, Mutating, Errors500, Errors429, Resets, WatchesClosed atomic.Int64

	rate   float64
	server *http.Server
}

// StartFaultProxy starts a proxy that breaks rate (0-1) of requests.
func (cp *ControlPlane) StartFaultProxy(rate float64) (*FaultProxy, error) {
	target, _ := url.Parse(cp.URL)
	backend := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool(cp.pki.caPEM)}}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = backend
	// The proxy's clients present a placeholder token: the proxy is the
	// admin.
	direct := rp.Director
	rp.Director = func(r *http.Request) {
		direct(r)
		r.Header.Set("Authorization", "Bearer "+cp.pki.adminToken)
	}
	rp.FlushInterval = -1 // stream watches
	rp.ErrorLog = log.New(io.Discard, "", 0)
	f := &FaultProxy{rate: rate}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.Requests.Add(1)
		if r.Method != http.MethodGet {
			f.Mutating.Add(1)
		}
		if f.rate > 0 && r.URL.Query().Get("watch") == "true" {
			// Let the watch run for a random while, then close it. (At rate
			// 0 the proxy only counts: benchmarks must see the requests a
			// client makes on a healthy server.)
			ctx, cancel := context.WithTimeout(r.Context(), time.Duration(200+rand.IntN(3000))*time.Millisecond)
			defer cancel()
			rp.ServeHTTP(w, r.WithContext(ctx))
			f.WatchesClosed.Add(1)
			return
		}
		if rand.Float64() < f.rate {
			switch rand.IntN(3) {
			case 0:
				f.Errors500.Add(1)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusInternalServerError)
				w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"injected fault","reason":"InternalError","code":500}`))
			case 1:
				f.Errors429.Add(1)
				w.Header().Set("Retry-After", "1")
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusTooManyRequests)
				w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"injected throttling","reason":"TooManyRequests","code":429}`))
			default:
				f.Resets.Add(1)
				if hj, ok := w.(http.Hijacker); ok {
					if conn, _, err := hj.Hijack(); err == nil {
						if tc, ok := conn.(*tls.Conn); ok {
							if nc, ok := tc.NetConn().(*net.TCPConn); ok {
								nc.SetLinger(0) // RST, not FIN
							}
						}
						conn.Close()
						return
					}
				}
				panic(http.ErrAbortHandler)
			}
			return
		}
		rp.ServeHTTP(w, r)
	})
	certPEM, keyPEM, err := cp.pki.cluster.issue("fault-proxy", nil, []net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"})
	if err != nil {
		return nil, err
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{mustPair(certPEM, keyPEM)}, NextProtos: []string{"http/1.1"}})
	if err != nil {
		return nil, err
	}
	f.server = &http.Server{Handler: handler, ErrorLog: nil}
	go f.server.Serve(l)

	kc := clientcmdapi.NewConfig()
	kc.Clusters["faulty"] = &clientcmdapi.Cluster{Server: "https://" + l.Addr().String(), CertificateAuthorityData: cp.pki.caPEM}
	// The proxy presents its own credentials upstream; a token here keeps
	// kubectl from prompting for a user name.
	kc.AuthInfos["anyone"] = &clientcmdapi.AuthInfo{Token: "proxied"}
	kc.Contexts["faulty"] = &clientcmdapi.Context{Cluster: "faulty", AuthInfo: "anyone"}
	kc.CurrentContext = "faulty"
	f.Kubeconfig = filepath.Join(cp.Dir, "faulty-kubeconfig-"+l.Addr().(*net.TCPAddr).AddrPort().String())
	return f, clientcmd.WriteToFile(*kc, f.Kubeconfig)
}

// Close stops the proxy.
func (f *FaultProxy) Close() { f.server.Close() }

func pool(caPEM []byte) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(caPEM)
	return p
}

func mustPair(certPEM, keyPEM []byte) tls.Certificate {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		panic(err)
	}
	return c
}
