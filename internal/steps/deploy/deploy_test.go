package deploy

import (
	"testing"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// The vLLM Deployment as rendered meets GKE Autopilot's documented rules
// in every placement the settings allow (accelerator selectors, Spot, a
// ComputeClass), and the adapter's too.
func TestRenderedPodsMeetAutopilotRules(t *testing.T) {
	variants := map[string]func(*config.Config){
		"default":       func(*config.Config) {},
		"on demand":     func(c *config.Config) { c.Workload.Spot = false },
		"compute class": func(c *config.Config) { c.Workload.ComputeClass = "vllm-l4" },
		"driver default": func(c *config.Config) {
			c.Workload.GPUDriverVersion = "default"
		},
	}
	for name, change := range variants {
		cfg := config.Default()
		cfg.Project = "my-proj"
		change(&cfg)
		for _, stepName := range []string{Name, "adapter"} {
			objs, err := render.Objects(&cfg, stepName, stepName == "adapter")
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				if o.GetKind() != "Deployment" {
					continue
				}
				d, err := kube.Convert[appsv1.Deployment](o)
				if err != nil {
					t.Fatal(err)
				}
				if v := gcp.AutopilotViolations(d.Spec.Template.Spec); len(v) > 0 {
					t.Errorf("%s: %s: %v", name, o.GetName(), v)
				}
				if stepName == Name && cfg.Workload.ComputeClass != "" {
					sel := d.Spec.Template.Spec.NodeSelector
					if sel[gcp.ComputeClassLabel] != "vllm-l4" || sel[gcp.AcceleratorLabel] != "" || len(d.Spec.Template.Spec.Tolerations) != 0 {
						t.Errorf("with a ComputeClass the pods select it alone: %v %v", sel, d.Spec.Template.Spec.Tolerations)
					}
				}
			}
		}
	}
}

// The replica count is the HPA's: vllm-hpa sets it only while it alone
// owns it (to its live value), and never when another manager does.
func TestReplicasLeftToTheirOwner(t *testing.T) {
	deployment := func(replicas int64, managers ...metav1.ManagedFieldsEntry) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "spec": map[string]any{"replicas": replicas}}}
		u.SetManagedFields(managers)
		return u
	}
	owns := func(manager string, op metav1.ManagedFieldsOperationType, sub string) metav1.ManagedFieldsEntry {
		return metav1.ManagedFieldsEntry{Manager: manager, Operation: op, Subresource: sub, FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:spec":{"f:replicas":{}}}`)}}
	}
	cases := []struct {
		name string
		live *unstructured.Unstructured
		want any // nil: left out
	}{
		{"creation", nil, int64(1)}, // as rendered (only when workload.replicas is given)
		{"vllm-hpa alone owns it", deployment(2, owns(kube.FieldManager, metav1.ManagedFieldsOperationApply, "")), int64(2)},
		{"the HPA scaled it", deployment(3, owns("kube-controller-manager", metav1.ManagedFieldsOperationUpdate, "scale")), nil},
		{"kubectl scale", deployment(4, owns("kubectl", metav1.ManagedFieldsOperationUpdate, "scale"), owns(kube.FieldManager, metav1.ManagedFieldsOperationApply, "")), nil},
		{"nobody owns it", deployment(1), nil},
	}
	for _, c := range cases {
		obj := deployment(1)
		if err := Replicas(obj, c.live); err != nil {
			t.Fatal(err)
		}
		got, found, _ := unstructured.NestedFieldNoCopy(obj.Object, "spec", "replicas")
		if (c.want == nil) == found || (found && got != c.want) {
			t.Errorf("%s: replicas %v (set %v), want %v", c.name, got, found, c.want)
		}
	}
}

// A ComputeClass up chose stays selected when a later run cannot read the
// cluster's classes: the pods never move back to selectors no node
// answers. One someone else set is theirs.
func TestKeepComputeClass(t *testing.T) {
	rendered := func() *unstructured.Unstructured {
		cfg := config.Default()
		objs, err := render.Objects(&cfg, Name, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			if o.GetKind() == "Deployment" {
				return o
			}
		}
		t.Fatal("no Deployment")
		return nil
	}
	live := func(manager string) *unstructured.Unstructured {
		u := rendered()
		unstructured.SetNestedStringMap(u.Object, map[string]string{gcp.ComputeClassLabel: "vllm-l4"}, "spec", "template", "spec", "nodeSelector")
		u.SetManagedFields([]metav1.ManagedFieldsEntry{{Manager: manager, Operation: metav1.ManagedFieldsOperationApply,
			FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:spec":{"f:template":{"f:spec":{"f:nodeSelector":{"f:cloud.google.com/compute-class":{}}}}}}`)}}})
		return u
	}
	cfg := config.Default()
	obj := rendered()
	KeepComputeClass(&cfg, obj, live(kube.FieldManager))
	sel, _, _ := unstructured.NestedStringMap(obj.Object, "spec", "template", "spec", "nodeSelector")
	if len(sel) != 1 || sel[gcp.ComputeClassLabel] != "vllm-l4" || cfg.Workload.ComputeClass != "vllm-l4" {
		t.Errorf("kept: %v (%q)", sel, cfg.Workload.ComputeClass)
	}
	if _, found, _ := unstructured.NestedSlice(obj.Object, "spec", "template", "spec", "tolerations"); found {
		t.Error("the Spot toleration stays beside the class")
	}
	cfg = config.Default()
	obj = rendered()
	KeepComputeClass(&cfg, obj, live("someone-else"))
	if sel, _, _ := unstructured.NestedStringMap(obj.Object, "spec", "template", "spec", "nodeSelector"); sel[gcp.ComputeClassLabel] != "" {
		t.Errorf("took over someone else's class: %v", sel)
	}
}
