package cmd

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/kube"
)

// The replica count is the HPA's (or whoever scaled the Deployment): a
// re-run after the HPA scaled up, or after kubectl scale, exits 0 and
// leaves the count as it found it, owning none of it.
func TestRerunLeavesReplicas(t *testing.T) {
	inst := newInstance(t, "reps", "reps-ns")
	t.Cleanup(func() {
		inst.tb.metrics.Set(runningMetric, "0")
		kubeRun(t, inst, tidyKube...)
	})
	k := inst.tb.cp.Client.AppsV1().Deployments(inst.namespace)
	ctx := context.Background()
	replicas := func() int32 {
		d, err := k.Get(ctx, "vllm-gemma-deployment", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return *d.Spec.Replicas
	}
	mustRun(t, inst, "up", "--skip", "identity")

	// Three times the target per pod: the HPA scales to 3.
	inst.tb.metrics.Set(runningMetric, "12")
	for deadline := time.Now().Add(3 * time.Minute); replicas() != 3; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the HPA did not scale to 3 (at %d)", replicas())
		}
	}
	// At the target per pod, the HPA holds 3 (the fake serves every pod
	// the same value: 12 would take it on to its maximum).
	inst.tb.metrics.Set(runningMetric, "4")
	mustRun(t, inst, "up", "--skip", "identity")
	if n := replicas(); n != 3 {
		t.Errorf("up scaled the Deployment to %d", n)
	}
	live, err := inst.tb.kube(t).Dynamic.Resource(kube.DeploymentsGVR).Namespace(inst.namespace).Get(ctx, "vllm-gemma-deployment", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if kube.AppliedByUs(live, "spec", "replicas") {
		t.Error("vllm-hpa owns spec.replicas after the HPA scaled")
	}

	// kubectl scale, with no HPA left: the same.
	mustRun(t, inst, "cleanup", "hpa")
	s, err := k.GetScale(ctx, "vllm-gemma-deployment", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.Replicas = 2
	if _, err := k.UpdateScale(ctx, "vllm-gemma-deployment", s, metav1.UpdateOptions{FieldManager: "kubectl"}); err != nil {
		t.Fatal(err)
	}
	mustRun(t, inst, "deploy")
	if n := replicas(); n != 2 {
		t.Errorf("deploy scaled the Deployment to %d after kubectl scale to 2", n)
	}
}
