package main

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/vllm-hpa/vllm-hpa/internal/localcluster"
	"github.com/vllm-hpa/vllm-hpa/internal/nativemetrics"
)

// gkeNative stands in for GKE's native custom metrics: for every gauge an
// AutoscalingMetric declares it scrapes the selected Running pods at the
// given port and path every interval (its own samples: a PodMonitoring
// plays no part), and answers the HPA controller's reads of
// autoscaling.gke.io|NAME|GAUGE per pod, 404 for a gauge nothing declares
// or that has no samples yet. The control plane routes the HPA
// controller's reads here (localcluster.Options.NativeMetrics).
type gkeNative struct {
	// store is the scraping and the samples, apart from Managed
	// Prometheus'; set once the cluster's clients exist.
	store    atomic.Pointer[prometheus]
	interval time.Duration
}

func (n *gkeNative) run(ctx context.Context) {
	for {
		n.scrapeAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(n.interval):
		}
	}
}

func (n *gkeNative) scrapeAll(ctx context.Context) {
	store := n.store.Load()
	list, err := store.dynamic.Resource(nativemetrics.Resource).Namespace("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return
	}
	for i := range list.Items {
		am := &list.Items[i]
		for _, name := range nativemetrics.Gauges(am) {
			g, _ := nativemetrics.Find(am, name)
			pods, err := store.client.CoreV1().Pods(am.GetNamespace()).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(g.Selector).String()})
			if err != nil {
				continue
			}
			for j := range pods.Items {
				pod := &pods.Items[j]
				if pod.Status.Phase == corev1.PodRunning && pod.DeletionTimestamp == nil && servesPort(pod, g.Port) {
					_ = store.scrape(ctx, pod, g.Path, nil)
				}
			}
		}
	}
}

// ServeHTTP answers /apis/custom.metrics.k8s.io/VERSION/namespaces/NS/pods/NAME/METRIC.
func (n *gkeNative) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/apis/custom.metrics.k8s.io/"), "/")
	if len(parts) != 6 || parts[1] != "namespaces" || parts[3] != "pods" {
		http.NotFound(w, r)
		return
	}
	store := n.store.Load()
	if store == nil { // not started yet
		http.Error(w, "native metrics not started", http.StatusServiceUnavailable)
		return
	}
	version, ns, podName, metric := parts[0], parts[2], parts[4], parts[5]

	amName, gauge, ok := nativemetrics.ParseMetricName(metric)
	if !ok {
		localcluster.MetricNotFound(w, "not a native metric: "+metric)
		return
	}
	am, err := store.dynamic.Resource(nativemetrics.Resource).Namespace(ns).Get(r.Context(), amName, metav1.GetOptions{})
	if err != nil {
		localcluster.MetricNotFound(w, "no AutoscalingMetric "+ns+"/"+amName)
		return
	}
	g, ok := nativemetrics.Find(am, gauge)
	if !ok {
		localcluster.MetricNotFound(w, "AutoscalingMetric "+ns+"/"+amName+" declares no gauge "+gauge)
		return
	}
	pods, err := store.client.CoreV1().Pods(ns).List(r.Context(), metav1.ListOptions{LabelSelector: r.URL.Query().Get("labelSelector")})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	var items []any
	for _, p := range pods.Items {
		if podName != "*" && p.Name != podName {
			continue
		}
		// Samples older than a few scrapes are gone, as GKE keeps
		// none once it stops reading a pod.
		s, ok := store.valueWithin(g.PrometheusName, ns, p.Name, 3*n.interval)
		if !ok {
			continue
		}
		items = append(items, localcluster.MetricValue(ns, p.Name, metric, quantity(s.value), s.at))
	}
	if len(items) == 0 {
		localcluster.MetricNotFound(w, "no samples of "+metric+" yet")
		return
	}
	localcluster.WriteMetricValues(w, version, items)
}

// quantity writes a sample as the metrics API does (milli-units).
func quantity(v float64) string {
	return resource.NewMilliQuantity(int64(v*1000), resource.DecimalSI).String()
}

// servesPort reports whether a container of the pod declares port: an
// AutoscalingMetric naming another port reads nothing.
func servesPort(pod *corev1.Pod, port int64) bool {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if int64(p.ContainerPort) == port {
				return true
			}
		}
	}
	return false
}
