package cmd

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/localcluster"
	"github.com/vllm-hpa/vllm-hpa/internal/owner"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/vllmsim"
)

// The ownership corpus: each case puts objects vllm-hpa did not create (or
// another instance's) where vllm-hpa would write, runs vllm-hpa against
// them, and proves by UID and resourceVersion that none of them was
// changed or deleted. Grow it whenever a new way in appears.

// fingerprint is an object's identity and version: equal fingerprints
// mean the object was neither replaced nor changed. content is everything
// but its status and bookkeeping, for objects whose controllers write
// their status (a Deployment, an HPA, an APIService): their
// resourceVersion moves without anyone changing them.
type fingerprint struct{ uid, rv, content string }

// contentOf is obj without status, resourceVersion and managedFields.
func contentOf(obj *unstructured.Unstructured) string {
	c := obj.DeepCopy()
	unstructured.RemoveNestedField(c.Object, "status")
	unstructured.RemoveNestedField(c.Object, "metadata", "resourceVersion")
	unstructured.RemoveNestedField(c.Object, "metadata", "managedFields")
	// The Deployment controller's own bookkeeping.
	unstructured.RemoveNestedField(c.Object, "metadata", "annotations", "deployment.kubernetes.io/revision")
	if a, _, _ := unstructured.NestedMap(c.Object, "metadata", "annotations"); len(a) == 0 {
		unstructured.RemoveNestedField(c.Object, "metadata", "annotations")
	}
	b, _ := json.Marshal(c.Object)
	return string(b)
}

// writtenByVllmHPA reports whether vllm-hpa's field manager ever wrote obj.
func writtenByVllmHPA(obj *unstructured.Unstructured) bool {
	for _, f := range obj.GetManagedFields() {
		if f.Manager == kube.FieldManager {
			return true
		}
	}
	return false
}

// foreignSet records foreign objects on a testbed and checks them later.
type foreignSet struct {
	t    *testing.T
	tb   *testbed
	objs map[string]fingerprint // by "Kind ns/name"
	refs map[string]*unstructured.Unstructured
}

func newForeignSet(t *testing.T, tb *testbed) *foreignSet {
	return &foreignSet{t: t, tb: tb, objs: map[string]fingerprint{}, refs: map[string]*unstructured.Unstructured{}}
}

// add records a live object as foreign.
func (f *foreignSet) add(obj *unstructured.Unstructured) {
	f.t.Helper()
	k := f.tb.kube(f.t)
	live, err := k.Get(context.Background(), obj)
	if err != nil || live == nil {
		f.t.Fatalf("%s: %v", kube.Ref(obj), err)
	}
	f.objs[kube.Ref(live)] = fingerprint{string(live.GetUID()), live.GetResourceVersion(), contentOf(live)}
	f.refs[kube.Ref(live)] = live
}

// unchanged fails the test for every recorded object that is gone, was
// replaced, or changed: its resourceVersion is the same, or (where a
// controller wrote its status) vllm-hpa never wrote it and nothing but its
// status changed.
func (f *foreignSet) unchanged(when string) {
	f.t.Helper()
	k := f.tb.kube(f.t)
	for ref, want := range f.objs {
		live, err := k.Get(context.Background(), f.refs[ref])
		switch {
		case err != nil:
			f.t.Errorf("%s: %s: %v", when, ref, err)
		case live == nil:
			f.t.Errorf("%s: foreign %s was deleted", when, ref)
		case string(live.GetUID()) != want.uid:
			f.t.Errorf("%s: foreign %s was replaced", when, ref)
		case live.GetResourceVersion() == want.rv:
		case writtenByVllmHPA(live) || contentOf(live) != want.content:
			f.t.Errorf("%s: foreign %s was changed (resourceVersion %s -> %s; labels %v)", when, ref, want.rv, live.GetResourceVersion(), live.GetLabels())
		}
	}
}

