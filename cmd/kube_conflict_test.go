package cmd

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gmp"
	"github.com/vllm-hpa/vllm-hpa/internal/localcluster"
	"github.com/vllm-hpa/vllm-hpa/internal/owner"
)

var gmpGVR = gmp.Resource

var apiServicesGVR = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}

func TestAPIServiceOfAnotherProvider(t *testing.T) {
	inst := newInstance(t, "conflict", "conflict-ns")
	cp := inst.tb.cp
	ctx := context.Background()
	// A working prometheus-adapter: its pods, its Service, and the
	// APIService that sends custom.metrics.k8s.io/v1beta1 to it.
	other := &localcluster.FakeMetrics{Client: cp.Client}
	other.Set(runningMetric, "0")
	srv := other.Server()
	defer srv.Close()
	cp.ServeService("monitoring", "prometheus-adapter", 443, strings.TrimPrefix(srv.URL, "https://"))
	f := newForeignSet(t, inst.tb)
	createForeign(t, inst.tb, nil, namespaceObj("monitoring"))
	labels := map[string]any{"app": "prometheus-adapter"}
	createForeign(t, inst.tb, f, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": "prometheus-adapter", "namespace": "monitoring"},
		"spec": map[string]any{"selector": map[string]any{"matchLabels": labels}, "template": map[string]any{
			"metadata": map[string]any{"labels": labels},
			"spec": map[string]any{"containers": []any{map[string]any{"name": "adapter", "image": "registry.k8s.io/prometheus-adapter/prometheus-adapter:v0.12.0",
				"ports": []any{map[string]any{"name": "https", "containerPort": int64(443)}}}}},
		}},
	}})
	createForeign(t, inst.tb, f, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "prometheus-adapter", "namespace": "monitoring"},
		"spec": map[string]any{"selector": labels, "ports": []any{map[string]any{"name": "https", "port": int64(443), "targetPort": int64(443)}}},
	}})
	foreign := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": "v1beta1.custom.metrics.k8s.io"},
		"spec": map[string]any{
			"group": "custom.metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": int64(100), "versionPriority": int64(100),
			"insecureSkipTLSVerify": true,
			"service":               map[string]any{"namespace": "monitoring", "name": "prometheus-adapter", "port": int64(443)},
		},
	}}
	createForeign(t, inst.tb, nil, foreign)
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	code, _, errOut := kubeRun(t, inst, "adapter")
	if code != exitcode.Conflict {
		t.Errorf("exit %d, want %d", code, exitcode.Conflict)
	}
	if !strings.Contains(errOut, "APIService v1beta1.custom.metrics.k8s.io") || !strings.Contains(errOut, "it serves Service monitoring/prometheus-adapter, another metrics provider's installation") || !strings.Contains(errOut, "--adopt") {
		t.Errorf("stderr does not report the other provider:\n%s", errOut)
	}
	// Reported before anything was written.
	if _, err := cp.Client.AppsV1().Deployments("custom-metrics").Get(ctx, "custom-metrics-stackdriver-adapter", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the adapter Deployment was written despite the conflict: %v", err)
	}
	if _, err := cp.Client.CoreV1().Namespaces().Get(ctx, "custom-metrics", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the adapter namespace was written despite the conflict: %v", err)
	}
	got, _ := cp.Dynamic.Resource(apiServicesGVR).Get(ctx, "v1beta1.custom.metrics.k8s.io", metav1.GetOptions{})
	if name, _, _ := unstructured.NestedString(got.Object, "spec", "service", "name"); name != "prometheus-adapter" {
		t.Errorf("the other provider's APIService was changed: service %q", name)
	}

	// Adopting it is not enough: it sends to another Service.
	code, _, errOut = kubeRun(t, inst, "adapter", "--adopt")
	if code != exitcode.Conflict || !strings.Contains(errOut, "is served by Service monitoring/prometheus-adapter") || !strings.Contains(errOut, "--force-conflicts") {
		t.Errorf("adapter --adopt over another provider: exit %d\n%s", code, errOut)
	}
	mustRun(t, inst, "adapter", "--adopt", "--force-conflicts")
	got, _ = cp.Dynamic.Resource(apiServicesGVR).Get(ctx, "v1beta1.custom.metrics.k8s.io", metav1.GetOptions{})
	if name, _, _ := unstructured.NestedString(got.Object, "spec", "service", "name"); name != "custom-metrics-stackdriver-adapter" {
		t.Errorf("--adopt --force-conflicts did not take the APIService over: service %q", name)
	}
	// It was adopted, not created: cleanup gives it back as it was, and
	// the other provider serves it again.
	mustRun(t, inst, cleanupKube...)
	after, err := cp.Dynamic.Resource(apiServicesGVR).Get(ctx, "v1beta1.custom.metrics.k8s.io", metav1.GetOptions{})
	if err != nil || after.GetUID() != got.GetUID() || after.GetLabels()[owner.ManagedByLabel] != "" || len(after.GetAnnotations()) != 0 {
		t.Fatalf("cleanup did not release the adopted APIService: %v %v", err, after)
	}
	name, _, _ := unstructured.NestedString(after.Object, "spec", "service", "name")
	ns, _, _ := unstructured.NestedString(after.Object, "spec", "service", "namespace")
	if name != "prometheus-adapter" || ns != "monitoring" {
		t.Errorf("released APIService sends to %s/%s, not to monitoring/prometheus-adapter again", ns, name)
	}
	f.unchanged("after adopt and cleanup")
}

