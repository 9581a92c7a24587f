package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/environ"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/owner"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
)

func TestMain(m *testing.M) {
	if os.Getenv(cliEnv) != "" {
		os.Exit(Main(os.Args[1:]))
	}
	// What the Google libraries read from the process itself: no user's
	// credentials, so that "no credentials" is found at once and no
	// request ever leaves loopback.
	home, _ := os.MkdirTemp("", "vllm-hpa-test-home-")
	os.Setenv("HOME", home)
	// A credentials file that does not exist ends the lookup of
	// Application Default Credentials before it asks a metadata server.
	os.Setenv("GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(home, "no-credentials.json"))
	// Any request for an address that is not loopback (a Google endpoint a
	// test forgot to point at a fake) goes to a proxy that does not exist
	// and fails at once; loopback is never proxied.
	for _, k := range []string{"HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"} {
		os.Setenv(k, "http://127.0.0.1:9")
	}
	os.Setenv("NO_PROXY", "127.0.0.1,localhost,::1")
	code := m.Run()
	stopTestbeds()
	os.RemoveAll(home)
	os.Exit(code)
}

// kubeRun runs vllm-hpa against inst's testbed as inst.
func kubeRun(t *testing.T, inst instance, args ...string) (int, string, string) {
	t.Helper()
	return kubeRunEnv(t, inst, nil, args...)
}

// kubeRunEnv is kubeRun with more environment variables.
func kubeRunEnv(t *testing.T, inst instance, extra map[string]string, args ...string) (int, string, string) {
	t.Helper()
	return kubeRunCtx(t, context.Background(), inst, extra, args...)
}

// kubeRunCtx is kubeRunEnv with a context the test may cancel, as SIGINT
// does.
func kubeRunCtx(t *testing.T, ctx context.Context, inst instance, extra map[string]string, args ...string) (int, string, string) {
	t.Helper()
	env := inst.tb.env()
	for k, v := range map[string]string{
		"HF_TOKEN":                    "hf_testTOKEN",
		"VLLM_HPA_INSTANCE":           inst.name,
		"VLLM_HPA_WORKLOAD_NAMESPACE": inst.namespace,
		"VLLM_HPA_TIMEOUTS_DEPLOY":    "60s",
		"VLLM_HPA_TIMEOUTS_ADAPTER":   "60s",
		"VLLM_HPA_TIMEOUTS_MONITOR":   "30s",
		"VLLM_HPA_TIMEOUTS_HPA":       "60s",
		"VLLM_HPA_TIMEOUTS_CLEANUP":   "60s",
	} {
		env[k] = v
	}
	for k, v := range extra {
		env[k] = v
	}
	// The project first, so that a test's own --project wins.
	return runCtx(t, ctx, "", env, append([]string{"--project", "my-proj"}, args...)...)
}

func (i instance) config() *config.Config {
	c := config.Default()
	c.Project, c.Instance, c.Workload.Namespace = "my-proj", i.name, i.namespace
	return &c
}

// kubeSteps are the steps that act on Kubernetes alone; cleanupKube
// deletes them.
var (
	kubeSteps   = []string{"deploy", "monitor", "adapter", "hpa"}
	cleanupKube = []string{"cleanup", "hpa", "adapter", "monitor", "deploy"}
	// tidyKube is a test's last cleanup, for the next test on its
	// testbed: the workload namespace goes in the background (its name is
	// the test's own), and the testbed waits for the adapter's, whose
	// name every test uses, before the next test (acquire).
	tidyKube = append(slices.Clone(cleanupKube), "--wait=false")
)

func mustRun(t *testing.T, inst instance, args ...string) string {
	t.Helper()
	code, out, errOut := kubeRun(t, inst, args...)
	if code != 0 {
		t.Fatalf("vllm-hpa %v: exit %d\nstdout:\n%s\nstderr:\n%s", args, code, out, errOut)
	}
	return out
}

func upKube(t *testing.T, inst instance) []runJSON {
	var docs []runJSON
	for _, s := range kubeSteps {
		out := mustRun(t, inst, s, "-o", "json")
		var doc runJSON
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("%s: %v\n%s", s, err, out)
		}
		docs = append(docs, doc)
	}
	return docs
}

