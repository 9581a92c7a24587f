// Package owner decides, from an object's labels and annotations alone,
// whose it is: vllm-hpa never changes or deletes what it cannot prove it
// created. The rules:
//
//   - Every object vllm-hpa creates carries ManagedByLabel=vllm-hpa and
//     StepLabel. An object of one stack instance also carries InstanceLabel.
//   - A shared object (the cluster-wide adapter: its namespace, RBAC,
//     Deployment, Service and APIServices) is used by every instance on the
//     cluster: it carries one UserLabelPrefix+INSTANCE label per instance that
//     uses it, and is deleted only when the last one leaves.
//   - An existing object without ManagedByLabel is someone else's, even when
//     its values equal vllm-hpa's. Only an explicit opt-in (--adopt) takes it
//     over; it is then marked AdoptedAnnotation, and cleanup removes only
//     vllm-hpa's fields and labels from it, never the object.
//   - A namespace that existed before is used as it is and never labelled.
package owner

import (
	"encoding/json"
	"reflect"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
)

// Labels and annotations that record ownership on the objects themselves,
// so that any machine running vllm-hpa later reads the same answer.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "vllm-hpa"
	InstanceLabel  = "vllm-hpa.io/instance"
	StepLabel      = "vllm-hpa.io/step"
	// UserLabelPrefix + INSTANCE marks a shared object as used by INSTANCE.
	UserLabelPrefix = "instance.vllm-hpa.io/"
	// AdoptedAnnotation marks an object vllm-hpa took over (--adopt) rather
	// than created: cleanup releases it instead of deleting it.
	AdoptedAnnotation = "vllm-hpa.io/adopted"
)

// Verdict says whose an existing object is, from one instance's view.
type Verdict string

const (
	Absent  Verdict = "absent"
	Mine    Verdict = "mine"    // this instance's (created or adopted), or a shared object this instance uses
	Shared  Verdict = "shared"  // a shared object of vllm-hpa's that this instance does not use yet
	Foreign Verdict = "foreign" // not vllm-hpa's
	Other   Verdict = "other"   // another instance's per-instance object
)

// Judgement is a Verdict with what it rests on.
type Judgement struct {
	Verdict Verdict
	// Users are the instances using a shared object (sorted).
	Users []string
	// Adopted: vllm-hpa took the object over rather than created it.
	Adopted bool
	// Owner names who holds a Foreign or Other object, for the error.
	Owner string
}

// Judge decides whose live is for instance; shared says the object is one
// of the cluster-wide shared parts. live nil is Absent.
func Judge(live *unstructured.Unstructured, instance string, shared bool) Judgement {
	if live == nil {
		return Judgement{Verdict: Absent}
	}
	l := live.GetLabels()
	adopted := live.GetAnnotations()[AdoptedAnnotation] != ""
	if l[ManagedByLabel] != ManagedByValue {
		return Judgement{Verdict: Foreign, Owner: ForeignOwner(live)}
	}
	if shared {
		users := Users(live)
		j := Judgement{Verdict: Shared, Users: users, Adopted: adopted}
		for _, u := range users {
			if u == instance {
				j.Verdict = Mine
			}
		}
		return j
	}
	switch inst := l[InstanceLabel]; inst {
	case instance:
		return Judgement{Verdict: Mine, Adopted: adopted}
	case "":
		// vllm-hpa's label without an instance: a shared object where a
		// per-instance one is expected (or hand-edited). Not provably ours.
		return Judgement{Verdict: Foreign, Owner: "vllm-hpa, without an instance label"}
	default:
		return Judgement{Verdict: Other, Owner: "vllm-hpa instance " + inst}
	}
}

// Users returns the instances that use a shared object. Objects written
// before instances were counted carry only InstanceLabel: that instance is
// their one user.
func Users(obj *unstructured.Unstructured) []string {
	var users []string
	for k := range obj.GetLabels() {
		if u, ok := strings.CutPrefix(k, UserLabelPrefix); ok && u != "" {
			users = append(users, u)
		}
	}
	if inst := obj.GetLabels()[InstanceLabel]; inst != "" && len(users) == 0 {
		users = append(users, inst)
	}
	sort.Strings(users)
	return users
}

// UserLabel is the label that marks a shared object as used by instance.
func UserLabel(instance string) string { return UserLabelPrefix + instance }