// createForeign creates obj as someone else would (kubectl's field manager,
// no vllm-hpa label) and records it.
func createForeign(t *testing.T, tb *testbed, f *foreignSet, obj *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	r, err := tb.kube(t).Resource(obj)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := obj.MarshalJSON()
	out, err := r.Patch(context.Background(), obj.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: "kubectl", Force: ptrTo(true)})
	if err != nil {
		t.Fatalf("create foreign %s: %v", kube.Ref(obj), err)
	}
	if f != nil {
		f.add(out)
	}
	t.Cleanup(func() { deleteAndWait(t, r, obj.GetName()) })
	return out
}

func ptrTo[T any](v T) *T { return &v }

// deleteAndWait deletes an object a test made and waits until it is gone
// (a namespace takes a while), so that the next test starts clean.
func deleteAndWait(t *testing.T, r dynamic.ResourceInterface, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r.Delete(ctx, name, metav1.DeleteOptions{}); apierrors.IsNotFound(err) {
		return
	}
	for ctx.Err() == nil {
		if _, err := r.Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("%s was not deleted within a minute", name)
}

// rendered is one of instance's rendered objects, without vllm-hpa's
// labels: what a user who copied the walkthrough's manifests by hand has.
func rendered(t *testing.T, inst instance, stepName, kind, name string) *unstructured.Unstructured {
	t.Helper()
	return renderedFrom(t, inst.config(), stepName, kind, name)
}

// renderedFrom is rendered for a configuration of the test's own.
func renderedFrom(t *testing.T, cfg *config.Config, stepName, kind, name string) *unstructured.Unstructured {
	t.Helper()
	objs, err := render.Objects(cfg, stepName, stepName == "adapter")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() == kind && (name == "" || o.GetName() == name) {
			o = o.DeepCopy()
			o.SetLabels(nil)
			if kind == "Secret" {
				unstructured.RemoveNestedField(o.Object, "stringData")
				unstructured.SetNestedStringMap(o.Object, map[string]string{"hf_token": base64.StdEncoding.EncodeToString([]byte("hf_someoneElsesToken"))}, "data")
			}
			return o
		}
	}
	t.Fatalf("no %s %s in step %s", kind, name, stepName)
	return nil
}

func namespaceObj(name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("Namespace")
	u.SetName(name)
	return u
}

func configMap(ns, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("ConfigMap")
	u.SetNamespace(ns)
	u.SetName(name)
	unstructured.SetNestedStringMap(u.Object, map[string]string{"owner": "someone else"}, "data")
	return u
}

