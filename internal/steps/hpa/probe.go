package hpa

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/adapter"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/identity"
)

// Probe is verify's "custom-metric" section: the HPA's metric as the HPA
// controller reads it, checked right after the adapter (on the native
// route, where the adapter's slot is "not used", from the HPA's own
// status). When the adapter serves no value, identity's evidence names
// the cause.
func (Definition) Probe() step.Probe {
	return step.Probe{Name: "custom-metric", After: adapter.Name, Check: func(ctx context.Context, env step.ProbeEnv) []step.Result {
		cfg, k := env.Config, env.Deps.Kube
		if cfg.Native() {
			return []step.Result{NativeMetric(ctx, k, cfg)}
		}
		explain := func(ctx context.Context, gauge string, served []string) identity.Diagnosis {
			return identity.Explain(ctx, cfg, env.Deps, gauge, served)
		}
		return []step.Result{CustomMetric(ctx, k, cfg, explain)}
	}}
}

// metricValueList is the custom metrics API's answer.
type metricValueList struct {
	Items []struct {
		DescribedObject struct {
			Name string `json:"name"`
		} `json:"describedObject"`
		Value string `json:"value"`
	} `json:"items"`
}

// NativeMetric is the native route's metric as the HPA reads it: GKE
// serves it to its HPA controller, not through custom.metrics.k8s.io, so
// the HPA's own status is where it shows (currentMetrics, and the
// ScalingActive condition when it cannot be read).
func NativeMetric(ctx context.Context, k *kube.Client, cfg *config.Config) step.Result {
	r := step.Result{Step: "custom-metric", Check: "metric read by the HPA"}
	h, err := k.Typed.AutoscalingV2().HorizontalPodAutoscalers(cfg.Workload.Namespace).Get(ctx, cfg.HPA.Name, metav1.GetOptions{})
	if err != nil {
		r.Reason, r.Message = "HPAUnreadable", err.Error()
		return r
	}
	var read []string
	for _, m := range cfg.ScaledMetrics() {
		ok, reason, message, current := Status(h, m.HPAName)
		switch {
		case current != "":
			read = append(read, fmt.Sprintf("the HPA reads %s: current average %s per pod", m.HPAName, current))
			continue
		case ok:
			r.Reason, r.Message = "NoCurrentValue", fmt.Sprintf("the HPA is active but shows no current value of %s yet", m.HPAName)
		default:
			r.Reason, r.Message = reason, fmt.Sprintf("the HPA cannot read %s: %s", m.HPAName, message)
		}
		return r
	}
	r.OK, r.Reason, r.Message = true, "Read", strings.Join(read, "; ")
	return r
}

// Explainer says why the adapter does not serve a gauge's metric, from
// vllm-hpa's own evidence (identity.Explain).
type Explainer func(ctx context.Context, gauge string, served []string) identity.Diagnosis

// CustomMetric reads the HPA's metric through custom.metrics.k8s.io, as the
// HPA controller does, and checks that every Ready pod of the Deployment has
// a value; when one has none, explain names the cause (the adapter's 404
// has many).
func CustomMetric(ctx context.Context, k *kube.Client, cfg *config.Config, explain Explainer) step.Result {
	var values []string
	metrics := cfg.ScaledMetrics()
	for _, m := range metrics {
		r, served := customMetric(ctx, k, cfg, config.AdapterMetricName(m.Gauge))
		if !r.OK && (r.Reason == "MetricNotFound" || r.Reason == "PodsWithoutValue") && explain != nil {
			d := explain(ctx, m.Gauge, served)
			r.Reason, r.Message = d.Reason, r.Message+": "+d.Message
		}
		if !r.OK {
			return r
		}
		if len(metrics) > 1 {
			r.Message = m.Key + ": " + r.Message
		}
		values = append(values, r.Message)
	}
	return step.Result{Step: "custom-metric", Check: "metric readable for every pod", OK: true, Message: strings.Join(values, "; ")}
}

// customMetric is CustomMetric's check of one metric, and the pods the
// adapter served a value for.
func customMetric(ctx context.Context, k *kube.Client, cfg *config.Config, metric string) (r step.Result, served []string) {
	r = step.Result{Step: "custom-metric", Check: "metric readable for every pod"}
	sel := labels.Set{"app": cfg.Workload.AppLabel}.String()
	pods, err := k.Typed.CoreV1().Pods(cfg.Workload.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		r.Reason, r.Message = "ListPods", err.Error()
		return r, nil
	}
	// client-go escapes the '|' of the metric name in the path.
	path := fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/pods/*/%s", cfg.Workload.Namespace, metric)
	var status int
	res := k.Typed.CoreV1().RESTClient().Get().AbsPath(path).Param("labelSelector", sel).Do(ctx).StatusCode(&status)
	body, err := res.Raw()
	if err != nil {
		switch status {
		case http.StatusNotFound:
			// The adapter answers so for any failure to read the metric's
			// descriptor, its identity's included: the caller names the
			// cause.
			r.Reason, r.Message = "MetricNotFound", fmt.Sprintf("the adapter answered 404 for %s (%s)", metric, err)
		case http.StatusForbidden:
			r.Reason, r.Message = "Forbidden", err.Error()+" (the caller may not read custom.metrics.k8s.io)"
		case http.StatusServiceUnavailable:
			r.Reason, r.Message = "ServiceUnavailable", err.Error()+" (the adapter's APIService is not Available)"
		default:
			r.Reason, r.Message = "RequestFailed", err.Error()
		}
		return r, nil
	}
	var list metricValueList
	if err := json.Unmarshal(body, &list); err != nil {
		r.Reason, r.Message = "Unparsable", err.Error()
		return r, nil
	}
	values := map[string]string{}
	for _, it := range list.Items {
		values[it.DescribedObject.Name] = it.Value
	}
	var missing, have []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || !kube.PodReady(&p) {
			continue
		}
		if v, ok := values[p.Name]; ok {
			have = append(have, p.Name+"="+v)
			served = append(served, p.Name)
		} else {
			missing = append(missing, p.Name)
		}
	}
	sort.Strings(have)
	switch {
	case len(have)+len(missing) == 0:
		r.Reason, r.Message = "NoReadyPods", "no Ready pod of the Deployment"
	case len(missing) > 0:
		r.Reason, r.Message = "PodsWithoutValue", "the adapter has no value for "+strings.Join(missing, ", ")
	default:
		r.OK, r.Message = true, strings.Join(have, " ")
	}
	return r, served
}