// Labels are the ownership labels of a new object of step: per-instance, or
// shared with users as its users.
func Labels(instance, step string, shared bool, users ...string) map[string]string {
	l := map[string]string{ManagedByLabel: ManagedByValue, StepLabel: step}
	if !shared {
		l[InstanceLabel] = instance
		return l
	}
	for _, u := range append(users, instance) {
		l[UserLabel(u)] = "true"
	}
	return l
}

// Stamp sets obj's ownership labels for instance, keeping its other labels:
// for a shared object every user in users and instance; adopted marks it as
// taken over.
func Stamp(obj *unstructured.Unstructured, instance, step string, shared, adopted bool, users []string) {
	l := obj.GetLabels()
	if l == nil {
		l = map[string]string{}
	}
	for k := range l {
		if k == InstanceLabel || strings.HasPrefix(k, UserLabelPrefix) {
			delete(l, k)
		}
	}
	for k, v := range Labels(instance, step, shared, users...) {
		l[k] = v
	}
	obj.SetLabels(l)
	if adopted {
		a := obj.GetAnnotations()
		if a == nil {
			a = map[string]string{}
		}
		a[AdoptedAnnotation] = "true"
		obj.SetAnnotations(a)
	}
}

// Selector selects instance's per-instance objects.
func Selector(instance string) string {
	return labels.SelectorFromSet(labels.Set{ManagedByLabel: ManagedByValue, InstanceLabel: instance}).String()
}

// SharedSelector selects the shared objects instance uses.
func SharedSelector(instance string) string {
	return ManagedByLabel + "=" + ManagedByValue + "," + UserLabel(instance)
}

// ForeignOwner names who appears to own an object vllm-hpa did not create:
// its managed-by label (Helm, Argo CD...), else the field managers that
// wrote it (kubectl-client-side-apply, kubectl-create, a controller).
func ForeignOwner(obj *unstructured.Unstructured) string {
	if m := obj.GetLabels()[ManagedByLabel]; m != "" {
		return "managed by " + m
	}
	seen := map[string]bool{}
	var managers []string
	for _, f := range obj.GetManagedFields() {
		if f.Manager != "" && !seen[f.Manager] && f.Subresource == "" {
			seen[f.Manager] = true
			managers = append(managers, f.Manager)
		}
	}
	if len(managers) == 0 {
		return "no owner recorded"
	}
	return "written by " + strings.Join(managers, ", ")
}

// Describe is "Kind namespace/name" of a live object with its age, for
// messages about objects vllm-hpa will not touch.
func Describe(obj *unstructured.Unstructured) string {
	ref := obj.GetKind() + " " + obj.GetName()
	if ns := obj.GetNamespace(); ns != "" {
		ref = obj.GetKind() + " " + ns + "/" + obj.GetName()
	}
	if ts := obj.GetCreationTimestamp(); !ts.IsZero() {
		ref += " (created " + ts.UTC().Format(time.RFC3339) + ")"
	}
	return ref
}

// RestoreAnnotation, on an object vllm-hpa adopted, holds a JSON merge
// patch that puts back what vllm-hpa's first apply changed (the values it
// took over with --force-conflicts): cleanup applies it before it gives the
// object back, so that the object works as it did before.
const RestoreAnnotation = "vllm-hpa.io/adopted-restore"

// RestorePatch is the JSON merge patch that turns applied's values back
// into live's, for every field applied sets (metadata aside: vllm-hpa's
// labels and annotations go when it releases the object). A list is
// restored whole, as merge patches do; a field live did not have becomes
// null. nil when applying changed nothing.
func RestorePatch(applied, live map[string]any) map[string]any {
	out := map[string]any{}
	for k, want := range applied {
		if k == "metadata" || k == "apiVersion" || k == "kind" || k == "status" {
			continue
		}
		had, ok := live[k]
		switch {
		case !ok:
			out[k] = nil
		case isMap(want) && isMap(had):
			if sub := RestorePatch(want.(map[string]any), had.(map[string]any)); sub != nil {
				out[k] = sub
			}
		case !equalJSON(want, had):
			out[k] = had
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func isMap(v any) bool { _, ok := v.(map[string]any); return ok }

// equalJSON compares two decoded JSON values, numbers by value.
func equalJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	if err1 != nil || err2 != nil {
		return false
	}
	var na, nb any
	_ = json.Unmarshal(ja, &na)
	_ = json.Unmarshal(jb, &nb)
	return reflect.DeepEqual(na, nb)
}

// Others are the users of a shared part (instances, or the clusters a
// service account serves) other than this one.
func Others(users []string, this string) []string {
	var out []string
	for _, u := range users {
		if u != this {
			out = append(out, u)
		}
	}
	return out
}
