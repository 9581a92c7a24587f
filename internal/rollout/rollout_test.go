package rollout

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func deployment(replicas int32, generation, observed int64, status appsv1.DeploymentStatus) *appsv1.Deployment {
	status.ObservedGeneration = observed
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Generation: generation}, Spec: appsv1.DeploymentSpec{Replicas: &replicas}, Status: status}
}

func available(s corev1.ConditionStatus, reason string) appsv1.DeploymentCondition {
	return appsv1.DeploymentCondition{Type: appsv1.DeploymentAvailable, Status: s, Reason: reason, Message: "msg"}
}

func TestStatus(t *testing.T) {
	cases := []struct {
		name   string
		d      *appsv1.Deployment
		ok     bool
		reason string
	}{
		{"scaled to zero", deployment(0, 1, 1, appsv1.DeploymentStatus{}), false, "ScaledToZero"},
		{"progress deadline", deployment(1, 1, 1, appsv1.DeploymentStatus{Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Reason: "ProgressDeadlineExceeded"}}}), false, "ProgressDeadlineExceeded"},
		{"generation not observed", deployment(1, 2, 1, appsv1.DeploymentStatus{UpdatedReplicas: 1, AvailableReplicas: 1}), false, "NotObserved"},
		{"not all updated", deployment(3, 1, 1, appsv1.DeploymentStatus{UpdatedReplicas: 2}), false, "Progressing"},
		{"old replicas left", deployment(1, 1, 1, appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 1}), false, "Progressing"},
		{"not all available", deployment(2, 1, 1, appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 1}), false, "Progressing"},
		{"no available condition", deployment(1, 1, 1, appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1}), false, "NoAvailableCondition"},
		{"available false", deployment(1, 1, 1, appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1, Conditions: []appsv1.DeploymentCondition{available(corev1.ConditionFalse, "MinimumReplicasUnavailable")}}), false, "MinimumReplicasUnavailable"},
		{"done", deployment(1, 1, 1, appsv1.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1, AvailableReplicas: 1, Conditions: []appsv1.DeploymentCondition{available(corev1.ConditionTrue, "MinimumReplicasAvailable")}}), true, "MinimumReplicasAvailable"},
	}
	for _, c := range cases {
		ok, reason, _ := Status(c.d)
		if ok != c.ok || reason != c.reason {
			t.Errorf("%s: ok=%v reason=%q, want %v %q", c.name, ok, reason, c.ok, c.reason)
		}
	}
}

func TestDiagnose(t *testing.T) {
	now := metav1.NewTime(time.Now())
	waiting := func(reason, msg string) corev1.PodStatus {
		return corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{Name: "c", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}}}
	}
	cases := []struct {
		name   string
		pod    corev1.Pod
		ready  bool
		reason string
		hint   string // in the event hint of the diagnosis
	}{
		{"terminating", corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}}, false, "Terminating", ""},
		{"unschedulable", corev1.Pod{Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "0/3 nodes are available: 3 Insufficient nvidia.com/gpu"}}}}, false, "Unschedulable", "GPU node pool"},
		{"image pull", corev1.Pod{Status: waiting("ImagePullBackOff", "Back-off pulling image")}, false, "ImagePullBackOff", "workload.image"},
		{"crash loop", corev1.Pod{Status: waiting("CrashLoopBackOff", "back-off 5m0s")}, false, "CrashLoopBackOff", "kubectl logs"},
		{"missing secret", corev1.Pod{Status: waiting("CreateContainerConfigError", `secret "hf-secret" not found`)}, false, "CreateContainerConfigError", "Secret"},
		{"creating is not a diagnosis", corev1.Pod{Status: waiting("ContainerCreating", "")}, false, "Pending", ""},
		{"restarted", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{Name: "c", RestartCount: 3, LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}}}}}}, false, "Restarting", ""},
		{"running, probe failing", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}}}, false, "NotReady", ""},
		{"ready", corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}, true, "Ready", ""},
	}
	for _, c := range cases {
		ready, reason, msg := Diagnose(&c.pod)
		if ready != c.ready || reason != c.reason {
			t.Errorf("%s: ready=%v reason=%q, want %v %q", c.name, ready, reason, c.ready, c.reason)
		}
		if c.hint != "" && !strings.Contains(eventHint(reason, msg), c.hint) {
			t.Errorf("%s: hint %q lacks %q", c.name, eventHint(reason, msg), c.hint)
		}
	}
}

func TestSummarizeMostFrequentFirst(t *testing.T) {
	got := summarize(map[string]string{"a": "Pending: x", "b": "ImagePullBackOff: y", "c": "ImagePullBackOff: y"})
	if got != "2 pods ImagePullBackOff: y; 1 pod Pending: x" {
		t.Errorf("got %q", got)
	}
}

// A crashing container's diagnosis is its last words, not the kubelet's
// back-off message: the last klog entry of its termination message.
func TestCrashLoopLastWords(t *testing.T) {
	pod := &corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
		Name: "adapter", RestartCount: 3,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 40s restarting failed container=adapter pod=x_y(uid)"}},
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 255, Reason: "Error",
			Message: "I1203 04:07:55.000000       1 adapter.go:100] starting\nF1203 04:07:55.725130       1 adapter.go:152] Failed request to stackdriver api: 403 Unable to generate access token\nThis error could be caused by a missing IAM policy binding\n\thttps://example.com`"}},
	}}}}
	ready, reason, msg := Diagnose(pod)
	want := "container adapter exits at start (restarted 3 times): F1203 04:07:55.725130 1 adapter.go:152] Failed request to stackdriver api: 403 Unable to generate access token This error could be caused by a missing IAM policy binding https://example.com`"
	if ready || reason != "CrashLoopBackOff" || msg != want {
		t.Errorf("%v %s %q", ready, reason, msg)
	}
	c, ok := CrashLoop(pod)
	if !ok || c.Restarts != 3 {
		t.Errorf("CrashLoop: %+v %v", c, ok)
	}
}

// A container's last words are cut to 300 bytes at a character boundary:
// a log line in any script stays valid UTF-8.
func TestLastWordsCutAtACharacter(t *testing.T) {
	for _, msg := range []string{strings.Repeat("é", 400), "x" + strings.Repeat("日本", 200), strings.Repeat("a", 299) + "€€"} {
		got := lastWords(msg)
		if !utf8.ValidString(got) || len(got) > 303 || !strings.HasSuffix(got, "...") {
			t.Errorf("lastWords cut %q... into %d bytes, valid UTF-8 %v", msg[:8], len(got), utf8.ValidString(got))
		}
	}
	if got := lastWords("short"); got != "short" {
		t.Errorf("short message: %q", got)
	}
}
