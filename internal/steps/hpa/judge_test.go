package hpa

import (
	"strings"
	"testing"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
)

// hpaObject is an HPA as the API serves it: conditions, and a current
// value per named metric.
func hpaObject(t *testing.T, active string, current map[string]string) *unstructured.Unstructured {
	t.Helper()
	h := &autoscalingv2.HorizontalPodAutoscaler{TypeMeta: metav1.TypeMeta{APIVersion: "autoscaling/v2", Kind: "HorizontalPodAutoscaler"}}
	h.Status.Conditions = []autoscalingv2.HorizontalPodAutoscalerCondition{
		{Type: autoscalingv2.AbleToScale, Status: corev1.ConditionTrue, Reason: "ReadyForNewScale"},
		{Type: autoscalingv2.ScalingActive, Status: corev1.ConditionStatus(map[bool]string{true: "True", false: "False"}[active == "ValidMetricFound"]), Reason: active, Message: "the HPA said so"},
	}
	for name, v := range current {
		q := resource.MustParse(v)
		h.Status.CurrentMetrics = append(h.Status.CurrentMetrics, autoscalingv2.MetricStatus{Type: autoscalingv2.PodsMetricSourceType,
			Pods: &autoscalingv2.PodsMetricStatus{Metric: autoscalingv2.MetricIdentifier{Name: name}, Current: autoscalingv2.MetricValueStatus{AverageValue: &q}}})
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(h)
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

// Judge: ScalingActive with a current value of every metric of the
// strategy; in a combined one, the first metric that fails is the
// reason, and the values read are shown.
func TestJudge(t *testing.T) {
	running := "prometheus.googleapis.com|vllm:num_requests_running|gauge"
	kv := "prometheus.googleapis.com|vllm:kv_cache_usage_perc|gauge"
	single, combined := config.Default(), config.Default()
	combined.HPA.Metric, combined.HPA.KVCacheTarget = "running+kv-cache", 0.5
	cases := []struct {
		name    string
		cfg     config.Config
		obj     *unstructured.Unstructured
		ok      bool
		reason  string
		message []string
	}{
		{"active with a value", single, hpaObject(t, "ValidMetricFound", map[string]string{running: "2"}), true, "ValidMetricFound", []string{"current 2 / target 4"}},
		{"active, no value of this metric", single, hpaObject(t, "ValidMetricFound", nil), false, "MetricNotRead", []string{"shows no current value of " + running}},
		{"metric not found", single, hpaObject(t, "FailedGetPodsMetric", nil), false, "FailedGetPodsMetric", []string{"the HPA said so"}},
		{"combined, both read", combined, hpaObject(t, "ValidMetricFound", map[string]string{running: "2", kv: "300m"}), true, "ValidMetricFound", []string{"running current 2 / target 4", "kv-cache current 300m / target 500m"}},
		{"combined, second not read", combined, hpaObject(t, "ValidMetricFound", map[string]string{running: "2"}), false, "MetricNotRead", []string{"running current 2 / target 4", "no current value of " + kv}},
		{"not an HPA", single, &unstructured.Unstructured{Object: map[string]any{"spec": "x"}}, false, "Invalid", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, final := Judge(c.obj, &c.cfg)
			if r.OK != c.ok || r.Reason != c.reason || final {
				t.Errorf("ok=%v reason=%q final=%v, want %v %q false (%s)", r.OK, r.Reason, final, c.ok, c.reason, r.Message)
			}
			for _, m := range c.message {
				if !strings.Contains(r.Message, m) {
					t.Errorf("message %q lacks %q", r.Message, m)
				}
			}
		})
	}
}
