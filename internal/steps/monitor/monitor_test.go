package monitor

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/gmp"
)

func pm(generation, observed int64, cond *gmp.MonitoringCondition, endpoints ...gmp.ScrapeEndpointStatus) *gmp.PodMonitoring {
	p := &gmp.PodMonitoring{ObjectMeta: metav1.ObjectMeta{Generation: generation}}
	p.Status.ObservedGeneration = observed
	if cond != nil {
		p.Status.Conditions = []gmp.MonitoringCondition{*cond}
	}
	p.Status.EndpointStatuses = endpoints
	return p
}

func cond(status, reason string) *gmp.MonitoringCondition {
	return &gmp.MonitoringCondition{Type: gmp.ConditionConfigurationCreateSuccess, Status: metav1.ConditionStatus(status), Reason: reason}
}

func TestStatus(t *testing.T) {
	lastErr := "connection refused"
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
		{"configured, no targets", pm(1, 1, cond("True", ""), gmp.ScrapeEndpointStatus{Name: "x"}), false, false, "NoTargets"},
		{"unhealthy", pm(1, 1, cond("True", ""), gmp.ScrapeEndpointStatus{ActiveTargets: 2, UnhealthyTargets: 1, SampleGroups: []gmp.SampleGroup{{SampleTargets: []gmp.SampleTarget{{LastError: &lastErr}}}}}), false, false, "UnhealthyTargets"},
		{"healthy", pm(1, 1, cond("True", ""), gmp.ScrapeEndpointStatus{ActiveTargets: 2}), true, false, "TargetsHealthy"},
	}
	for _, c := range cases {
		ok, failed, reason, _ := Status(c.pm)
		if ok != c.ok || failed != c.failed || reason != c.reason {
			t.Errorf("%s: ok=%v failed=%v reason=%q, want %v %v %q", c.name, ok, failed, reason, c.ok, c.failed, c.reason)
		}
	}
}
