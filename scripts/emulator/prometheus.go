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

	// ingestion is how long a scraped sample takes to be queryable: Cloud
	// Monitoring's ingestion and the adapter's query, together.
	ingestion time.Duration

	mu      sync.Mutex
	samples map[string]map[string][]sample // metric -> namespace/pod -> samples, oldest first
	loops   map[string]context.CancelFunc  // PodMonitoring uid -> its scrape loop
	Scrapes int64
}

func newPrometheus(c kubernetes.Interface, d dynamic.Interface, sims *simulators, ingestion time.Duration) *prometheus {
	return &prometheus{client: c, dynamic: d, sims: sims, ingestion: ingestion, samples: map[string]map[string][]sample{}, loops: map[string]context.CancelFunc{}}
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
				if err := p.scrape(ctx, pod, path); err != nil {
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

func (p *prometheus) scrape(ctx context.Context, pod *corev1.Pod, path string) error {
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
		if p.samples[name] == nil {
			p.samples[name] = map[string][]sample{}
		}
		key := pod.Namespace + "/" + pod.Name
		// Keep the samples not queryable yet and the newest that is.
		kept := append(p.samples[name][key], sample{value: sum, at: now})
		for len(kept) > 1 && now.Sub(kept[1].at) >= p.ingestion {
			kept = kept[1:]
		}
		p.samples[name][key] = kept
	}
	return nil
}

// value is the pod's latest sample of the gauge within the adapter's
// five-minute alignment window.
func (p *prometheus) value(metric, namespace, pod string) (sample, bool) {
	return p.valueWithin(metric, namespace, pod, 5*time.Minute)
}

// valueWithin is the pod's latest queryable sample of the gauge no older
// than maxAge.
func (p *prometheus) valueWithin(metric, namespace, pod string, maxAge time.Duration) (sample, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	samples := p.samples[metric][namespace+"/"+pod]
	for i := len(samples) - 1; i >= 0; i-- {
		if s := samples[i]; time.Since(s.at) >= p.ingestion {
			return s, time.Since(s.at) <= maxAge
		}
	}
	return sample{}, false
}

// known reports whether any sample of the gauge is queryable.
func (p *prometheus) known(metric string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, samples := range p.samples[metric] {
		if len(samples) > 0 && time.Since(samples[0].at) >= p.ingestion {
			return true
		}
	}
	return false
}
