// Package verify checks everything that makes autoscaling work, in the
// walkthrough's order: the server and its /metrics, the PodMonitoring, the
// adapter and its APIServices, the metric through the custom metrics API for
// every pod, the HPA, and the identity bindings.
package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/nativemetrics"
	"github.com/vllm-hpa/vllm-hpa/internal/output"
	"github.com/vllm-hpa/vllm-hpa/internal/promtext"
	"github.com/vllm-hpa/vllm-hpa/internal/reach"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/adapter"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/deploy"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/hpa"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/identity"
)

// Section is one group of checks, printed under its name.
type Section struct {
	Name  string
	Check func(ctx context.Context) ([]step.Result, error)
}

// Sections lists verify's checks in the walkthrough's order (the steps'
// order, internal/steps): each step's own checks, and after deploy the
// server's /metrics, after the adapter the metric through the custom
// metrics API, which read more than a step's objects. serverURL gives the
// vLLM server's base URL (a port-forward, or --endpoint). Only the
// steps in names are checked (verify --skip leaves the others out).
func Sections(cfg *config.Config, s *steps.Stack, k *kube.Client, server *Server, names []string) []Section {
	after := map[string]Section{
		deploy.Name: {Name: "metrics", Check: func(ctx context.Context) ([]step.Result, error) {
			u, err := server.URL(ctx)
			if err != nil {
				return []step.Result{{Step: "metrics", Check: "vllm /metrics reachable", Reason: "Unreachable", Message: err.Error()}}, nil
			}
			return []step.Result{MetricsEndpoint(ctx, u, cfg.Workload.Model, RequiredGauges(cfg))}, nil
		}},
		adapter.Name: {Name: "custom-metric", Check: func(ctx context.Context) ([]step.Result, error) {
			if cfg.Native() {
				return []step.Result{NativeMetric(ctx, k, cfg)}, nil
			}
			explain := func(ctx context.Context, gauge string, served []string) identity.Diagnosis {
				return identity.Explain(ctx, cfg, s.Deps(), gauge, served)
			}
			return []step.Result{CustomMetric(ctx, k, cfg, explain)}, nil
		}},
	}
	var out []Section
	for _, name := range steps.Names() {
		if !slices.Contains(names, name) {
			continue // left out (--skip), with the checks that follow it
		}
		out = append(out, Section{Name: name, Check: func(ctx context.Context) ([]step.Result, error) {
			st, err := s.Step(name)
			if err != nil {
				return nil, err
			}
			return st.Check(ctx)
		}})
		if extra, ok := after[name]; ok {
			out = append(out, extra)
		}
	}
	return out
}

// Checks runs every section in order, reporting each check to rec. The
// error is the first section that could not check (an error, not a failed
// check), else a *step.Failed with every failed check, else nil.
func Checks(ctx context.Context, sections []Section, rec *output.Progress) error {
	var failed []step.Result
	var firstErr error
	for _, sec := range sections {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec.StepStarted(sec.Name)
		results, err := sec.Check(ctx)
		var secFailed []step.Result
		for _, r := range results {
			rec.Result(r)
			if !r.OK {
				secFailed = append(secFailed, r)
			}
		}
		failed = append(failed, secFailed...)
		if err == nil && len(secFailed) > 0 {
			err = &step.Failed{Results: secFailed}
		}
		rec.StepDone(sec.Name, err)
		if err != nil && firstErr == nil && len(secFailed) == 0 {
			firstErr = fmt.Errorf("%s: %w", sec.Name, err)
		}
	}
	if firstErr != nil {
		return firstErr
	}
	if len(failed) > 0 {
		return &step.Failed{Results: failed}
	}
	return nil
}

// Server reaches the vLLM server: at Endpoint, or through a port-forward to
// a Ready pod behind the Service (moving to another Ready pod if the
// connection breaks), opened on first use.
type Server struct {
	Endpoint string
	Config   *config.Config
	Kube     *kube.Client
	// OnMove hears when the port-forward moves to another pod.
	OnMove func(from, to string, why error)

	tunnel *reach.Tunnel
}