// ownedObjects lists every object carrying instance's ownership labels, or
// the label of a shared object it uses, across every listable kind, as
// "Kind ns/name" -> resourceVersion.
func ownedObjects(t *testing.T, inst instance) map[string]string {
	t.Helper()
	ctx := context.Background()
	cp := inst.tb.cp
	lists, err := cp.Client.Discovery().ServerPreferredResources()
	if err != nil {
		t.Logf("discovery (partial): %v", err)
	}
	// One list a type, of everything vllm-hpa labelled: the instance's own
	// objects and the shared ones it uses are picked out here (a selector
	// cannot say "or", and a list a selector costs the API server as much
	// as the whole scan again).
	var selectors []labels.Selector
	for _, sel := range []string{owner.Selector(inst.name), owner.SharedSelector(inst.name)} {
		parsed, err := labels.Parse(sel)
		if err != nil {
			t.Fatal(err)
		}
		selectors = append(selectors, parsed)
	}
	managed := labels.SelectorFromSet(labels.Set{owner.ManagedByLabel: owner.ManagedByValue}).String()
	out := map[string]string{}
	for _, l := range lists {
		gv, _ := schema.ParseGroupVersion(l.GroupVersion)
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || !slices.Contains(r.Verbs, "list") || r.Name == "events" {
				continue
			}
			items, err := cp.Dynamic.Resource(gv.WithResource(r.Name)).List(ctx, metav1.ListOptions{LabelSelector: managed})
			if err != nil {
				continue
			}
			for _, it := range items.Items {
				// Objects derived from ours (EndpointSlices copy the
				// Service's labels) go with their owner.
				set := labels.Set(it.GetLabels())
				if len(it.GetOwnerReferences()) == 0 && slices.ContainsFunc(selectors, func(sel labels.Selector) bool { return sel.Matches(set) }) {
					out[kube.Ref(&it)] = it.GetResourceVersion()
				}
			}
		}
	}
	return out
}

func TestUpTwiceChangesNothing(t *testing.T) {
	inst := newInstance(t, "twice", "twice-ns")
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	first := upKube(t, inst)
	// The namespace is created (it was missing) and every object applied.
	if got := first[0].Steps[0].Actions; len(got) == 0 || got[0] != "Namespace twice-ns created" {
		t.Errorf("deploy did not create the missing namespace first: %v", got)
	}
	before := ownedObjects(t, inst)
	if len(before) != 19 { // 18 objects and the workload namespace
		t.Errorf("%d owned objects after up, want 19: %v", len(before), keys(before))
	}
	second := upKube(t, inst)
	for _, doc := range second {
		for _, s := range doc.Steps {
			for _, a := range s.Actions {
				if !strings.HasSuffix(a, " unchanged") {
					t.Errorf("second run: %s: %s", s.Step, a)
				}
			}
		}
	}
	after := ownedObjects(t, inst)
	if !reflect.DeepEqual(before, after) {
		for k, v := range after {
			if before[k] != v {
				t.Errorf("second run changed %s (resourceVersion %s -> %s)", k, before[k], v)
			}
		}
	}
	// The checks the steps waited for, as the JSON reports them.
	var checks []string
	for _, doc := range first {
		for _, s := range doc.Steps {
			for _, c := range s.Checks {
				if !c.OK {
					t.Errorf("check not ok: %+v", c)
				}
				checks = append(checks, s.Step+": "+c.Check)
			}
		}
	}
	want := []string{"deploy: deployment available", "deploy: service endpoints ready", "monitor: podmonitoring configured",
		"adapter: adapter available", "adapter: apiservice v1beta1.custom.metrics.k8s.io available",
		"adapter: apiservice v1beta2.custom.metrics.k8s.io available", "adapter: apiservice v1beta1.external.metrics.k8s.io available",
		"hpa: hpa scaling active"}
	if strings.Join(checks, "|") != strings.Join(want, "|") {
		t.Errorf("checks = %v\nwant %v", checks, want)
	}
}

