package monitor

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/gmp"
)

func pm(generation, observed int64, cond *gmp.MonitoringCondition) *gmp.PodMonitoring {
	p := &gmp.PodMonitoring{ObjectMeta: metav1.ObjectMeta{Generation: generation}}
	p.Status.ObservedGeneration = observed
	if cond != nil {
		p.Status.Conditions = []gmp.MonitoringCondition{*cond}
	}
	return p
}

func cond(status, reason string) *gmp.MonitoringCondition {
	return &gmp.MonitoringCondition{Type: gmp.ConditionConfigurationCreateSuccess, Status: metav1.ConditionStatus(status), Reason: reason}
}

func TestStatus(t *testing.T) {
	cases := []struct {
		name       string
		pm         *gmp.PodMonitoring
		ok, failed bool
		reason     string
	}{
		{"not observed", pm(2, 1, cond("True", "")), false, false, "NotObserved"},
		{"no condition", pm(1, 1, nil), false, false, "NoCondition"},
		{"operator says False", pm(1, 1, cond("False", "ScrapeConfigError")), false, true, "ScrapeConfigError"},
		{"unknown", pm(1, 1, cond("Unknown", "")), false, false, "Unknown"},
		{"configured", pm(1, 1, cond("True", "")), true, false, gmp.ConditionConfigurationCreateSuccess},
	}
	for _, c := range cases {
		ok, failed, reason, _ := Status(c.pm)
		if ok != c.ok || failed != c.failed || reason != c.reason {
			t.Errorf("%s: ok=%v failed=%v reason=%q, want %v %v %q", c.name, ok, failed, reason, c.ok, c.failed, c.reason)
		}
	}
}

func pod(name string, ready bool) corev1.Pod {
	s := corev1.ConditionFalse
	if ready {
		s = corev1.ConditionTrue
	}
	return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: s}}}}
}

func TestEvidence(t *testing.T) {
	lastErr := "connection refused"
	ready, notReady := []corev1.Pod{pod("a", true), pod("b", false)}, []corev1.Pod{pod("b", false)}
	cases := []struct {
		name   string
		f      Facts
		ok     bool
		reason string
		says   string
	}{
		{"selector matches nothing", Facts{Selector: "app=x"}, false, "NoPods", "app=x"},
		{"no Ready pod", Facts{Selector: "app=x", Pods: notReady}, false, "NoReadyPods", "b (not Ready)"},
		// Target status on: only the operator's report counts.
		{"on, not reported yet", Facts{TargetStatus: true, Pods: ready}, false, "TargetsNotReported", ""},
		{"on, reported none", Facts{TargetStatus: true, Reported: true, Pods: ready}, false, "NoTargets", "a"},
		{"on, unhealthy", Facts{TargetStatus: true, Reported: true, Pods: ready, EndpointStatuses: []gmp.ScrapeEndpointStatus{{ActiveTargets: 1, UnhealthyTargets: 1,
			SampleGroups: []gmp.SampleGroup{{SampleTargets: []gmp.SampleTarget{{LastError: &lastErr}}}}}}}, false, "UnhealthyTargets", lastErr},
		{"on, healthy", Facts{TargetStatus: true, Reported: true, Pods: ready, EndpointStatuses: []gmp.ScrapeEndpointStatus{{ActiveTargets: 1}}}, true, "TargetsHealthy", ""},
		// Target status off: never a pass on missing evidence.
		{"off, /metrics unreadable", Facts{Pods: ready, Scraped: "a", ScrapeError: errors.New("503")}, false, "MetricsUnreachable", "target status is off"},
		{"off, pods serve the gauges", Facts{Pods: ready, Scraped: "a", ScrapedWith: "vllm:num_requests_running"}, true, "PodsServeMetrics", "targets are not observable"},
	}
	for _, c := range cases {
		r := Evidence(c.f)
		if r.OK != c.ok || r.Reason != c.reason || !strings.Contains(r.Message, c.says) {
			t.Errorf("%s: %+v, want ok=%v %s mentioning %q", c.name, r, c.ok, c.reason, c.says)
		}
	}
}
