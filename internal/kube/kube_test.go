package kube_test

import (
	"context"
	"errors"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/vllm-hpa/vllm-hpa/internal/environ"
	"github.com/vllm-hpa/vllm-hpa/internal/gmp"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/localcluster"
)

// One control plane, without the PodMonitoring CRD, reached through a
// proxy that counts requests.
func start(t *testing.T) (*localcluster.ControlPlane, *localcluster.FaultProxy, func() *kube.Client) {
	t.Helper()
	cp := localcluster.StartForTests(t, localcluster.Options{})
	fp, err := cp.StartFaultProxy(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fp.Close)
	cfg, err := kube.RESTConfigFromKubeconfig(kube.KubeconfigOptions{Path: fp.Kubeconfig})
	if err != nil {
		t.Fatal(err)
	}
	// Each client stands for one vllm-hpa process.
	return cp, fp, func() *kube.Client {
		k, err := kube.New(cfg, environ.New(map[string]string{"KUBECACHEDIR": cp.Dir + "/kubecache"}, ""))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
}

func object(apiVersion, kind, ns, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

var podMonitoring = object("monitoring.googleapis.com/v1", "PodMonitoring", "default", "pm")

// Discovery is read once per server and kept on disk: later clients make
// no discovery requests, and still see a CRD installed or removed since.
func TestDiscoveryCache(t *testing.T) {
	cp, fp, newClient := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	deployments := object("apps/v1", "Deployment", "default", "d")
	requests := func(what string, k *kube.Client, obj *unstructured.Unstructured) (int64, error) {
		before := fp.Requests.Load()
		_, err := k.List(ctx, obj, "")
		n := fp.Requests.Load() - before
		t.Logf("%s: %d requests, error %v", what, n, err)
		return n, err
	}

	var nm *kube.NoMatchError
	if _, err := requests("cold cache, PodMonitoring", newClient(), podMonitoring); !errors.As(err, &nm) {
		t.Fatalf("PodMonitoring without its CRD: %v, want a NoMatchError", err)
	}
	if n, err := requests("warm cache, Deployment", newClient(), deployments); err != nil || n != 1 {
		t.Errorf("listing Deployments with a warm cache: %d requests (%v), want 1 (no discovery)", n, err)
	}

	if err := cp.InstallCRD(ctx, gmp.CRD); err != nil {
		t.Fatal(err)
	}
	if _, err := requests("CRD installed since", newClient(), podMonitoring); err != nil {
		t.Fatalf("PodMonitoring after its CRD was installed: %v", err)
	}
	if n, err := requests("warm cache, PodMonitoring", newClient(), podMonitoring); err != nil || n != 1 {
		t.Errorf("listing PodMonitorings with a warm cache: %d requests (%v), want 1", n, err)
	}

	crds := cp.Dynamic.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	if err := crds.Delete(ctx, "podmonitorings.monitoring.googleapis.com", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := cp.Dynamic.Resource(gmp.Resource).Namespace("default").List(ctx, metav1.ListOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the CRD was not removed")
		case <-time.After(100 * time.Millisecond):
		}
	}
	if _, err := requests("CRD removed since", newClient(), podMonitoring); !errors.As(err, &nm) {
		t.Errorf("PodMonitoring after its CRD was removed: %v, want a NoMatchError", err)
	}
}

// Apply says what it did from the server's answer and the state read
// before, and a missing namespace is recognisable.
func TestApplyActions(t *testing.T) {
	_, fp, newClient := start(t)
	k := newClient()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cm := object("v1", "ConfigMap", "default", "actions")
	cm.Object["data"] = map[string]any{"a": "1"}
	if _, err := k.GVR(cm); err != nil { // discovery, before counting
		t.Fatal(err)
	}

	apply := func(obj, live *unstructured.Unstructured) (*unstructured.Unstructured, kube.Action) {
		t.Helper()
		before := fp.Requests.Load()
		out, action, err := k.Apply(ctx, obj, live, kube.ApplyOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n := fp.Requests.Load() - before; n != 1 {
			t.Errorf("apply made %d requests, want 1", n)
		}
		return out, action
	}
	live, action := apply(cm, nil)
	if action != kube.Created {
		t.Errorf("first apply: %s, want created", action)
	}
	live, action = apply(cm, live)
	if action != kube.Unchanged {
		t.Errorf("same object again: %s, want unchanged", action)
	}
	// An object that exists but was not read before (another owner's)
	// is not reported as created.
	if _, action = apply(cm, nil); action != kube.Configured {
		t.Errorf("existing object not read before: %s, want configured", action)
	}
	cm.Object["data"] = map[string]any{"a": "2"}
	if _, action = apply(cm, live); action != kube.Configured {
		t.Errorf("changed object: %s, want configured", action)
	}

	elsewhere := object("v1", "ConfigMap", "no-such-namespace", "actions")
	_, _, err := k.Apply(ctx, elsewhere, nil, kube.ApplyOptions{})
	if !kube.IsNamespaceMissing(err, "no-such-namespace") {
		t.Errorf("apply into a missing namespace: %v, want it recognised as such", err)
	}
	if kube.IsNamespaceMissing(err, "default") {
		t.Error("a missing namespace recognised under another name")
	}
}

// Until judges the initial state (even an empty one) and every change, ends
// on a timeout naming the last reason, and needs no request at all when the
// objects an apply returned already meet the condition.
func TestUntil(t *testing.T) {
	_, fp, newClient := start(t)
	k := newClient()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cms := k.Dynamic.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}).Namespace("default")
	w := kube.Watch{Resource: cms, Name: "until"}
	valueIs := func(want string) kube.Condition {
		return func(objs []*unstructured.Unstructured) (bool, string, error) {
			if len(objs) == 0 {
				return false, "absent", nil
			}
			v, _, _ := unstructured.NestedString(objs[0].Object, "data", "a")
			return v == want, "a=" + v, nil
		}
	}

	absent := func(objs []*unstructured.Unstructured) (bool, string, error) { return len(objs) == 0, "present", nil }
	if err := kube.Until(ctx, "absence", w, absent, nil); err != nil {
		t.Errorf("waiting for an absent object: %v", err)
	}

	reasons := make(chan string, 10)
	done := make(chan error, 1)
	go func() {
		done <- kube.Until(ctx, "a=2", w, valueIs("2"), func(r string) { reasons <- r })
	}()
	// The initial state is judged before anything changes.
	if r := <-reasons; r != "absent" {
		t.Errorf("first progress %q, want the initial state (absent)", r)
	}
	cm := object("v1", "ConfigMap", "default", "until")
	for _, v := range []string{"1", "2"} {
		cm.Object["data"] = map[string]any{"a": v}
		if _, _, err := k.Apply(ctx, cm, nil, kube.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("waiting for a=2: %v", err)
	}

	short, stop := context.WithTimeout(ctx, 500*time.Millisecond)
	defer stop()
	err := kube.Until(short, "a=3", w, valueIs("3"), nil)
	var te *kube.TimeoutError
	if !errors.As(err, &te) || te.LastReason != "a=2" || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timeout: %v, want a TimeoutError naming a=2", err)
	}

	live, err := cms.Get(ctx, "until", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := fp.Requests.Load()
	w.Seen = []*unstructured.Unstructured{live}
	if err := kube.Until(ctx, "a=2", w, valueIs("2"), nil); err != nil {
		t.Errorf("waiting on what was seen: %v", err)
	}
	if n := fp.Requests.Load() - before; n != 0 {
		t.Errorf("a condition met by the seen objects made %d requests, want 0", n)
	}
}
