package objectstep

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func object(apiVersion, kind string, finalizers ...string) *unstructured.Unstructured {
	o := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind, "metadata": map[string]any{"name": "x"}}}
	o.SetFinalizers(finalizers)
	return o
}

// A Deployment goes in the foreground (gone once its pods are), anything
// else in the background; a kind of the same name in another group is
// not a Deployment.
func TestPropagationOf(t *testing.T) {
	for _, c := range []struct {
		obj  *unstructured.Unstructured
		want metav1.DeletionPropagation
	}{
		{object("apps/v1", "Deployment"), metav1.DeletePropagationForeground},
		{object("v1", "Namespace"), metav1.DeletePropagationBackground},
		{object("v1", "Service"), metav1.DeletePropagationBackground},
		{object("apiregistration.k8s.io/v1", "APIService"), metav1.DeletePropagationBackground},
		{object("example.com/v1", "Deployment"), metav1.DeletePropagationBackground},
	} {
		if got := propagationOf(c.obj); got != c.want {
			t.Errorf("%s %s: %s, want %s", c.obj.GetAPIVersion(), c.obj.GetKind(), got, c.want)
		}
	}
}

// What a wait for a deletion says holds the object.
func TestFinalizerNote(t *testing.T) {
	for _, c := range []struct {
		obj  *unstructured.Unstructured
		want string
	}{
		{object("apps/v1", "Deployment", metav1.FinalizerDeleteDependents), "in the foreground"},
		{object("apps/v1", "Deployment", metav1.FinalizerDeleteDependents, "example.com/hold"), "finalizers: foregroundDeletion, example.com/hold"},
		{object("v1", "Namespace"), "the namespace controller is removing its contents"},
		{object("v1", "Service"), ""},
	} {
		got := finalizerNote(c.obj)
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("%s with %v: %q, want %q", c.obj.GetKind(), c.obj.GetFinalizers(), got, c.want)
		}
	}
}
