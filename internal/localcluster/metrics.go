package localcluster

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// MetricsGroupVersions are the APIs the Stackdriver adapter serves.
var MetricsGroupVersions = []string{"custom.metrics.k8s.io/v1beta1", "custom.metrics.k8s.io/v1beta2", "external.metrics.k8s.io/v1beta1"}

// FakeMetrics answers the custom metrics API's per-pod queries
// (v1beta2, which the HPA controller prefers) with a settable value, the way
// the Stackdriver adapter answers from Cloud Monitoring: 404 for a metric it
// has no samples for.
type FakeMetrics struct {
	Client kubernetes.Interface

	mu     sync.Mutex
	values map[string]string // metric -> value for every pod
	funcs  map[string]func(pods int) string
}

// SetFunc makes metric read f(number of pods asked about) for every pod,
// e.g. a server's requests in flight shared among its pods.
func (f *FakeMetrics) SetFunc(metric string, fn func(pods int) string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.funcs == nil {
		f.funcs = map[string]func(int) string{}
	}
	f.funcs[metric] = fn
}

// Set makes metric read value (a quantity, e.g. "3") for every pod, in
// place of any function SetFunc gave it (a testbed passes from test to
// test: the last Set or SetFunc decides).
func (f *FakeMetrics) Set(metric, value string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.values == nil {
		f.values = map[string]string{}
	}
	f.values[metric] = value
	delete(f.funcs, metric)
}

// Delete makes metric unknown (404, as for a metric with no samples).
func (f *FakeMetrics) Delete(metric string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.values, metric)
	delete(f.funcs, metric)
}

// Server starts the HTTPS backend.
func (f *FakeMetrics) Server() *httptest.Server {
	return DiscoveryBackend(MetricsGroupVersions, http.HandlerFunc(f.serve))
}

// serve handles /apis/custom.metrics.k8s.io/v1beta2/namespaces/NS/pods/NAME/METRIC.
func (f *FakeMetrics) serve(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/apis/custom.metrics.k8s.io/v1beta2/"), "/")
	if len(parts) != 5 || parts[0] != "namespaces" || parts[2] != "pods" {
		http.NotFound(w, r)
		return
	}
	ns, podName, metric := parts[1], parts[3], parts[4]
	f.mu.Lock()
	value, ok := f.values[metric]
	fn := f.funcs[metric]
	f.mu.Unlock()
	ok = ok || fn != nil
	if !ok {
		MetricNotFound(w, "Cannot find metric(s) for pods "+metric)
		return
	}
	pods, err := f.Client.CoreV1().Pods(ns).List(r.Context(), metav1.ListOptions{LabelSelector: r.URL.Query().Get("labelSelector")})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var items []any
	now := time.Now()
	if fn != nil {
		value = fn(len(pods.Items))
	}
	for _, p := range pods.Items {
		if podName != "*" && p.Name != podName {
			continue
		}
		items = append(items, MetricValue(ns, p.Name, metric, value, now))
	}
	WriteMetricValues(w, "v1beta2", items)
}

// MetricNotFound answers as a custom metrics API server does for a metric
// it has no value of (the HPA's FailedGetPodsMetric).
func MetricNotFound(w http.ResponseWriter, message string) {
	writeJSON(w, http.StatusNotFound, map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure",
		"message": message, "reason": "NotFound", "code": 404})
}

// MetricValue is one pod's value (a quantity) of metric at a time, as a
// MetricValueList lists it.
func MetricValue(namespace, pod, metric, value string, at time.Time) map[string]any {
	return map[string]any{
		"describedObject": map[string]any{"kind": "Pod", "namespace": namespace, "name": pod, "apiVersion": "/v1"},
		"metric":          map[string]any{"name": metric},
		"timestamp":       at.UTC().Format(time.RFC3339),
		"value":           value,
	}
}

// WriteMetricValues answers a custom.metrics.k8s.io/version MetricValueList.
func WriteMetricValues(w http.ResponseWriter, version string, items []any) {
	writeJSON(w, http.StatusOK, map[string]any{"kind": "MetricValueList", "apiVersion": "custom.metrics.k8s.io/" + version, "metadata": map[string]any{}, "items": items})
}
