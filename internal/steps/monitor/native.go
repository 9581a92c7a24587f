package monitor

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/nativemetrics"
	"github.com/vllm-hpa/vllm-hpa/internal/objectstep"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// NativeCheck is the check of the AutoscalingMetric (native backend).
const NativeCheck = "autoscalingmetric serves the gauge"

// NativeFacts are what the native route's evidence rests on.
type NativeFacts struct {
	// Found: the AutoscalingMetric exists; Gauge is the gauge it declares
	// under the configured name (Declared false when it does not).
	Found    bool
	Declared bool
	Gauge    nativemetrics.Gauge
	// Conditions are the status conditions GKE reports, if any (GKE
	// documents none; any False one is shown).
	Conditions []map[string]any
	// Pods the selector matches; Scraped is the Ready pod whose /metrics
	// was read, ScrapedWith the gauge it serves, or ScrapeError.
	Selector    string
	Pods        []corev1.Pod
	Scraped     string
	ScrapedWith string
	ScrapeError error
}

// NativeEvidence judges whether GKE can serve the HPA's metric: the
// AutoscalingMetric declares the configured gauge for the Prometheus
// metric, no condition GKE reports is False, its selector matches a Ready
// pod, and that pod serves the Prometheus metric where the
// AutoscalingMetric says GKE reads it. What GKE then does (its scrape, the
// HPA's read) is shown by the HPA's ScalingActive/ValidMetricFound.
func NativeEvidence(cfg *config.Config, f NativeFacts) step.Result {
	r := step.Result{Step: Name, Check: NativeCheck}
	switch {
	case !f.Found:
		r.Reason, r.Message = "NotFound", fmt.Sprintf("AutoscalingMetric %s/%s does not exist (vllm-hpa monitor creates it)", cfg.Workload.Namespace, cfg.AutoscalingMetricName())
		return r
	case !f.Declared:
		r.Reason, r.Message = "GaugeNotDeclared", fmt.Sprintf("AutoscalingMetric %s does not declare gauge %s for %s (vllm-hpa monitor rewrites it)", cfg.AutoscalingMetricName(), f.Gauge.Name, f.Gauge.PrometheusName)
		return r
	}
	for _, c := range f.Conditions {
		if fmt.Sprint(c["status"]) == "False" {
			r.Reason = fmt.Sprint(c["reason"])
			if r.Reason == "" || r.Reason == "<nil>" {
				r.Reason = fmt.Sprint(c["type"])
			}
			r.Message = fmt.Sprintf("GKE reports %v False: %v", c["type"], c["message"])
			return r
		}
	}
	var ready []string
	for _, p := range f.Pods {
		if p.DeletionTimestamp == nil && kube.PodReady(&p) {
			ready = append(ready, p.Name)
		}
	}
	switch {
	case len(f.Pods) == 0:
		r.Reason, r.Message = "NoPods", fmt.Sprintf("the AutoscalingMetric's selector %s matches no pod in the namespace: does it match the vLLM pods' labels?", f.Selector)
	case len(ready) == 0:
		r.Reason, r.Message = "NoReadyPods", fmt.Sprintf("the AutoscalingMetric's selector %s matches no Ready pod", f.Selector)
	case f.ScrapeError != nil:
		r.Reason, r.Message = "MetricsUnreachable", fmt.Sprintf("pod %s's %s could not be read through the API server: %v", f.Scraped, f.Gauge.Path, f.ScrapeError)
	default:
		status := "GKE reports no status on it"
		if len(f.Conditions) > 0 {
			status = "no condition GKE reports is False"
		}
		r.OK, r.Reason = true, "PodsServeGauge"
		r.Message = fmt.Sprintf("gauge %s from %s on :%d%s; pod %s serves it through the API server; %s (the HPA's ScalingActive shows GKE reads it)",
			f.Gauge.Name, f.Gauge.PrometheusName, f.Gauge.Port, f.Gauge.Path, f.Scraped, status)
	}
	return r
}

