package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	dto "github.com/prometheus/client_model/go"

	"github.com/vllm-hpa/vllm-hpa/internal/gcpfake"
	"github.com/vllm-hpa/vllm-hpa/internal/gmp"
	"github.com/vllm-hpa/vllm-hpa/internal/promtext"
)

// sample is the latest scraped value of one gauge of one pod.
type sample struct {
	value float64
	at    time.Time
}

// prometheus stands in for Managed Service for Prometheus' collectors: for
// every PodMonitoring it scrapes the matching Running pods at the
// PodMonitoring's own interval and keeps the gauges by pod, as Cloud
// Monitoring stores prometheus_target series with the pod label. (Status is
// written by the operator stand-in.)
type prometheus struct {
	client  kubernetes.Interface
	dynamic dynamic.Interface
	sims    *simulators
	// sink, when set, is Cloud Monitoring: every scraped gauge series is
	// written there as Managed Service for Prometheus writes it, for the
	// project, location and cluster of target.
	sink   *gcpfake.Monitoring
	target monitoredCluster

	mu      sync.Mutex
	samples map[string]sample             // metric|namespace/pod -> its newest sample
	loops   map[string]context.CancelFunc // PodMonitoring uid -> its scrape loop
	Scrapes int64
}

// monitoredCluster is where Managed Prometheus's series say they come from.
type monitoredCluster struct{ project, location, cluster string }

func newPrometheus(c kubernetes.Interface, d dynamic.Interface, sims *simulators) *prometheus {
	return &prometheus{client: c, dynamic: d, sims: sims, samples: map[string]sample{}, loops: map[string]context.CancelFunc{}}
}

