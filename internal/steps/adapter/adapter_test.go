package adapter

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func apiService(name string, service map[string]any, available string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": name},
		"spec":     map[string]any{},
	}}
	if service != nil {
		u.Object["spec"].(map[string]any)["service"] = service
	}
	if available != "" {
		u.Object["status"] = map[string]any{"conditions": []any{map[string]any{"type": "Available", "status": available, "reason": "R", "message": "m"}}}
	}
	return u
}

// APIServiceResults: each APIService the adapter serves is judged by its
// Available condition; one missing or without a condition is not.
func TestAPIServiceResults(t *testing.T) {
	name := "v1beta1.custom.metrics.k8s.io"
	ours := map[string]any{"namespace": "custom-metrics", "name": DeploymentName}
	cases := []struct {
		name   string
		objs   []*unstructured.Unstructured
		ok     bool
		reason string
	}{
		{"available", []*unstructured.Unstructured{apiService(name, ours, "True")}, true, "R"}, // the condition's own reason
		{"not available", []*unstructured.Unstructured{apiService(name, ours, "False")}, false, "R"},
		{"no condition yet", []*unstructured.Unstructured{apiService(name, nil, "")}, false, "NoCondition"},
		{"absent", nil, false, "NotFound"},
		{"another APIService only", []*unstructured.Unstructured{apiService("v1beta2.custom.metrics.k8s.io", ours, "True")}, false, "NotFound"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rs := APIServiceResults(Name, []string{name}, c.objs)
			if len(rs) != 1 || rs[0].OK != c.ok || rs[0].Reason != c.reason {
				t.Errorf("%+v, want one result ok=%v reason %q", rs, c.ok, c.reason)
			}
		})
	}
}

func TestServedBy(t *testing.T) {
	if got := ServedBy(apiService("x", map[string]any{"namespace": "monitoring", "name": "prometheus-adapter"}, "")); got != "Service monitoring/prometheus-adapter" {
		t.Errorf("got %q", got)
	}
	if got := ServedBy(apiService("x", nil, "")); got != "kube-apiserver itself (a local APIService)" {
		t.Errorf("got %q", got)
	}
}