// URL is the server's base URL.
func (s *Server) URL(ctx context.Context) (string, error) {
	switch {
	case s.Endpoint != "":
		return s.Endpoint, nil
	case s.tunnel != nil:
		return s.tunnel.URL(), nil
	case s.Kube == nil:
		return "", errors.New("no Kubernetes connection for a port-forward; give --endpoint")
	}
	w := s.Config.Workload
	t, err := reach.Open(ctx, s.Kube.Typed, s.Kube.Config, w.Namespace, s.Config.Service.Name, s.Config.Service.Port)
	if err != nil {
		return "", fmt.Errorf("port-forward to service %s/%s: %w", w.Namespace, s.Config.Service.Name, err)
	}
	t.OnMove = s.OnMove
	s.tunnel = t
	return t.URL(), nil
}

// Close closes the port-forward, if one was opened.
func (s *Server) Close() {
	if s.tunnel != nil {
		s.tunnel.Close()
	}
}

// Gauges are the vLLM gauges verify requires on /metrics.
var Gauges = []string{"vllm:num_requests_running", "vllm:num_requests_waiting"}

// RequiredGauges are Gauges and those of the HPA's metrics.
func RequiredGauges(cfg *config.Config) []string {
	out := slices.Clone(Gauges)
	for _, m := range cfg.ScaledMetrics() {
		if !slices.Contains(out, m.Gauge) {
			out = append(out, m.Gauge)
		}
	}
	return out
}

// MetricsEndpoint fetches base/metrics and checks that the gauges are
// there for the model, parsing the Prometheus text format.
func MetricsEndpoint(ctx context.Context, base, model string, gauges []string) step.Result {
	r := step.Result{Step: "metrics", Check: "vllm /metrics carries the gauges"}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.Reason, r.Message = "Unreachable", err.Error()
		return r
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		r.Reason, r.Message = "HTTPStatus", fmt.Sprintf("GET /metrics answered %s", resp.Status)
		return r
	}
	fams, err := promtext.Families(resp.Body)
	if err != nil {
		r.Reason, r.Message = "Unparsable", err.Error()
		return r
	}
	var have, missing []string
	for _, g := range gauges {
		if v, ok := promtext.Gauge(fams, g, map[string]string{"model_name": model}); ok {
			have = append(have, fmt.Sprintf("%s=%g", g, v))
		} else {
			missing = append(missing, g)
		}
	}
	if len(missing) > 0 {
		r.Reason, r.Message = "GaugeMissing", fmt.Sprintf("no %s with model_name=%q on /metrics", strings.Join(missing, ", "), model)
		return r
	}
	r.OK, r.Message = true, strings.Join(have, " ")
	return r
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

// OtherBackendHint adds to a failed verify, when the live HPA reads its
// metric from the other backend than cfg's, how to check the route it
// uses: the checks were of the wrong one. One read, on failure only.
func OtherBackendHint(ctx context.Context, k *kube.Client, cfg *config.Config, err error) error {
	h, gerr := k.Typed.AutoscalingV2().HorizontalPodAutoscalers(cfg.Workload.Namespace).Get(ctx, cfg.HPA.Name, metav1.GetOptions{})
	if gerr != nil || len(h.Spec.Metrics) == 0 || h.Spec.Metrics[0].Pods == nil {
		return err
	}
	live := h.Spec.Metrics[0].Pods.Metric.Name
	_, _, native := nativemetrics.ParseMetricName(live)
	if native == cfg.Native() {
		return err
	}
	want := config.BackendAdapter
	if native {
		want = config.BackendNative
	}
	return exitcode.With(exitcode.Of(err), fmt.Errorf("%w\nthe HPA reads %s, the %s route, but these checks were of hpa.backend %s: run verify with --backend %s (or set hpa.backend in the configuration)", err, live, want, cfg.HPA.Backend, want))
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
		ok, reason, message, current := hpa.Status(h, m.HPAName)
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