// TestStoredMatchesRender: every field vllm-hpa renders is stored as
// rendered; the API server's validation is the judge.
func TestStoredMatchesRender(t *testing.T) {
	inst := newInstance(t, "stored", "stored-ns")
	cp := inst.tb.cp
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	upKube(t, inst)
	k, err := kube.New(cp.Config, environ.New(map[string]string{"KUBECACHEDIR": cp.Dir + "/kubecache"}, ""))
	if err != nil {
		t.Fatal(err)
	}
	cfg := inst.config()
	n := 0
	for _, s := range steps.Rendered() {
		objs, err := render.Objects(cfg, s.Step, s.Shared)
		if err != nil {
			t.Fatal(err)
		}
		for _, obj := range objs {
			live, err := k.Get(context.Background(), obj)
			if err != nil || live == nil {
				t.Fatalf("%s not stored: %v", kube.Ref(obj), err)
			}
			if obj.GetKind() == "Secret" {
				unstructured.RemoveNestedField(obj.Object, "stringData")
				if d, _, _ := unstructured.NestedString(live.Object, "data", "hf_token"); d != "aGZfdGVzdFRPS0VO" {
					t.Errorf("Secret data = %q, want the token", d)
				}
			}
			if diff := subsetDiff(obj.Object, live.Object, ""); diff != "" {
				t.Errorf("%s: stored differs from render: %s", kube.Ref(obj), diff)
			}
			n++
		}
	}
	if n != 18 {
		t.Errorf("compared %d objects, want 18", n)
	}
}

// subsetDiff reports the first field of want that got lacks or changes.
func subsetDiff(want, got any, path string) string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return path + ": not an object"
		}
		for k, v := range w {
			if d := subsetDiff(v, g[k], path+"."+k); d != "" {
				return d
			}
		}
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return fmt.Sprintf("%s: %v stored as %v", path, want, got)
		}
		for i := range w {
			if d := subsetDiff(w[i], g[i], fmt.Sprintf("%s[%d]", path, i)); d != "" {
				return d
			}
		}
	default:
		if fmt.Sprint(want) != fmt.Sprint(got) {
			return fmt.Sprintf("%s: %v stored as %v", path, want, got)
		}
	}
	return ""
}