func TestFieldConflictWithAnotherManager(t *testing.T) {
	inst := newInstance(t, "fields", "fields-ns")
	cp := inst.tb.cp
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	mustRun(t, inst, "deploy")
	ctx := context.Background()
	d, err := cp.Client.AppsV1().Deployments(inst.namespace).Get(ctx, "vllm-gemma-deployment", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Spec.Template.Spec.Containers[0].Image = "vllm/vllm-openai:v0.10.0"
	if _, err := cp.Client.AppsV1().Deployments(inst.namespace).Update(ctx, d, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := kubeRun(t, inst, "deploy")
	if code != exitcode.Conflict {
		t.Errorf("exit %d, want %d", code, exitcode.Conflict)
	}
	for _, want := range []string{`.spec.template.spec.containers[name="inference-server"].image`, `"kubectl-edit"`, "--force-conflicts"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("conflict error lacks %s:\n%s", want, errOut)
		}
	}
	mustRun(t, inst, "deploy", "--force-conflicts")
	d, _ = cp.Client.AppsV1().Deployments(inst.namespace).Get(ctx, "vllm-gemma-deployment", metav1.GetOptions{})
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "vllm/vllm-openai:v0.11.0" {
		t.Errorf("--force-conflicts left image %s", img)
	}
}

func TestDeployExplainsWhyNotReady(t *testing.T) {
	inst := newInstance(t, "diag", "diag-ns")
	cp := inst.tb.cp
	cp.Pods.Hold = func(p *corev1.Pod) (string, string) {
		if p.Namespace == inst.namespace {
			return "ImagePullBackOff", `Back-off pulling image "vllm/vllm-openai:v0.11.0"`
		}
		return "", ""
	}
	t.Cleanup(func() {
		cp.Pods.Hold = nil
		kubeRun(t, inst, tidyKube...)
	})
	if code, _, errOut := kubeRun(t, inst, "deploy", "--timeout", "3s"); code != exitcode.Timeout {
		t.Errorf("exit %d, want %d (timeout)\n%s", code, exitcode.Timeout, errOut)
	}
	// On a loaded machine the pod may not have its status within the
	// first run's 3 s: wait for the state, then run again (as a user
	// would), which must explain it.
	ctx := context.Background()
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := cp.Client.CoreV1().Pods(inst.namespace).List(ctx, metav1.ListOptions{})
		if err != nil || len(pods.Items) != 1 {
			return false, nil
		}
		for _, c := range pods.Items[0].Status.ContainerStatuses {
			if c.State.Waiting != nil && c.State.Waiting.Reason == "ImagePullBackOff" {
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		t.Fatalf("the held pod never showed ImagePullBackOff: %v", err)
	}
	code, _, errOut := kubeRun(t, inst, "deploy", "--timeout", "3s")
	if code != exitcode.Timeout {
		t.Errorf("exit %d, want %d (timeout)", code, exitcode.Timeout)
	}
	for _, want := range []string{"waiting: Deployment diag-ns/vllm-gemma-deployment", "1 pod ImagePullBackOff: Back-off pulling image", "check workload.image"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
}

func TestObjectDeletedWhileWaiting(t *testing.T) {
	inst := newInstance(t, "gone", "gone-ns")
	cp := inst.tb.cp
	cp.Operator.Decide(func(*unstructured.Unstructured) (string, string, string, bool) { return "", "", "", true })
	t.Cleanup(func() {
		cp.Operator.Decide(nil)
		kubeRun(t, inst, tidyKube...)
	})
	mustRun(t, inst, "deploy")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		pms := cp.Dynamic.Resource(gmp.Resource).Namespace(inst.namespace)
		for ctx.Err() == nil {
			if err := pms.Delete(ctx, "gemma-pod-monitoring", metav1.DeleteOptions{}); err == nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	code, _, errOut := kubeRun(t, inst, "monitor", "--timeout", "20s")
	if code != exitcode.Failure || !strings.Contains(errOut, "was deleted while waiting") {
		t.Errorf("exit %d, want %d with 'deleted while waiting':\n%s", code, exitcode.Failure, errOut)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	inst := newInstance(t, "dry", "dry-ns")
	cp := inst.tb.cp
	mustRun(t, inst, "up", "--dry-run")
	mustRun(t, inst, "cleanup", "--dry-run", "--skip", "identity")
	if left := ownedObjects(t, inst); len(left) != 0 {
		t.Errorf("dry run created %v", keys(left))
	}
	if _, err := cp.Client.CoreV1().Namespaces().Get(context.Background(), inst.namespace, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("dry run created the namespace: %v", err)
	}
}
