package hpa

import (
	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"strings"
	"testing"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

const metric = "prometheus.googleapis.com|vllm:num_requests_running|gauge"

func hpa(conds map[autoscalingv2.HorizontalPodAutoscalerConditionType][2]string, current string) *autoscalingv2.HorizontalPodAutoscaler {
	h := &autoscalingv2.HorizontalPodAutoscaler{}
	for typ, sr := range conds {
		h.Status.Conditions = append(h.Status.Conditions, autoscalingv2.HorizontalPodAutoscalerCondition{Type: typ, Status: corev1.ConditionStatus(sr[0]), Reason: sr[1], Message: "msg"})
	}
	if current != "" {
		q := resource.MustParse(current)
		h.Status.CurrentMetrics = []autoscalingv2.MetricStatus{{Type: autoscalingv2.PodsMetricSourceType, Pods: &autoscalingv2.PodsMetricStatus{
			Metric: autoscalingv2.MetricIdentifier{Name: metric}, Current: autoscalingv2.MetricValueStatus{AverageValue: &q}}}}
	}
	return h
}

func TestStatus(t *testing.T) {
	able := [2]string{"True", "ReadyForNewScale"}
	cases := []struct {
		name    string
		h       *autoscalingv2.HorizontalPodAutoscaler
		ok      bool
		reason  string
		hint    string
		current string
	}{
		{"not evaluated", hpa(nil, ""), false, "NoConditions", "", ""},
		{"cannot scale", hpa(map[autoscalingv2.HorizontalPodAutoscalerConditionType][2]string{autoscalingv2.AbleToScale: {"False", "FailedGetScale"}}, ""), false, "FailedGetScale", "does the vLLM Deployment exist", ""},
		{"no metric", hpa(map[autoscalingv2.HorizontalPodAutoscalerConditionType][2]string{autoscalingv2.AbleToScale: able, autoscalingv2.ScalingActive: {"False", "FailedGetPodsMetric"}}, ""), false, "FailedGetPodsMetric", "vllm-hpa verify names the cause", ""},
		{"scaling disabled", hpa(map[autoscalingv2.HorizontalPodAutoscalerConditionType][2]string{autoscalingv2.AbleToScale: able, autoscalingv2.ScalingActive: {"False", "ScalingDisabled"}}, ""), false, "ScalingDisabled", "0 replicas", ""},
		{"active", hpa(map[autoscalingv2.HorizontalPodAutoscalerConditionType][2]string{autoscalingv2.AbleToScale: able, autoscalingv2.ScalingActive: {"True", "ValidMetricFound"}}, "500m"), true, "ValidMetricFound", "", "500m"},
	}
	for _, c := range cases {
		ok, reason, msg, current := Status(c.h, metric)
		if ok != c.ok || reason != c.reason || current != c.current || !strings.Contains(msg, c.hint) {
			t.Errorf("%s: ok=%v reason=%q current=%q msg=%q; want %v %q %q with %q", c.name, ok, reason, current, msg, c.ok, c.reason, c.current, c.hint)
		}
	}
}

// Whatever the adapter route's FailedGetPodsMetric says (the real
// adapter's 404 for any failure to read Cloud Monitoring, in its older and
// newer words, an aggregator error, an empty list), the hint does not
// guess a cause from the text: it says that vllm-hpa names it. The native
// route's names GKE's requirements.
func TestExplainFailedGetPodsMetric(t *testing.T) {
	prefix := "unable to get metric " + metric + ": unable to fetch metrics from custom metrics API: "
	for _, message := range []string{
		prefix + `the server could not find the descriptor for metric "prometheus.googleapis.com/vllm:num_requests_running/gauge"`,
		prefix + "the server could not find the descriptor for metric prometheus.googleapis.com/vllm:num_requests_running/gauge: googleapi: Error 403: Permission monitoring.metricDescriptors.get denied (or the resource may not exist)., forbidden",
		prefix + "the server is currently unable to handle the request (get pods.custom.metrics.k8s.io *)",
		"unable to get metric " + metric + ": no metrics returned from custom metrics API",
	} {
		got := explainHPA("FailedGetPodsMetric", message)
		if !strings.HasPrefix(got, message) || !strings.Contains(got, HintAdapter) {
			t.Errorf("%q:\n got %q\nwant the hint %q", message, got, HintAdapter)
		}
	}
	native := "unable to get metric autoscaling.gke.io|gemma-server-vllm|vllm_num_requests_running: not served"
	if got := explainHPA("FailedGetPodsMetric", native); !strings.Contains(got, HintNative) {
		t.Errorf("native: %q", got)
	}
}

// A failed move puts back what the HPA read: its metrics and targets on
// the old route, not the new configuration's metrics there.
func TestRestoreMetrics(t *testing.T) {
	pods := func(name, target string) autoscalingv2.MetricSpec {
		q := resource.MustParse(target)
		return autoscalingv2.MetricSpec{Type: autoscalingv2.PodsMetricSourceType, Pods: &autoscalingv2.PodsMetricSource{
			Metric: autoscalingv2.MetricIdentifier{Name: name}, Target: autoscalingv2.MetricTarget{Type: autoscalingv2.AverageValueMetricType, AverageValue: &q}}}
	}
	cfg := config.Default()
	cfg.HPA.Metric, cfg.HPA.Backend = "waiting+kv-cache", config.BackendAdapter
	old := cfg.Copy()
	old.HPA.Backend = config.BackendNative
	restoreMetrics(old, []autoscalingv2.MetricSpec{pods("autoscaling.gke.io|gemma-server-vllm|num-requests-running", "3")})
	got := old.ScaledMetrics()
	if len(got) != 1 || got[0].HPAName != "autoscaling.gke.io|gemma-server-vllm|num-requests-running" || got[0].Target != 3 {
		t.Errorf("restored %+v, want running at 3 on the native route", got)
	}
	if cfg.HPA.Metric != "waiting+kv-cache" || cfg.Given("hpa.target") {
		t.Errorf("restoring changed the configuration it was copied from: %q, hpa.target given %v", cfg.HPA.Metric, cfg.Given("hpa.target"))
	}
	// Both of a combined strategy, from the adapter's names.
	restoreMetrics(old, []autoscalingv2.MetricSpec{
		pods("prometheus.googleapis.com|vllm:num_requests_waiting|gauge", "5"),
		pods("prometheus.googleapis.com|vllm:kv_cache_usage_perc|gauge", "700m"),
	})
	if old.HPA.Metric != "waiting+kv-cache" || old.ScaledMetrics()[1].Target != 0.7 {
		t.Errorf("restored %q %+v", old.HPA.Metric, old.ScaledMetrics())
	}
	// A metric it does not know leaves the configuration as it was.
	restoreMetrics(old, []autoscalingv2.MetricSpec{pods("custom|other", "1")})
	if old.HPA.Metric != "waiting+kv-cache" {
		t.Errorf("an unknown metric changed hpa.metric to %q", old.HPA.Metric)
	}
}
