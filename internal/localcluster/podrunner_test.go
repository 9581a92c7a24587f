package localcluster_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/localcluster"
)

// GPU pods beyond the first node's GPUs wait for nodes the cluster
// autoscaler adds: the scheduler's FailedScheduling, the autoscaler's
// TriggeredScaleUp, then NotTriggerScaleUp at the pool's maximum; a node
// registers NotReady before it is Ready, and a started pod is Ready only
// once its readiness probe passes.
func TestPodRunnerProvisionsGPUNodes(t *testing.T) {
	var healthy atomic.Bool
	cp := localcluster.StartForTests(t, localcluster.Options{
		RunPods: true, PodStartDelay: 100 * time.Millisecond,
		PodReady:       func(*corev1.Pod) bool { return healthy.Load() },
		PodProbePeriod: 100 * time.Millisecond,
		GPUNodes:       localcluster.GPUNodes{GPUs: 1, Provisioning: 2 * time.Second, Max: 3},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := cp.Client

	gpu := corev1.ResourceList{localcluster.GPUResource: resource.MustParse("1")}
	for i := 1; i <= 4; i++ {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("vllm-%d", i), Namespace: "default"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "vllm", Image: "vllm/vllm-openai",
				Resources: corev1.ResourceRequirements{Limits: gpu, Requests: gpu}}}},
		}
		if _, err := c.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// One at a time, as the ReplicaSet controller's burst is seen.
		waitFor(t, ctx, fmt.Sprintf("vllm-%d bound or unschedulable", i), func() bool {
			p, err := c.CoreV1().Pods("default").Get(ctx, pod.Name, metav1.GetOptions{})
			return err == nil && (p.Spec.NodeName != "" || len(reasons(ctx, c, pod.Name)) >= 2)
		})
	}
	for name, want := range map[string][]string{
		"vllm-2": {"FailedScheduling", "TriggeredScaleUp"},
		"vllm-3": {"FailedScheduling", "TriggeredScaleUp"},
		"vllm-4": {"FailedScheduling", "NotTriggerScaleUp"},
	} {
		got := reasons(ctx, c, name)
		for _, w := range want {
			if !got[w] {
				t.Errorf("%s: no %s event (got %v)", name, w, got)
			}
		}
	}

	// The two nodes come; vllm-2 and vllm-3 are scheduled on them, vllm-4
	// stays unschedulable at the pool's maximum.
	waitFor(t, ctx, "vllm-2 and vllm-3 scheduled on new nodes", func() bool {
		n := 0
		for _, name := range []string{"vllm-2", "vllm-3"} {
			if p, err := c.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{}); err == nil && p.Spec.NodeName != "" && p.Spec.NodeName != localcluster.NodeName {
				n++
			}
		}
		return n == 2
	})
	nodes, err := c.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 3 {
		t.Fatalf("%d nodes, want 3 (%v)", len(nodes.Items), err)
	}
	for _, n := range nodes.Items {
		gpus := n.Status.Allocatable[localcluster.GPUResource]
		if len(n.Spec.Taints) > 0 || gpus.Value() != 1 {
			t.Errorf("node %s Ready with taints %v and %s GPUs, want none and 1", n.Name, n.Spec.Taints, gpus.String())
		}
	}
	on := map[string]string{}
	for _, name := range []string{"vllm-1", "vllm-2", "vllm-3"} {
		p, _ := c.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if other, ok := on[p.Spec.NodeName]; ok {
			t.Errorf("%s and %s share node %s of 1 GPU", other, name, p.Spec.NodeName)
		}
		on[p.Spec.NodeName] = name
	}
	if p, _ := c.CoreV1().Pods("default").Get(ctx, "vllm-4", metav1.GetOptions{}); p.Spec.NodeName != "" {
		t.Errorf("vllm-4 bound to %s beyond the pool's maximum", p.Spec.NodeName)
	}

	// A pod deleted at once frees its GPU: the waiting pod takes it.
	zero := int64(0)
	freed, _ := c.CoreV1().Pods("default").Get(ctx, "vllm-2", metav1.GetOptions{})
	if err := c.CoreV1().Pods("default").Delete(ctx, "vllm-2", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "vllm-4 scheduled on the freed node", func() bool {
		p, err := c.CoreV1().Pods("default").Get(ctx, "vllm-4", metav1.GetOptions{})
		return err == nil && p.Spec.NodeName == freed.Spec.NodeName
	})

	// Started, not Ready, until the probe passes.
	waitFor(t, ctx, "vllm-1 running", func() bool {
		p, err := c.CoreV1().Pods("default").Get(ctx, "vllm-1", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning
	})
	if p, _ := c.CoreV1().Pods("default").Get(ctx, "vllm-1", metav1.GetOptions{}); kube.PodReady(p) {
		t.Error("vllm-1 Ready before its probe passed")
	}
	healthy.Store(true)
	waitFor(t, ctx, "vllm-1 Ready once its probe passes", func() bool {
		p, err := c.CoreV1().Pods("default").Get(ctx, "vllm-1", metav1.GetOptions{})
		return err == nil && kube.PodReady(p)
	})
}

func reasons(ctx context.Context, c kubernetes.Interface, pod string) map[string]bool {
	evs, err := c.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("involvedObject.name", pod).String()})
	out := map[string]bool{}
	if err == nil {
		for _, e := range evs.Items {
			out[e.Reason] = true
		}
	}
	return out
}

// waitFor polls cond until it holds, failing t when ctx ends first.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
