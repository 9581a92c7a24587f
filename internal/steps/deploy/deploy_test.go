package deploy

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func slice(ready ...any) *unstructured.Unstructured {
	var eps []any
	for _, r := range ready {
		ep := map[string]any{"addresses": []any{"10.0.0.1"}, "conditions": map[string]any{}}
		if r != nil {
			ep["conditions"].(map[string]any)["ready"] = r
		}
		eps = append(eps, ep)
	}
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4", "endpoints": eps}}
}

func TestServiceEndpoints(t *testing.T) {
	if ok, _ := ServiceEndpoints(nil); ok {
		t.Error("no slices: ready")
	}
	if ok, _ := ServiceEndpoints([]*unstructured.Unstructured{slice(false, false)}); ok {
		t.Error("no ready endpoint: ready")
	}
	if ok, msg := ServiceEndpoints([]*unstructured.Unstructured{slice(false, true), slice(nil)}); !ok || msg != "2 ready endpoints" {
		t.Errorf("ready %v %q", ok, msg)
	}
}