// TestRefusesForeignObjects: an existing object that vllm-hpa did not
// create stops its step (exit 7, the object and its owner named) before
// anything is written, even when it holds exactly vllm-hpa's values; and
// no later cleanup touches it.
func TestRefusesForeignObjects(t *testing.T) {
	t.Parallel()
	cases := []struct {
		step, kind, name string
		backend          string // hpa.backend, when not the default
	}{
		{"deploy", "Service", "llm-service", ""},                 // same selector and port as vllm-hpa's
		{"deploy", "Deployment", "vllm-gemma-deployment", ""},    // someone's own vLLM
		{"deploy", "Secret", "hf-secret", ""},                    // someone's own token
		{"monitor", "PodMonitoring", "gemma-pod-monitoring", ""}, // someone's own scrape config
		{"hpa", "HorizontalPodAutoscaler", "gemma-server-hpa", ""},
		{"adapter", "ClusterRole", "external-metrics-reader", ""}, // upstream's rules, applied by hand
		{"adapter", "APIService", "v1beta1.external.metrics.k8s.io", ""},
		{"monitor", "AutoscalingMetric", "", "native"}, // someone's own declaration of the same gauge, same name
	}
	for i, c := range cases {
		t.Run(c.kind, func(t *testing.T) {
			inst := newInstance(t, fmt.Sprintf("refuse%d", i), fmt.Sprintf("refuse%d-ns", i))
			t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
			f := newForeignSet(t, inst.tb)
			if c.step != "adapter" && c.step != "deploy" {
				mustRun(t, inst, "deploy") // the step's namespace
			}
			if c.step == "deploy" {
				createForeign(t, inst.tb, nil, namespaceObj(inst.namespace))
			}
			cfg, args := inst.config(), []string{c.step, "-o", "json"}
			if c.backend != "" {
				cfg.HPA.Backend = c.backend
				args = append(args, "--backend", c.backend)
			}
			foreign := renderedFrom(t, cfg, c.step, c.kind, c.name)
			createForeign(t, inst.tb, f, foreign)
			before := ownedObjects(t, inst)
			code, out, errOut := kubeRun(t, inst, args...)
			if code != exitcode.Conflict || !strings.Contains(errOut, c.kind+" ") || !strings.Contains(errOut, foreign.GetName()) || !strings.Contains(errOut, "written by kubectl") || !strings.Contains(errOut, "--adopt") {
				t.Errorf("%s over a foreign %s: exit %d, want %d naming it, its owner and --adopt:\n%s", c.step, c.kind, code, exitcode.Conflict, errOut)
			}
			var doc runJSON
			if err := json.Unmarshal([]byte(out), &doc); err != nil || doc.ExitCode != exitcode.Conflict {
				t.Errorf("-o json: %v\n%s", err, out)
			}
			if after := ownedObjects(t, inst); !equalMaps(before, after) {
				t.Errorf("%s wrote objects before refusing: %v -> %v", c.step, keys(before), keys(after))
			}
			f.unchanged("after " + c.step)
			mustRun(t, inst, cleanupKube...)
			f.unchanged("after cleanup")
		})
	}
}

// TestHandInstalledAdapter: an adapter installed by hand from upstream's
// manifest (13 objects, none with vllm-hpa's labels) is another provider's
// installation: adapter refuses naming every object and what its
// APIServices serve, and cleanup of a stack that ran without it leaves
// all 13 as they were.
func TestHandInstalledAdapter(t *testing.T) {
	inst := newInstance(t, "byhand", "byhand-ns")
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	f := newForeignSet(t, inst.tb)
	objs, err := render.Objects(inst.config(), "adapter", true)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		o.SetLabels(map[string]string{"k8s-app": "custom-metrics-stackdriver-adapter"})
		createForeign(t, inst.tb, f, o)
	}
	if len(f.objs) != 13 {
		t.Fatalf("%d objects installed by hand, want 13", len(f.objs))
	}
	code, _, errOut := kubeRun(t, inst, "adapter")
	if code != exitcode.Conflict || !strings.Contains(errOut, "12 objects exist") || !strings.Contains(errOut, "another metrics provider's installation") {
		t.Errorf("adapter over a hand-installed adapter: exit %d, want %d naming 12 objects and the provider:\n%s", code, exitcode.Conflict, errOut)
	}
	f.unchanged("after adapter")
	mustRun(t, inst, "deploy")
	mustRun(t, inst, "monitor")
	code, out, _ := kubeRun(t, inst, append(cleanupKube, "-o", "json")...)
	if code != 0 {
		t.Fatalf("cleanup: exit %d\n%s", code, out)
	}
	f.unchanged("after cleanup")
}