// cleanup --wait=false deletes as cleanup does and returns once the server
// accepted each deletion: it says so of each object rather than
// "deleted", and an up right after it waits for the namespaces still being
// deleted, then creates them again.
func TestCleanupWithoutWaiting(t *testing.T) {
	inst := newInstance(t, "nowait", "nowait-ns")
	t.Cleanup(func() { kubeRun(t, inst, cleanupKube...) })
	upKube(t, inst)
	out := mustRun(t, inst, append(slices.Clone(tidyKube), "-o", "json")...)
	var doc runJSON
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var actions []string
	for _, s := range doc.Steps {
		actions = append(actions, s.Actions...)
	}
	for _, want := range []string{
		"Namespace custom-metrics deleting (not waited for: --wait=false)",
		"Namespace nowait-ns deleting (not waited for: --wait=false)",
		"Deployment nowait-ns/vllm-gemma-deployment deleting (not waited for: --wait=false)",
	} {
		if !slices.Contains(actions, want) {
			t.Errorf("no action %q: %v", want, actions)
		}
	}
	for _, a := range actions {
		if strings.HasSuffix(a, " deleted") {
			t.Errorf("cleanup --wait=false waited for a deletion: %s", a)
		}
	}
	if left := ownedObjects(t, inst); len(left) > 2 { // at most the two namespaces, on their way out
		t.Errorf("cleanup --wait=false left owned objects: %v", keys(left))
	}
	// Again at once: the namespaces may still be there, being deleted.
	again := upKube(t, inst)
	if got := again[0].Steps[0].Actions; len(got) == 0 || got[0] != "Namespace nowait-ns created" {
		t.Errorf("up after cleanup --wait=false did not create the workload namespace again first: %v", got)
	}
	// Not waiting decides nothing differently: a namespace holding an
	// object vllm-hpa did not create (same name and values as one of
	// ours would have) is kept, the object untouched.
	ctx := context.Background()
	cp := inst.tb.cp
	foreign := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "foreign"}, Data: map[string]string{"k": "v"}}
	if _, err := cp.Client.CoreV1().ConfigMaps(inst.namespace).Create(ctx, foreign, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Client.CoreV1().ConfigMaps(inst.namespace).Delete(ctx, "foreign", metav1.DeleteOptions{}) })
	mustRun(t, inst, tidyKube...)
	if n, err := cp.Client.CoreV1().Namespaces().Get(ctx, inst.namespace, metav1.GetOptions{}); err != nil || n.DeletionTimestamp != nil {
		t.Errorf("cleanup --wait=false deleted a namespace holding a foreign object: %v", err)
	}
	if cm, err := cp.Client.CoreV1().ConfigMaps(inst.namespace).Get(ctx, "foreign", metav1.GetOptions{}); err != nil || cm.Data["k"] != "v" {
		t.Errorf("foreign ConfigMap after cleanup --wait=false: %v %v", cm, err)
	}
}

func TestCleanupDeletesOnlyOwned(t *testing.T) {
	inst := newInstance(t, "clean", "clean-ns")
	cp := inst.tb.cp
	upKube(t, inst)
	ctx := context.Background()
	// Objects vllm-hpa did not create, in both namespaces it uses.
	for _, ns := range []string{"custom-metrics", inst.namespace} {
		if _, err := cp.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "foreign"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	out := mustRun(t, inst, append(cleanupKube, "-o", "json")...)
	// Only the two namespaces that hold foreign objects are left; the
	// shared one no longer counts this instance among its users.
	if left := keys(ownedObjects(t, inst)); strings.Join(left, "|") != "Namespace clean-ns" {
		t.Errorf("cleanup left owned objects: %v", left)
	}
	for _, ns := range []string{"custom-metrics", inst.namespace} {
		if _, err := cp.Client.CoreV1().ConfigMaps(ns).Get(ctx, "foreign", metav1.GetOptions{}); err != nil {
			t.Errorf("foreign ConfigMap in %s: %v", ns, err)
		}
		n, err := cp.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil || n.DeletionTimestamp != nil {
			t.Errorf("namespace %s holding a foreign object was deleted: %v", ns, err)
		}
	}
	if strings.Count(out, "holds objects vllm-hpa did not create or does not delete now: ConfigMap foreign") != 2 {
		t.Errorf("cleanup did not say why the namespaces stay:\n%s", out)
	}
	// A second run succeeds and changes nothing.
	out = mustRun(t, inst, append(cleanupKube, "-o", "json")...)
	var doc runJSON
	json.Unmarshal([]byte(out), &doc)
	for _, s := range doc.Steps {
		for _, a := range s.Actions {
			if strings.HasSuffix(a, " deleted") {
				t.Errorf("second cleanup deleted something: %s", a)
			}
		}
	}
	// With the foreign objects gone, the namespaces vllm-hpa created go too.
	for _, ns := range []string{"custom-metrics", inst.namespace} {
		cp.Client.CoreV1().ConfigMaps(ns).Delete(ctx, "foreign", metav1.DeleteOptions{})
	}
	// The namespaces no longer carry anything owned, so recreate the stack
	// and clean up again: this time they are deleted and waited for.
	upKube(t, inst)
	mustRun(t, inst, cleanupKube...)
	if left := ownedObjects(t, inst); len(left) != 0 {
		t.Errorf("cleanup left owned objects: %v", keys(left))
	}
	for _, ns := range []string{"custom-metrics", inst.namespace} {
		if _, err := cp.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("namespace %s still exists after cleanup: %v", ns, err)
		}
	}
}

