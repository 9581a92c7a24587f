package owner

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func obj(labels, annotations map[string]string, managers ...string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetKind("Service")
	u.SetName("s")
	u.SetLabels(labels)
	u.SetAnnotations(annotations)
	var mf []metav1.ManagedFieldsEntry
	for _, m := range managers {
		mf = append(mf, metav1.ManagedFieldsEntry{Manager: m})
	}
	u.SetManagedFields(mf)
	return u
}

func TestJudge(t *testing.T) {
	mine := map[string]string{ManagedByLabel: ManagedByValue, InstanceLabel: "a"}
	cases := []struct {
		name     string
		live     *unstructured.Unstructured
		shared   bool
		verdict  Verdict
		users    []string
		adopted  bool
		ownerHas string
	}{
		{"absent", nil, false, Absent, nil, false, ""},
		{"same values, no label", obj(map[string]string{"app": "x"}, nil, "kubectl-client-side-apply"), false, Foreign, nil, false, "kubectl-client-side-apply"},
		{"Helm's", obj(map[string]string{ManagedByLabel: "Helm"}, nil, "helm"), false, Foreign, nil, false, "managed by Helm"},
		{"mine", obj(mine, nil), false, Mine, nil, false, ""},
		{"adopted", obj(mine, map[string]string{AdoptedAnnotation: "true"}), false, Mine, nil, true, ""},
		{"another instance's", obj(map[string]string{ManagedByLabel: ManagedByValue, InstanceLabel: "b"}, nil), false, Other, nil, false, "instance b"},
		{"vllm-hpa's without instance", obj(map[string]string{ManagedByLabel: ManagedByValue}, nil), false, Foreign, nil, false, "without an instance"},
		{"shared, used by me and b", obj(map[string]string{ManagedByLabel: ManagedByValue, UserLabel("a"): "true", UserLabel("b"): "true"}, nil), true, Mine, []string{"a", "b"}, false, ""},
		{"shared, used by b only", obj(map[string]string{ManagedByLabel: ManagedByValue, UserLabel("b"): "true"}, nil), true, Shared, []string{"b"}, false, ""},
		{"shared, used by nobody", obj(map[string]string{ManagedByLabel: ManagedByValue}, nil), true, Shared, nil, false, ""},
		{"shared, written before counting", obj(map[string]string{ManagedByLabel: ManagedByValue, InstanceLabel: "a"}, nil), true, Mine, []string{"a"}, false, ""},
		{"shared, foreign", obj(nil, nil), true, Foreign, nil, false, "no owner recorded"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			j := Judge(c.live, "a", c.shared)
			if j.Verdict != c.verdict || j.Adopted != c.adopted || len(j.Users) != len(c.users) {
				t.Errorf("Judge = %+v, want %s users %v adopted %v", j, c.verdict, c.users, c.adopted)
			}
			for i := range c.users {
				if j.Users[i] != c.users[i] {
					t.Errorf("users %v, want %v", j.Users, c.users)
				}
			}
			if !strings.Contains(j.Owner, c.ownerHas) {
				t.Errorf("owner %q, want it to name %q", j.Owner, c.ownerHas)
			}
		})
	}
}

func TestStampKeepsOtherUsersAndLabels(t *testing.T) {
	u := obj(map[string]string{"app": "x", InstanceLabel: "old", UserLabel("gone"): "true"}, nil)
	Stamp(u, "a", "adapter", true, true, []string{"b"})
	l := u.GetLabels()
	if l["app"] != "x" || l[UserLabel("a")] != "true" || l[UserLabel("b")] != "true" || l[InstanceLabel] != "" || l[UserLabel("gone")] != "" || l[StepLabel] != "adapter" {
		t.Errorf("labels %v", l)
	}
	if u.GetAnnotations()[AdoptedAnnotation] != "true" {
		t.Error("not marked adopted")
	}
}
