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

func TestAPIServiceResults(t *testing.T) {
	names := []string{"v1beta1.custom.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io", "v1beta1.external.metrics.k8s.io"}
	objs := []*unstructured.Unstructured{
		apiService(names[0], map[string]any{"namespace": "custom-metrics", "name": DeploymentName}, "True"),
		apiService(names[1], map[string]any{"namespace": "custom-metrics", "name": DeploymentName}, "False"),
	}
	rs := APIServiceResults(Name, names, objs)
	if len(rs) != 3 || !rs[0].OK || rs[1].OK || rs[1].Reason != "R" || rs[2].OK || rs[2].Reason != "NotFound" {
		t.Errorf("results %+v", rs)
	}
	if got := APIServiceResults(Name, names[:1], []*unstructured.Unstructured{apiService(names[0], nil, "")}); got[0].OK || got[0].Reason != "NoCondition" {
		t.Errorf("no condition: %+v", got)
	}
}

func TestBackend(t *testing.T) {
	if got := Backend(apiService("x", map[string]any{"namespace": "monitoring", "name": "prometheus-adapter"}, "")); got != "Service monitoring/prometheus-adapter" {
		t.Errorf("got %q", got)
	}
	if got := Backend(apiService("x", nil, "")); got != "kube-apiserver itself (a local APIService)" {
		t.Errorf("got %q", got)
	}
}