// gatherNative reads the native route's facts.
func (s *Scraping) gatherNative(ctx context.Context, k *kube.Client) (NativeFacts, error) {
	var f NativeFacts
	u, err := k.Dynamic.Resource(nativemetrics.Resource).Namespace(s.cfg.Workload.Namespace).Get(ctx, s.cfg.AutoscalingMetricName(), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return f, nil
	case err != nil:
		return f, fmt.Errorf("read AutoscalingMetric %s: %w", s.cfg.AutoscalingMetricName(), err)
	}
	f.Found = true
	// Every gauge of the HPA's metrics, declared for its Prometheus
	// metric; Gauge is the first, or the first missing.
	var gauges []string
	for i, m := range s.cfg.ScaledMetrics() {
		g, ok := nativemetrics.Find(u, m.GaugeName)
		ok = ok && g.PrometheusName == m.Gauge
		if i == 0 || (f.Declared && !ok) {
			f.Gauge, f.Declared = g, ok
			if !ok { // the first missing is the one the check names
				f.Gauge.Name, f.Gauge.PrometheusName = m.GaugeName, m.Gauge
			}
		}
		gauges = append(gauges, m.Gauge)
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok {
			f.Conditions = append(f.Conditions, m)
		}
	}
	if !f.Declared {
		return f, nil
	}
	f.Selector = labels.SelectorFromSet(f.Gauge.Selector).String()
	pods, err := k.Typed.CoreV1().Pods(s.cfg.Workload.Namespace).List(ctx, metav1.ListOptions{LabelSelector: f.Selector})
	if err != nil {
		return f, err
	}
	f.Pods = pods.Items
	f.Scraped, f.ScrapedWith, f.ScrapeError = s.scrapeReadyPod(ctx, k, f.Pods, gauges)
	if f.ScrapeError == nil && f.Scraped != "" {
		// GKE reads each gauge: the pod must serve them all.
		var missing []string
		for _, g := range gauges {
			if !slices.Contains(strings.Split(f.ScrapedWith, ", "), g) {
				missing = append(missing, g)
			}
		}
		if len(missing) > 0 {
			f.ScrapeError = fmt.Errorf("%s answers without %s", s.cfg.Monitoring.Path, strings.Join(missing, ", "))
		}
	}
	return f, nil
}

// judgeNative is the native route's verdict; final when waiting cannot
// change it (GKE said False).
func (s *Scraping) judgeNative(ctx context.Context, k *kube.Client) (step.Result, bool, error) {
	f, err := s.gatherNative(ctx, k)
	if err != nil {
		return step.Result{}, false, objectstep.MissingAPI(err)
	}
	r := NativeEvidence(s.cfg, f)
	final := !r.OK && f.Found && f.Declared && r.Reason != "NoPods" && r.Reason != "NoReadyPods" && r.Reason != "MetricsUnreachable"
	return r, final, nil
}

// waitNative waits for the native route's evidence.
func (s *Scraping) waitNative(ctx context.Context) error {
	k, err := s.Kube()
	if err != nil {
		return err
	}
	return s.poll(ctx, "evidence that GKE can read the AutoscalingMetric's gauge", func(ctx context.Context) (step.Result, bool, error) {
		return s.judgeNative(ctx, k)
	})
}

// otherRoute are the step's objects the configured backend does not use
// (the AutoscalingMetric for the adapter; the PodMonitoring for native
// without monitoring.pod-monitoring): cleanup deletes them too, and up
// retires them once the HPA reads its metric from the new route.
func (s *Scraping) otherRoute() []*unstructured.Unstructured {
	all := *s.cfg
	all.HPA.Backend, all.Monitoring.PodMonitoring = config.BackendNative, true
	every, err := render.Objects(&all, Name, false)
	if err != nil {
		return nil
	}
	used, err := s.Objects()
	if err != nil {
		return nil
	}
	var out []*unstructured.Unstructured
	for _, o := range every {
		found := false
		for _, u := range used {
			if u.GetKind() == o.GetKind() && u.GetName() == o.GetName() {
				found = true
			}
		}
		if !found {
			out = append(out, o)
		}
	}
	return out
}

// ExtraDeletes: cleanup finds the other route's objects too.
func (s *Scraping) ExtraDeletes() []*unstructured.Unstructured { return s.otherRoute() }

// Retire deletes what this instance made for the other route (see
// otherRoute), by cleanup's rules; up calls it once the HPA reads its
// metric.
func (s *Scraping) Retire(ctx context.Context) error {
	k, err := s.Kube()
	if err != nil {
		return err
	}
	var objs []*unstructured.Unstructured
	for _, o := range s.otherRoute() {
		// An AutoscalingMetric can exist only where its API is served:
		// on other clusters up spends no request to find none.
		if o.GroupVersionKind().Group == nativemetrics.Resource.Group && !k.GroupServedCached(nativemetrics.Resource.Group) {
			continue
		}
		objs = append(objs, o)
	}
	if len(objs) == 0 {
		return nil
	}
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.GetKind())
	}
	return s.DeleteObjects(ctx, objs, "not used by hpa.backend "+s.cfg.HPA.Backend+": "+strings.Join(kinds, ", "))
}
