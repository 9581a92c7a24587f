package reach_test

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/vllm-hpa/vllm-hpa/internal/reach"
)

func pod(name string, phase corev1.PodPhase, ready, deleting bool) corev1.Pod {
	p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.PodStatus{Phase: phase}}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	if deleting {
		now := metav1.Now()
		p.DeletionTimestamp = &now
	}
	return p
}

func TestChoosePod(t *testing.T) {
	pods := []corev1.Pod{
		pod("c-ready", corev1.PodRunning, true, false),
		pod("a-pending", corev1.PodPending, false, false),
		pod("b-terminating", corev1.PodRunning, true, true),
		pod("d-notready", corev1.PodRunning, false, false),
		pod("e-ready", corev1.PodRunning, true, false),
	}
	got, err := reach.ChoosePod(pods, nil)
	if err != nil || got.Name != "c-ready" {
		t.Fatalf("first choice %v %v, want c-ready", got, err)
	}
	// Its connection broke: move to the other Ready pod.
	got, _ = reach.ChoosePod(pods, map[string]bool{"c-ready": true})
	if got.Name != "e-ready" {
		t.Errorf("re-choice %s, want e-ready", got.Name)
	}
	// Every Ready pod broke once: try them again rather than give up.
	got, _ = reach.ChoosePod(pods, map[string]bool{"c-ready": true, "e-ready": true})
	if got.Name != "c-ready" {
		t.Errorf("retry %s, want c-ready", got.Name)
	}
	if _, err := reach.ChoosePod(pods[1:4], nil); err == nil {
		t.Error("chose a pod that is not Running and Ready")
	}
}

func TestTargetPort(t *testing.T) {
	p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8081}}}}}}
	svc := func(tp intstr.IntOrString) *corev1.Service {
		return &corev1.Service{Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, TargetPort: tp}}}}
	}
	for _, tc := range []struct {
		tp   intstr.IntOrString
		want int
	}{{intstr.FromInt32(8081), 8081}, {intstr.FromString("http"), 8081}, {intstr.IntOrString{}, 80}} {
		if got, err := reach.TargetPort(svc(tc.tp), 80, &p); err != nil || got != tc.want {
			t.Errorf("target %v: %d %v, want %d", tc.tp, got, err, tc.want)
		}
	}
	if _, err := reach.TargetPort(svc(intstr.FromString("grpc")), 80, &p); err == nil {
		t.Error("unknown named port accepted")
	}
	if _, err := reach.TargetPort(svc(intstr.FromInt32(1)), 81, &p); err == nil {
		t.Error("unknown service port accepted")
	}
}