// TestPreexistingNamespaces: a namespace that existed before is used as it
// is, never labelled and never deleted, empty or not.
func TestPreexistingNamespaces(t *testing.T) {
	inst := newInstance(t, "prens", "prens-ns")
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	f := newForeignSet(t, inst.tb)
	createForeign(t, inst.tb, f, namespaceObj(inst.namespace))
	createForeign(t, inst.tb, f, configMap(inst.namespace, "theirs"))
	createForeign(t, inst.tb, f, namespaceObj("custom-metrics")) // empty
	for _, s := range kubeSteps {
		out := mustRun(t, inst, s)
		_ = out
	}
	f.unchanged("after up")
	out := mustRun(t, inst, append(cleanupKube, "-o", "json")...)
	f.unchanged("after cleanup")
	if !strings.Contains(out, "Namespace prens-ns left in place") || !strings.Contains(out, "Namespace custom-metrics left in place") {
		t.Errorf("cleanup does not say the namespaces stay:\n%s", out)
	}
	if left := ownedObjects(t, inst); len(left) != 0 {
		t.Errorf("cleanup left %v", keys(left))
	}
}

// TestNamespaceScanIsComplete: a namespace vllm-hpa created stays when it
// holds an object owned (ownerReferences) by something vllm-hpa did not
// create, and when a resource type in it cannot be listed.
func TestNamespaceScanIsComplete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("owned by a foreign object", func(t *testing.T) {
		inst := newInstance(t, "scanown", "scanown-ns")
		cp := inst.tb.cp
		t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
		mustRun(t, inst, "deploy")
		f := newForeignSet(t, inst.tb)
		cr := createForeign(t, inst.tb, f, &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": map[string]any{"name": "scan-owner"}}})
		cm := configMap(inst.namespace, "owned")
		cm.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole", Name: cr.GetName(), UID: cr.GetUID()}})
		createForeign(t, inst.tb, f, cm)
		out := mustRun(t, inst, "cleanup", "deploy", "-o", "json")
		f.unchanged("after cleanup")
		if _, err := cp.Client.CoreV1().Namespaces().Get(ctx, inst.namespace, metav1.GetOptions{}); err != nil {
			t.Errorf("namespace holding a foreign-owned object: %v", err)
		}
		if !strings.Contains(out, "ConfigMap owned") {
			t.Errorf("cleanup does not name what keeps the namespace:\n%s", out)
		}
	})
	t.Run("a resource type the user may not list", func(t *testing.T) {
		inst := newInstance(t, "scanforbid", "scanforbid-ns")
		cp := inst.tb.cp
		t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
		mustRun(t, inst, "deploy")
		kc := limitedKubeconfig(t, inst.tb, "configmaps")
		code, out, errOut := kubeRunEnv(t, inst, map[string]string{"VLLM_HPA_KUBE_KUBECONFIG": kc}, "cleanup", "deploy", "-o", "json")
		if code != 0 {
			t.Fatalf("cleanup as a limited user: exit %d\n%s", code, errOut)
		}
		if _, err := cp.Client.CoreV1().Namespaces().Get(ctx, inst.namespace, metav1.GetOptions{}); err != nil {
			t.Errorf("namespace deleted although configmaps could not be listed: %v", err)
		}
		if !strings.Contains(out, "listing configmaps is forbidden") {
			t.Errorf("cleanup does not say why the namespace stays:\n%s", out)
		}
	})
}