// run keeps one scrape loop per PodMonitoring generation, re-listing every
// few seconds (PodMonitorings change rarely).
func (p *prometheus) run(ctx context.Context) {
	seen := map[string]bool{}
	for {
		list, err := p.dynamic.Resource(gmp.Resource).Namespace("").List(ctx, metav1.ListOptions{})
		if err == nil {
			now := map[string]bool{}
			for i := range list.Items {
				u := &list.Items[i]
				key := fmt.Sprintf("%s/%d", u.GetUID(), u.GetGeneration())
				now[key] = true
				if !seen[key] {
					var pm gmp.PodMonitoring
					if runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &pm) == nil {
						lctx, cancel := context.WithCancel(ctx)
						p.mu.Lock()
						p.loops[key] = cancel
						p.mu.Unlock()
						go p.scrapeLoop(lctx, &pm)
					}
				}
			}
			for key := range seen {
				if !now[key] {
					p.mu.Lock()
					if cancel := p.loops[key]; cancel != nil {
						cancel()
						delete(p.loops, key)
					}
					p.mu.Unlock()
				}
			}
			seen = now
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

func (p *prometheus) scrapeLoop(ctx context.Context, pm *gmp.PodMonitoring) {
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil || len(pm.Spec.Endpoints) == 0 {
		return
	}
	ep := pm.Spec.Endpoints[0]
	interval, err := time.ParseDuration(ep.Interval)
	if err != nil || interval <= 0 {
		interval = 15 * time.Second
	}
	path := ep.Path
	if path == "" {
		path = "/metrics"
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		pods, err := p.client.CoreV1().Pods(pm.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
		if err == nil {
			var active, unhealthy int64
			var lastErr string
			for i := range pods.Items {
				pod := &pods.Items[i]
				if pod.Status.Phase != corev1.PodRunning || pod.DeletionTimestamp != nil {
					continue
				}
				active++
				if err := p.scrape(ctx, pod, path, pm); err != nil {
					unhealthy++
					lastErr = err.Error()
				}
			}
			p.targetStatus(ctx, pm, fmt.Sprintf("PodMonitoring/%s/%s/%s", pm.Namespace, pm.Name, ep.Port.String()), active, unhealthy, lastErr)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// targetStatus writes status.endpointStatuses as Managed Prometheus does:
// only when the OperatorConfig gmp-public/config enables
// features.targetStatus (none at all otherwise), [] when the selector
// matched no target, and an entry only for real targets.
func (p *prometheus) targetStatus(ctx context.Context, pm *gmp.PodMonitoring, name string, active, unhealthy int64, lastErr string) {
	res := p.dynamic.Resource(gmp.Resource).Namespace(pm.Namespace)
	u, err := res.Get(ctx, pm.Name, metav1.GetOptions{})
	if err != nil || u.GetUID() != pm.UID {
		return
	}
	oc, err := p.dynamic.Resource(gmp.OperatorConfigResource).Namespace(gmp.OperatorConfigNamespace).Get(ctx, gmp.OperatorConfigName, metav1.GetOptions{})
	on := err == nil && gmp.TargetStatusEnabled(oc.Object)
	old, had, _ := unstructured.NestedSlice(u.Object, "status", "endpointStatuses")
	var want []any
	switch {
	case !on && !had:
		return
	case !on:
		unstructured.RemoveNestedField(u.Object, "status", "endpointStatuses")
	case active == 0:
		if had && len(old) == 0 {
			return
		}
		want = []any{}
	default:
		status := map[string]any{"name": name, "activeTargets": active, "unhealthyTargets": unhealthy, "lastUpdateTime": time.Now().UTC().Format(time.RFC3339)}
		if lastErr != "" {
			status["sampleGroups"] = []any{map[string]any{"count": unhealthy, "sampleTargets": []any{map[string]any{"lastError": lastErr, "health": "down"}}}}
		}
		if len(old) == 1 {
			o, _ := old[0].(map[string]any)
			if fmt.Sprint(o["activeTargets"]) == fmt.Sprint(active) && fmt.Sprint(o["unhealthyTargets"]) == fmt.Sprint(unhealthy) {
				return // unchanged
			}
		}
		want = []any{status}
	}
	if on {
		_ = unstructured.SetNestedSlice(u.Object, want, "status", "endpointStatuses")
	}
	res.UpdateStatus(ctx, u, metav1.UpdateOptions{})
}

func (p *prometheus) scrape(ctx context.Context, pod *corev1.Pod, path string, pm *gmp.PodMonitoring) error {
	addr, err := p.sims.addr(pod.Namespace, pod.Name)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("server returned HTTP status %s", resp.Status)
	}
	fams, err := promtext.Families(resp.Body)
	if err != nil {
		return err
	}
	now := time.Now()
	if p.sink != nil && pm != nil {
		p.export(pod, pm, fams, now)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.Scrapes++
	for name, f := range fams {
		if !strings.HasPrefix(name, "vllm:") || len(f.GetMetric()) == 0 || f.GetMetric()[0].GetGauge() == nil {
			continue
		}
		sum := 0.0
		for _, m := range f.GetMetric() {
			sum += m.GetGauge().GetValue()
		}
		p.samples[name+"|"+pod.Namespace+"/"+pod.Name] = sample{value: sum, at: now}
	}
	return nil
}

// defaultTargetLabels are the pod metadata a PodMonitoring adds to its
// series unless it says otherwise.
var defaultTargetLabels = []string{"container", "pod", "top_level_controller_name", "top_level_controller_type"}

// export writes each vLLM gauge series of a scrape to Cloud Monitoring as
// Managed Service for Prometheus does: metric type
// prometheus.googleapis.com/NAME/gauge, monitored resource
// prometheus_target (project, location, cluster, namespace, job: the
// PodMonitoring, instance: pod:port), the series' own labels and the
// PodMonitoring's target labels (pod among them by default) as metric
// labels.
func (p *prometheus) export(pod *corev1.Pod, pm *gmp.PodMonitoring, fams map[string]*dto.MetricFamily, at time.Time) {
	port := ""
	if len(pm.Spec.Endpoints) > 0 {
		port = pm.Spec.Endpoints[0].Port.String()
	}
	resource := map[string]string{
		"project_id": p.target.project, "location": p.target.location, "cluster": p.target.cluster,
		"namespace": pod.Namespace, "job": pm.Name, "instance": pod.Name + ":" + port,
	}
	targets := pm.Spec.TargetLabels.Metadata
	if targets == nil {
		targets = defaultTargetLabels
	}
	meta := map[string]string{"pod": pod.Name, "node": pod.Spec.NodeName, "top_level_controller_type": "Deployment"}
	if len(pod.Spec.Containers) > 0 {
		meta["container"] = pod.Spec.Containers[0].Name
	}
	if len(pod.OwnerReferences) > 0 {
		// The ReplicaSet's Deployment: its name less the template hash.
		rs := pod.OwnerReferences[0].Name
		meta["top_level_controller_name"] = rs[:max(strings.LastIndex(rs, "-"), 0)]
	}
	for name, f := range fams {
		if !strings.HasPrefix(name, "vllm:") || f.GetType() != dto.MetricType_GAUGE {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for _, t := range targets {
				labels[t] = meta[t]
			}
			p.sink.Write(p.target.project, "prometheus.googleapis.com/"+name+"/gauge", resource, labels, m.GetGauge().GetValue(), at)
		}
	}
}

// valueWithin is the pod's latest sample of the gauge no older than
// maxAge.
func (p *prometheus) valueWithin(metric, namespace, pod string, maxAge time.Duration) (sample, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.samples[metric+"|"+namespace+"/"+pod]
	return s, ok && time.Since(s.at) <= maxAge
}