func TestKeepWorkload(t *testing.T) {
	inst := newInstance(t, "keep", "keep-ns")
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	upKube(t, inst)
	mustRun(t, inst, append(cleanupKube, "--keep-workload")...)
	left := ownedObjects(t, inst)
	want := []string{"Deployment keep-ns/vllm-gemma-deployment", "Namespace keep-ns", "Secret keep-ns/hf-secret", "Service keep-ns/llm-service"}
	if strings.Join(keys(left), "|") != strings.Join(want, "|") {
		t.Errorf("left after --keep-workload: %v, want %v", keys(left), want)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sortStrings(out)
	return out
}

func TestExitCodeForTimeoutDiffersFromFailure(t *testing.T) {
	inst := newInstance(t, "mon", "mon-ns")
	cp := inst.tb.cp
	t.Cleanup(func() {
		cp.Operator.Decide(nil)
		kubeRun(t, inst, tidyKube...)
	})
	mustRun(t, inst, "deploy")

	// Becomes False: the operator reports a scrape config error.
	cp.Operator.Decide(func(pm *unstructured.Unstructured) (string, string, string, bool) {
		return "False", "ScrapeConfigError", "invalid port", false
	})
	code, _, errOut := kubeRun(t, inst, "monitor")
	if code != exitcode.CheckFailed || !strings.Contains(errOut, "ScrapeConfigError") || !strings.Contains(errOut, "invalid port") {
		t.Errorf("False condition: exit %d, want %d, naming ScrapeConfigError:\n%s", code, exitcode.CheckFailed, errOut)
	}

	// Never observed: the wait times out with its own exit code.
	cp.Operator.Decide(func(*unstructured.Unstructured) (string, string, string, bool) { return "", "", "", true })
	mustRun(t, inst, cleanupKube...) // fresh PodMonitoring, generation 1, no status
	mustRun(t, inst, "deploy")
	code, _, errOut = kubeRun(t, inst, "monitor", "--timeout", "2s")
	if code != exitcode.Timeout || !strings.Contains(errOut, "timed out") {
		t.Errorf("timeout: exit %d, want %d:\n%s", code, exitcode.Timeout, errOut)
	}

	// Becomes True while waiting, after the server has closed the wait's
	// watch at least once (--min-request-timeout=5 closes watches after
	// 5-10s), so the wait must re-list and carry on.
	go func() {
		time.Sleep(11 * time.Second)
		cp.Operator.Decide(nil)
		// Nudge the operator: it reacts to changes of the object.
		u, err := cp.Dynamic.Resource(schema.GroupVersionResource{Group: "monitoring.googleapis.com", Version: "v1", Resource: "podmonitorings"}).Namespace(inst.namespace).Get(context.Background(), "gemma-pod-monitoring", metav1.GetOptions{})
		if err == nil {
			u.SetAnnotations(map[string]string{"nudge": "1"})
			cp.Dynamic.Resource(schema.GroupVersionResource{Group: "monitoring.googleapis.com", Version: "v1", Resource: "podmonitorings"}).Namespace(inst.namespace).Update(context.Background(), u, metav1.UpdateOptions{})
		}
	}()
	mustRun(t, inst, "monitor")
	// Already true: a re-run returns at once with the check passing.
	out := mustRun(t, inst, "monitor", "-o", "json")
	if !strings.Contains(out, `"check": "podmonitoring configured"`) {
		t.Errorf("re-run did not report the check:\n%s", out)
	}
}

func sortStrings(s []string) { sort.Strings(s) }
