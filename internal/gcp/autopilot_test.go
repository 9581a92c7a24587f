package gcp_test

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
)

// Autopilot's documented rules refuse each of these pod specs; the
// violation names the rule.
func TestAutopilotViolations(t *testing.T) {
	gpu := func(req, lim string) corev1.Container {
		c := corev1.Container{Name: "c", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}}
		if req != "" {
			c.Resources.Requests[gcp.GPUResource] = resource.MustParse(req)
		}
		if lim != "" {
			c.Resources.Limits[gcp.GPUResource] = resource.MustParse(lim)
		}
		return c
	}
	l4 := map[string]string{gcp.AcceleratorLabel: "nvidia-l4"}
	cases := []struct {
		name string
		spec corev1.PodSpec
		want string // "" when none
	}{
		{"gpu with its accelerator", corev1.PodSpec{Containers: []corev1.Container{gpu("1", "1")}, NodeSelector: l4}, ""},
		{"gpu with a compute class", corev1.PodSpec{Containers: []corev1.Container{gpu("", "1")}, NodeSelector: map[string]string{gcp.ComputeClassLabel: "l4"}}, ""},
		{"gpu without a type", corev1.PodSpec{Containers: []corev1.Container{gpu("1", "1")}}, "autogke-gpu-limitation"},
		{"gpu requests only", corev1.PodSpec{Containers: []corev1.Container{gpu("1", "")}, NodeSelector: l4}, "GPUs go in limits"},
		{"gpu requests differ", corev1.PodSpec{Containers: []corev1.Container{gpu("1", "2")}, NodeSelector: l4}, "must be equal"},
		{"a node pool", corev1.PodSpec{Containers: []corev1.Container{gpu("1", "1")}, NodeSelector: map[string]string{gcp.AcceleratorLabel: "nvidia-l4", "cloud.google.com/gke-nodepool": "gpu"}}, "cloud.google.com/gke-nodepool"},
		{"an unknown selector", corev1.PodSpec{Containers: []corev1.Container{gpu("1", "1")}, NodeSelector: map[string]string{gcp.AcceleratorLabel: "nvidia-l4", "example.com/x": "y"}}, "example.com/x"},
		{"a driver version", corev1.PodSpec{Containers: []corev1.Container{gpu("1", "1")}, NodeSelector: map[string]string{gcp.AcceleratorLabel: "nvidia-l4", gcp.DriverLabel: "535"}}, "default or latest"},
		{"gpu toleration without gpus", corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}, Tolerations: []corev1.Toleration{{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists}}}, "may not tolerate"},
		{"gpu toleration Equal without gpus (upstream's adapter)", corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}, Tolerations: []corev1.Toleration{{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpEqual, Value: "present"}}}, ""},
	}
	for _, c := range cases {
		v := gcp.AutopilotViolations(c.spec)
		got := strings.Join(v, "; ")
		if (c.want == "") != (len(v) == 0) || !strings.Contains(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
