package localcluster

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/vllm-hpa/vllm-hpa/internal/nativemetrics"
)

// GKE's HPA controller reads native custom metrics (autoscaling.gke.io|...)
// from GKE itself, whatever custom metrics APIService the cluster has (the
// Stackdriver adapter's, or none). The stock kube-controller-manager reads
// every custom metric through custom.metrics.k8s.io, so here it reaches the
// API server through a front that does what GKE does: reads of a native
// metric go to the native source, every other request to the API server,
// and, when no APIService serves custom.metrics.k8s.io, discovery still
// lists the group (with no resources), so that the HPA controller asks for
// native metrics at all. Users' clients talk to the API server directly
// and see none of this, as on GKE.

const customMetricsGroup = "custom.metrics.k8s.io"

// startNativeFront serves the front on loopback and writes a kubeconfig
// for kube-controller-manager that reaches the API server through it.
func (cp *ControlPlane) startNativeFront(native http.Handler) (string, error) {
	upstream, err := url.Parse(cp.URL)
	if err != nil {
		return "", err
	}
	transport, err := rest.TransportFor(cp.Config)
	if err != nil {
		return "", err
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(upstream)
			r.Out.Host = upstream.Host
		},
		Transport:     transport,
		FlushInterval: -1, // watches stream
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: &nativeFront{proxy: proxy, native: native}}
	go srv.Serve(l)
	cp.stops = append(cp.stops, func() { srv.Close() })

	kc := clientcmdapi.NewConfig()
	kc.Clusters["front"] = &clientcmdapi.Cluster{Server: "http://" + l.Addr().String()}
	kc.AuthInfos["front"] = &clientcmdapi.AuthInfo{}
	kc.Contexts["front"] = &clientcmdapi.Context{Cluster: "front", AuthInfo: "front"}
	kc.CurrentContext = "front"
	path := filepath.Join(cp.Dir, "kubeconfig-controller-manager")
	return path, clientcmd.WriteToFile(*kc, path)
}

type nativeFront struct {
	proxy  *httputil.ReverseProxy
	native http.Handler
}

func (f *nativeFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/apis/"+customMetricsGroup+"/") && strings.Contains(p[strings.LastIndex(p, "/")+1:], nativemetrics.MetricPrefix):
		f.native.ServeHTTP(w, r)
	case r.Method == http.MethodGet && p == "/apis":
		f.groups(w, r)
	case r.Method == http.MethodGet && (p == "/apis/"+customMetricsGroup+"/v1beta2" || p == "/apis/"+customMetricsGroup+"/v1beta1"):
		f.resources(w, r, strings.TrimPrefix(p, "/apis/"))
	default:
		f.proxy.ServeHTTP(w, r)
	}
}

// upstream asks the API server for path as plain (not aggregated)
// discovery.
func (f *nativeFront) upstream(r *http.Request) *recorder {
	out := r.Clone(r.Context())
	out.Header.Set("Accept", "application/json")
	out.Header.Del("Accept-Encoding")
	rec := newRecorder()
	f.proxy.ServeHTTP(rec, out)
	return rec
}

// groups is /apis with custom.metrics.k8s.io listed.
func (f *nativeFront) groups(w http.ResponseWriter, r *http.Request) {
	rec := f.upstream(r)
	var list metav1.APIGroupList
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &list) != nil {
		copyResponse(w, rec)
		return
	}
	for _, g := range list.Groups {
		if g.Name == customMetricsGroup {
			copyResponse(w, rec)
			return
		}
	}
	v2 := metav1.GroupVersionForDiscovery{GroupVersion: customMetricsGroup + "/v1beta2", Version: "v1beta2"}
	v1 := metav1.GroupVersionForDiscovery{GroupVersion: customMetricsGroup + "/v1beta1", Version: "v1beta1"}
	list.Groups = append(list.Groups, metav1.APIGroup{Name: customMetricsGroup, Versions: []metav1.GroupVersionForDiscovery{v2, v1}, PreferredVersion: v2})
	list.Kind, list.APIVersion = "APIGroupList", "v1"
	writeJSON(w, http.StatusOK, list)
}

// resources is a custom metrics group version's resource list: the
// adapter's answer when one is registered, else (404) an empty one
// (native metrics are not listed, as the adapter lists none).
func (f *nativeFront) resources(w http.ResponseWriter, r *http.Request, gv string) {
	rec := f.upstream(r)
	if rec.Code != http.StatusNotFound {
		// The adapter's answer, or its failure (a registered but
		// unavailable APIService is a 503 the controllers must see).
		copyResponse(w, rec)
		return
	}
	writeJSON(w, http.StatusOK, metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv, APIResources: []metav1.APIResource{}})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	w.Write(b)
}

// NativeMetricsFromFake is the native source of the tests: a native
// metric has values (those FakeMetrics holds under its full name) only
// while an AutoscalingMetric of the namespace declares its gauge; 404
// otherwise, as GKE answers for a metric nothing declares.
func NativeMetricsFromFake(f *FakeMetrics, dyn dynamic.Interface) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/apis/"+customMetricsGroup+"/"), "/")
		if len(parts) != 6 || parts[1] != "namespaces" || parts[3] != "pods" {
			http.NotFound(w, r)
			return
		}
		ns, metric := parts[2], parts[5]
		am, gauge, ok := nativemetrics.ParseMetricName(metric)
		declared := false
		if ok {
			if u, err := dyn.Resource(nativemetrics.Resource).Namespace(ns).Get(r.Context(), am, metav1.GetOptions{}); err == nil {
				_, declared = nativemetrics.Find(u, gauge)
			}
		}
		if !declared {
			MetricNotFound(w, "no AutoscalingMetric in "+ns+" declares "+metric)
			return
		}
		// FakeMetrics serves the v1beta2 shape of the path.
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/apis/" + customMetricsGroup + "/v1beta2/" + strings.Join(parts[1:], "/")
		f.serve(w, r2)
	})
}

// recorder is a minimal http.ResponseWriter that keeps the answer.
type recorder struct {
	Code   int
	header http.Header
	Body   bytes.Buffer
}

func newRecorder() *recorder { return &recorder{Code: http.StatusOK, header: http.Header{}} }

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.Body.Write(b) }
func (r *recorder) WriteHeader(code int)        { r.Code = code }

func copyResponse(w http.ResponseWriter, rec *recorder) {
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	io.Copy(w, &rec.Body)
}
