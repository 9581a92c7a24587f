// Package verify checks everything that makes autoscaling work, in the
// walkthrough's order: the server and its /metrics, the PodMonitoring, the
// adapter and its APIServices, the metric through the custom metrics API for
// every pod, the HPA, and the identity bindings.
package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/promtext"
	"github.com/vllm-hpa/vllm-hpa/internal/stack"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// Section is one group of checks, printed under its name.
type Section struct {
	Name  string
	Check func(ctx context.Context) ([]step.Result, error)
}

// Sections lists verify's checks in the walkthrough's order. serverURL
// gives the vLLM server's base URL (a port-forward, or --endpoint).
func Sections(cfg *config.Config, s *stack.Stack, k *kube.Client, serverURL func(ctx context.Context) (string, error)) []Section {
	stepCheck := func(name string) Section {
		return Section{Name: name, Check: func(ctx context.Context) ([]step.Result, error) {
			st, err := s.Step(name)
			if err != nil {
				return nil, err
			}
			return st.Check(ctx)
		}}
	}
	return []Section{
		stepCheck("deploy"),
		{Name: "metrics", Check: func(ctx context.Context) ([]step.Result, error) {
			u, err := serverURL(ctx)
			if err != nil {
				return []step.Result{{Step: "metrics", Check: "vllm /metrics reachable", Reason: "Unreachable", Message: err.Error()}}, nil
			}
			return []step.Result{MetricsEndpoint(ctx, u, cfg.Workload.Model)}, nil
		}},
		stepCheck("monitor"),
		stepCheck("adapter"),
		{Name: "custom-metric", Check: func(ctx context.Context) ([]step.Result, error) {
			return []step.Result{CustomMetric(ctx, k, cfg)}, nil
		}},
		stepCheck("hpa"),
		stepCheck("identity"),
	}
}

// Gauges are the vLLM gauges verify requires on /metrics.
var Gauges = []string{"vllm:num_requests_running", "vllm:num_requests_waiting"}

// MetricsEndpoint fetches base/metrics and checks that both gauges are
// there for the model, parsing the Prometheus text format.
func MetricsEndpoint(ctx context.Context, base, model string) step.Result {
	r := step.Result{Step: "metrics", Check: "vllm /metrics carries both gauges"}
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
	for _, g := range Gauges {
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

// CustomMetric reads the HPA's metric through custom.metrics.k8s.io, as the
// HPA controller does, and checks that every Ready pod of the Deployment has
// a value.
func CustomMetric(ctx context.Context, k *kube.Client, cfg *config.Config) step.Result {
	metric := cfg.AdapterMetricName()
	r := step.Result{Step: "custom-metric", Check: "metric readable for every pod"}
	sel := labels.Set{"app": cfg.Workload.AppLabel}.String()
	pods, err := k.Typed.CoreV1().Pods(cfg.Workload.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		r.Reason, r.Message = "ListPods", err.Error()
		return r
	}
	// client-go escapes the '|' of the metric name in the path.
	path := fmt.Sprintf("/apis/custom.metrics.k8s.io/v1beta2/namespaces/%s/pods/*/%s", cfg.Workload.Namespace, metric)
	var status int
	res := k.Typed.CoreV1().RESTClient().Get().AbsPath(path).Param("labelSelector", sel).Do(ctx).StatusCode(&status)
	body, err := res.Raw()
	if err != nil {
		switch status {
		case http.StatusNotFound:
			r.Reason, r.Message = "MetricNotFound", fmt.Sprintf("the adapter has no samples of %s (Cannot find metric(s)): check that Managed Prometheus scrapes the pods and the adapter's identity; a new metric can take minutes to appear", metric)
		case http.StatusForbidden:
			r.Reason, r.Message = "Forbidden", err.Error()+" (the adapter's identity lacks roles/monitoring.viewer, or RBAC denies the reader)"
		case http.StatusServiceUnavailable:
			r.Reason, r.Message = "ServiceUnavailable", err.Error()+" (the adapter's APIService is not Available)"
		default:
			r.Reason, r.Message = "RequestFailed", err.Error()
		}
		return r
	}
	var list metricValueList
	if err := json.Unmarshal(body, &list); err != nil {
		r.Reason, r.Message = "Unparsable", err.Error()
		return r
	}
	values := map[string]string{}
	for _, it := range list.Items {
		values[it.DescribedObject.Name] = it.Value
	}
	var missing, have []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || !ready(&p) {
			continue
		}
		if v, ok := values[p.Name]; ok {
			have = append(have, p.Name+"="+v)
		} else {
			missing = append(missing, p.Name)
		}
	}
	sort.Strings(have)
	switch {
	case len(have)+len(missing) == 0:
		r.Reason, r.Message = "NoReadyPods", "no Ready pod of the Deployment"
	case len(missing) > 0:
		r.Reason, r.Message = "PodsWithoutValue", "no value for "+strings.Join(missing, ", ")
	default:
		r.OK, r.Message = true, strings.Join(have, " ")
	}
	return r
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