// limitedKubeconfig is the test's kubeconfig acting as a user (by
// impersonation) who may do everything but list the given resource.
func limitedKubeconfig(t *testing.T, tb *testbed, notListable string) string {
	cp := tb.cp
	t.Helper()
	ctx := context.Background()
	user := "limited-" + notListable
	lists, _ := cp.Client.Discovery().ServerPreferredResources()
	var rules []rbacv1.PolicyRule
	for _, l := range lists {
		gv, _ := schema.ParseGroupVersion(l.GroupVersion)
		var all, noList []string
		for _, r := range l.APIResources {
			if r.Name == notListable {
				noList = append(noList, r.Name)
				continue
			}
			all = append(all, r.Name)
		}
		if len(all) > 0 {
			rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{gv.Group}, Resources: all, Verbs: []string{"*"}})
		}
		if len(noList) > 0 {
			rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{gv.Group}, Resources: noList, Verbs: []string{"get", "watch", "create", "update", "patch", "delete"}})
		}
	}
	rules = append(rules, rbacv1.PolicyRule{NonResourceURLs: []string{"*"}, Verbs: []string{"get"}})
	cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: user}, Rules: rules}
	if _, err := cp.Client.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user}, RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: user},
		Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: user}}}
	if _, err := cp.Client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cp.Client.RbacV1().ClusterRoleBindings().Delete(ctx, user, metav1.DeleteOptions{})
		cp.Client.RbacV1().ClusterRoles().Delete(ctx, user, metav1.DeleteOptions{})
	})
	raw, err := clientcmd.LoadFromFile(cp.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range raw.AuthInfos {
		a.Impersonate = user
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*raw, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestAdoptThenRelease: --adopt takes over a foreign object holding
// vllm-hpa's values, marked as adopted; cleanup then removes only
// vllm-hpa's labels and fields, and the object stays with its own.
func TestAdoptThenRelease(t *testing.T) {
	ctx := context.Background()
	inst := newInstance(t, "adopt", "adopt-ns")
	cp := inst.tb.cp
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	mustRun(t, inst, "deploy")
	mustRun(t, inst, "cleanup", "deploy")
	createForeign(t, inst.tb, nil, namespaceObj(inst.namespace))
	svc := rendered(t, inst, "deploy", "Service", "llm-service")
	svc.SetLabels(map[string]string{"team": "ml"})
	theirs := createForeign(t, inst.tb, nil, svc)

	mustRun(t, inst, "deploy", "--adopt")
	live, err := cp.Client.CoreV1().Services(inst.namespace).Get(ctx, "llm-service", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(live.UID) != string(theirs.GetUID()) || live.Annotations[owner.AdoptedAnnotation] != "true" || live.Labels[owner.InstanceLabel] != inst.name || live.Labels["team"] != "ml" {
		t.Errorf("adopted Service: uid %s (was %s), annotations %v, labels %v", live.UID, theirs.GetUID(), live.Annotations, live.Labels)
	}
	out := mustRun(t, inst, "cleanup", "deploy", "-o", "json")
	live, err = cp.Client.CoreV1().Services(inst.namespace).Get(ctx, "llm-service", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("cleanup deleted the adopted Service: %v\n%s", err, out)
	}
	if string(live.UID) != string(theirs.GetUID()) || live.Labels[owner.ManagedByLabel] != "" || live.Labels[owner.InstanceLabel] != "" || live.Annotations[owner.AdoptedAnnotation] != "" {
		t.Errorf("released Service still carries vllm-hpa's marks: labels %v annotations %v", live.Labels, live.Annotations)
	}
	if live.Labels["team"] != "ml" || live.Spec.Selector["app"] != "gemma-server" || len(live.Spec.Ports) != 1 {
		t.Errorf("released Service lost its own fields: labels %v selector %v ports %v", live.Labels, live.Spec.Selector, live.Spec.Ports)
	}
	if !strings.Contains(out, "adopted") {
		t.Errorf("cleanup does not say it released an adopted object:\n%s", out)
	}
}

// TestTwoInstancesInOneNamespace: an instance may not take over another
// instance's same-named objects, nor delete them.
func TestTwoInstancesInOneNamespace(t *testing.T) {
	alpha := newInstance(t, "alpha1", "shared-ns")
	beta := alpha.another("beta1", "shared-ns")
	t.Cleanup(func() { kubeRun(t, beta, tidyKube...); kubeRun(t, alpha, tidyKube...) })
	mustRun(t, alpha, "deploy")
	mustRun(t, alpha, "monitor")
	f := newForeignSet(t, alpha.tb)
	for _, ref := range keys(ownedObjects(t, alpha)) {
		kind, nsName, _ := strings.Cut(ref, " ")
		ns, name, ok := strings.Cut(nsName, "/")
		if !ok {
			name, ns = ns, ""
		}
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvkOf(kind))
		u.SetNamespace(ns)
		u.SetName(name)
		f.add(u)
	}
	code, _, errOut := kubeRun(t, beta, "deploy")
	if code != exitcode.Conflict || !strings.Contains(errOut, "belongs to vllm-hpa instance alpha1") {
		t.Errorf("beta over alpha's objects: exit %d, want %d naming instance alpha1:\n%s", code, exitcode.Conflict, errOut)
	}
	code, _, errOut = kubeRun(t, beta, "monitor")
	if code != exitcode.Conflict {
		t.Errorf("beta monitor over alpha's PodMonitoring: exit %d\n%s", code, errOut)
	}
	mustRun(t, beta, cleanupKube...)
	f.unchanged("after beta's deploy, monitor and cleanup")
}

func gvkOf(kind string) schema.GroupVersionKind {
	switch kind {
	case "Deployment":
		return appsv1.SchemeGroupVersion.WithKind(kind)
	case "PodMonitoring":
		return schema.GroupVersionKind{Group: "monitoring.googleapis.com", Version: "v1", Kind: kind}
	case "HorizontalPodAutoscaler":
		return schema.GroupVersionKind{Group: "autoscaling", Version: "v2", Kind: kind}
	}
	return corev1.SchemeGroupVersion.WithKind(kind)
}

// adapterObjects fingerprints the shared adapter's objects.
func adapterObjects(t *testing.T, tb *testbed) map[string]fingerprint {
	t.Helper()
	objs, err := render.Objects(instance{name: "x", namespace: "x"}.config(), "adapter", true)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]fingerprint{}
	for _, o := range objs {
		live, err := tb.kube(t).Get(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		if live != nil {
			out[kube.Ref(live)] = fingerprint{uid: string(live.GetUID()), rv: strings.Join(owner.Users(live), ",")}
		}
	}
	return out
}

// TestSharedAdapterIsCounted: two instances in two namespaces share the one
// adapter of the cluster; cleanup of one leaves it (same objects) to the
// other, whose HPA keeps its metric; the last one deletes it.
func TestSharedAdapterIsCounted(t *testing.T) {
	alpha := newInstance(t, "alpha2", "alpha2-ns")
	beta := alpha.another("beta2", "beta2-ns")
	t.Cleanup(func() { kubeRun(t, beta, tidyKube...); kubeRun(t, alpha, tidyKube...) })
	upKube(t, alpha)
	upKube(t, beta)
	both := adapterObjects(t, alpha.tb)
	if len(both) != 13 {
		t.Fatalf("%d adapter objects, want 13", len(both))
	}
	for ref, fp := range both {
		if fp.rv != "alpha2,beta2" {
			t.Errorf("%s users %q, want alpha2,beta2", ref, fp.rv)
		}
	}
	out := mustRun(t, beta, append(cleanupKube, "-o", "json")...)
	if !strings.Contains(out, "still used by alpha2") {
		t.Errorf("cleanup of beta does not say the adapter stays for alpha2:\n%s", out)
	}
	after := adapterObjects(t, alpha.tb)
	for ref, fp := range both {
		if after[ref].uid != fp.uid || after[ref].rv != "alpha2" {
			t.Errorf("%s after beta's cleanup: %+v (was %+v), want the same object used by alpha2 alone", ref, after[ref], fp)
		}
	}
	// alpha's HPA still finds its metric through the adapter.
	mustRun(t, alpha, "hpa")
	mustRun(t, alpha, cleanupKube...)
	if left := adapterObjects(t, alpha.tb); len(left) != 0 {
		t.Errorf("the last instance's cleanup left the adapter: %v", left)
	}
}

// TestDryRunCleanupPrintsDeletePlan: cleanup --dry-run reads the cluster and
// says, object by object, what cleanup would delete or keep and why; it
// changes nothing.
func TestDryRunCleanupPrintsDeletePlan(t *testing.T) {
	inst := newInstance(t, "dryclean", "dryclean-ns")
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	upKube(t, inst)
	f := newForeignSet(t, inst.tb)
	createForeign(t, inst.tb, f, configMap(inst.namespace, "theirs"))
	before := ownedObjects(t, inst)
	out := mustRun(t, inst, append(cleanupKube, "--dry-run", "-o", "json")...)
	if after := ownedObjects(t, inst); !equalMaps(before, after) {
		t.Errorf("cleanup --dry-run changed objects")
	}
	f.unchanged("after cleanup --dry-run")
	var doc planJSON
	if err := json.Unmarshal([]byte(out), &doc); err != nil || !doc.DryRun {
		t.Fatalf("%v\n%s", err, out)
	}
	actions := map[string]string{}
	for _, s := range doc.Steps {
		for _, r := range s.Removals {
			actions[r.Object] = r.Action + " " + r.Reason
		}
	}
	for obj, want := range map[string]string{
		"HorizontalPodAutoscaler dryclean-ns/gemma-server-hpa":         step.RemoveDelete,
		"Deployment custom-metrics/custom-metrics-stackdriver-adapter": step.RemoveDelete,
		"Secret dryclean-ns/hf-secret":                                 step.RemoveDelete,
		"Namespace dryclean-ns":                                        step.RemoveKeep + " holds objects vllm-hpa did not create or does not delete now: ConfigMap theirs",
		"Namespace custom-metrics":                                     step.RemoveDelete,
	} {
		if got := strings.TrimSpace(actions[obj]); got != want {
			t.Errorf("%s: %q, want %q", obj, got, want)
		}
	}
	// The text form names the same.
	text := mustRun(t, inst, append(cleanupKube, "--dry-run")...)
	if !strings.Contains(text, "keep") || !strings.Contains(text, "ConfigMap theirs") || !strings.Contains(text, "delete             Deployment dryclean-ns/vllm-gemma-deployment") {
		t.Errorf("text delete plan:\n%s", text)
	}
}

// TestRenderedSecretNeverOverwritesToken: `render deploy | kubectl apply
// -f -` (the README's pipe) leaves the real token as it is, because render
// leaves the Secret out; a Secret holding a placeholder fails verify.
func TestRenderedSecretNeverOverwritesToken(t *testing.T) {
	ctx := context.Background()
	inst := newInstance(t, "piped", "piped-ns")
	cp := inst.tb.cp
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	mustRun(t, inst, "deploy")
	rendered := mustRun(t, inst, "render", "deploy")
	kubectl := exec.Command(filepath.Join(localcluster.BinDir(), "kubectl"), "--kubeconfig", cp.Kubeconfig, "apply", "-f", "-")
	kubectl.Stdin = strings.NewReader(rendered)
	kubectl.Env = append(os.Environ(), "KUBECACHEDIR="+t.TempDir())
	if out, err := kubectl.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply of the rendered objects: %v\n%s", err, out)
	}
	s, err := cp.Client.CoreV1().Secrets(inst.namespace).Get(ctx, "hf-secret", metav1.GetOptions{})
	if err != nil || string(s.Data["hf_token"]) != "hf_testTOKEN" {
		t.Fatalf("the token Secret changed under kubectl apply of render's output: %v %q", err, s.Data["hf_token"])
	}
	// An old render's placeholder, applied by hand over the token.
	s.Data["hf_token"] = []byte(render.Redacted)
	if _, err := cp.Client.CoreV1().Secrets(inst.namespace).Update(ctx, s, metav1.UpdateOptions{FieldManager: "kubectl-client-side-apply"}); err != nil {
		t.Fatal(err)
	}
	g := startGCP(t)
	sim := httptest.NewServer(vllmsim.New(vllmsim.DefaultConfig()).Handler())
	defer sim.Close()
	code, out, _ := gcpRun(t, g, inst, "verify", "-o", "json", "--endpoint", sim.URL)
	if code != exitcode.CheckFailed || !strings.Contains(out, `"reason": "Placeholder"`) {
		t.Errorf("verify with a placeholder in the Secret: exit %d, want %d with reason Placeholder:\n%s", code, exitcode.CheckFailed, out)
	}
}

// TestNamespaceBeingDeletedSaysWhy: deploy into the instance's namespace
// while it is still being deleted (held here by a finalizer; on GKE, as
// often, by an aggregated API that does not answer the namespace
// controller's discovery) waits up to timeouts.cleanup and says what holds
// it; once it is gone, deploy creates it again.
func TestNamespaceBeingDeletedSaysWhy(t *testing.T) {
	inst := newInstance(t, "nsheld", "nsheld-ns")
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	ctx := context.Background()
	namespaces := inst.tb.cp.Client.CoreV1().Namespaces()
	held := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: inst.namespace, Finalizers: []string{"example.com/hold"}}}
	if _, err := namespaces.Create(ctx, held, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := namespaces.Delete(ctx, inst.namespace, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := kubeRunEnv(t, inst, map[string]string{"VLLM_HPA_TIMEOUTS_CLEANUP": "3s"}, "deploy")
	if code != exitcode.Timeout || !strings.Contains(errOut, "namespace nsheld-ns is being deleted (finalizers: example.com/hold)") {
		t.Errorf("deploy into a namespace held in deletion: exit %d, want %d and the finalizer named:\n%s", code, exitcode.Timeout, errOut)
	}
	ns, err := namespaces.Get(ctx, inst.namespace, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns.Finalizers = nil
	if _, err := namespaces.Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	mustRun(t, inst, "deploy")
	if ns, err := namespaces.Get(ctx, inst.namespace, metav1.GetOptions{}); err != nil || ns.DeletionTimestamp != nil || ns.Labels[owner.ManagedByLabel] != owner.ManagedByValue {
		t.Errorf("deploy did not create the namespace again as its own: %v %+v", err, ns)
	}
}

// A Deployment of ours held in deletion (a finalizer someone else's
// controller never removes): deploy waits for it rather than writing to
// an object on its way out, names the object and what holds it when its
// timeout passes (exit 4), and creates it again as its own once it is gone.
func TestDeploymentBeingDeletedSaysWhy(t *testing.T) {
	inst := newInstance(t, "depheld", "depheld-ns")
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	ctx := context.Background()
	mustRun(t, inst, "deploy")
	deployments := inst.tb.cp.Client.AppsV1().Deployments(inst.namespace)
	const name = "vllm-gemma-deployment"
	d, err := deployments.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Finalizers = append(d.Finalizers, "example.com/hold")
	if _, err := deployments.Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := deployments.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := kubeRunEnv(t, inst, map[string]string{"VLLM_HPA_TIMEOUTS_DEPLOY": "3s"}, "deploy")
	if code != exitcode.Timeout || !strings.Contains(errOut, "Deployment depheld-ns/"+name+" is being deleted") || !strings.Contains(errOut, "example.com/hold") {
		t.Errorf("deploy over a Deployment held in deletion: exit %d, want %d, the object and its finalizer named:\n%s", code, exitcode.Timeout, errOut)
	}
	if d, err = deployments.Get(ctx, name, metav1.GetOptions{}); err != nil || d.DeletionTimestamp == nil || d.UID == "" {
		t.Fatalf("deploy touched the Deployment being deleted: %v %+v", err, d)
	}
	d.Finalizers = nil
	if _, err := deployments.Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	mustRun(t, inst, "deploy")
	if again, err := deployments.Get(ctx, name, metav1.GetOptions{}); err != nil || again.DeletionTimestamp != nil || again.UID == d.UID || again.Labels[owner.ManagedByLabel] != owner.ManagedByValue {
		t.Errorf("deploy did not create the Deployment again as its own: %v %+v", err, again)
	}
}
