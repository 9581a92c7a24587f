package monitor

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/gmp"
	"github.com/vllm-hpa/vllm-hpa/internal/nativemetrics"
)

// Judge reads a PodMonitoring as the API serves it; the operator saying
// False is final (no point waiting), anything else is waited for.
func TestJudge(t *testing.T) {
	object := func(p *gmp.PodMonitoring) *unstructured.Unstructured {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
		if err != nil {
			t.Fatal(err)
		}
		return &unstructured.Unstructured{Object: m}
	}
	cases := []struct {
		name      string
		obj       *unstructured.Unstructured
		ok, final bool
		reason    string
	}{
		{"configured", object(pm(3, 3, cond("True", ""))), true, false, gmp.ConditionConfigurationCreateSuccess},
		{"not observed yet", object(pm(3, 2, cond("True", ""))), false, false, "NotObserved"},
		{"no condition yet", object(pm(1, 1, nil)), false, false, "NoCondition"},
		{"refused by the operator", object(pm(1, 1, cond("False", "ScrapeConfigError"))), false, true, "ScrapeConfigError"},
		{"False without a reason", object(pm(1, 1, cond("False", ""))), false, true, "ScrapeConfigError"},
		{"not a PodMonitoring", &unstructured.Unstructured{Object: map[string]any{"status": "x"}}, false, false, "Invalid"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, final := Judge(c.obj)
			if r.OK != c.ok || final != c.final || r.Reason != c.reason {
				t.Errorf("ok=%v final=%v reason=%q, want %v %v %q (%s)", r.OK, final, r.Reason, c.ok, c.final, c.reason, r.Message)
			}
		})
	}
}

// NativeEvidence: the AutoscalingMetric declares the gauge, GKE reports
// nothing False, and a Ready pod serves the gauge; each missing piece is
// its own reason.
func TestNativeEvidence(t *testing.T) {
	cfg := config.Default()
	cfg.HPA.Backend = config.BackendNative
	gauge := nativemetrics.Gauge{Name: "num-requests-running", PrometheusName: "vllm:num_requests_running", Port: 8000, Path: "/metrics"}
	ready, notReady := []corev1.Pod{pod("a", true)}, []corev1.Pod{pod("b", false)}
	declared := NativeFacts{Found: true, Declared: true, Gauge: gauge, Selector: "app=gemma-server"}
	with := func(f NativeFacts, edit func(*NativeFacts)) NativeFacts { edit(&f); return f }
	cases := []struct {
		name   string
		f      NativeFacts
		ok     bool
		reason string
		says   string
	}{
		{"absent", NativeFacts{}, false, "NotFound", cfg.AutoscalingMetricName() + " does not exist"},
		{"gauge not declared", NativeFacts{Found: true, Gauge: gauge}, false, "GaugeNotDeclared", "does not declare gauge num-requests-running"},
		{"GKE says False", with(declared, func(f *NativeFacts) {
			f.Conditions = []map[string]any{{"type": "Ready", "status": "False", "reason": "InvalidSelector", "message": "bad"}}
		}), false, "InvalidSelector", "GKE reports Ready False: bad"},
		{"False without a reason", with(declared, func(f *NativeFacts) {
			f.Conditions = []map[string]any{{"type": "Ready", "status": "False"}}
		}), false, "Ready", "GKE reports Ready False"},
		{"no pod", declared, false, "NoPods", "app=gemma-server matches no pod"},
		{"no Ready pod", with(declared, func(f *NativeFacts) { f.Pods = notReady }), false, "NoReadyPods", "matches no Ready pod"},
		{"/metrics unreadable", with(declared, func(f *NativeFacts) { f.Pods, f.Scraped, f.ScrapeError = ready, "a", errors.New("503") }), false, "MetricsUnreachable", "pod a's /metrics could not be read"},
		{"served, no status", with(declared, func(f *NativeFacts) { f.Pods, f.Scraped = ready, "a" }), true, "PodsServeGauge", "GKE reports no status on it"},
		{"served, status true", with(declared, func(f *NativeFacts) {
			f.Pods, f.Scraped, f.Conditions = ready, "a", []map[string]any{{"type": "Ready", "status": "True"}}
		}), true, "PodsServeGauge", "no condition GKE reports is False"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := NativeEvidence(&cfg, c.f)
			if r.OK != c.ok || r.Reason != c.reason || !strings.Contains(r.Message, c.says) {
				t.Errorf("%+v, want ok=%v %s mentioning %q", r, c.ok, c.reason, c.says)
			}
		})
	}
}
