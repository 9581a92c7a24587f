package stack

import (
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/gmp"
)

// Typed status readers: each turns a live object into (ok, reason, message),
// the way `kubectl rollout status` and `kubectl describe` would judge it.
// They are pure functions so that a wait and a check give the same verdict.

func convert[T any](u *unstructured.Unstructured) (*T, error) {
	var out T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// rolloutStatus judges a Deployment like `kubectl rollout status`: the
// controller has observed the current generation, every replica is updated
// and available, and the Available condition is True.
func rolloutStatus(d *appsv1.Deployment) (ok bool, reason, message string) {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	if want == 0 {
		return false, "ScaledToZero", "the Deployment is scaled to 0 replicas"
	}
	for _, c := range s.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
			return false, "ProgressDeadlineExceeded", c.Message
		}
	}
	switch {
	case s.ObservedGeneration < d.Generation:
		return false, "NotObserved", fmt.Sprintf("waiting for the controller to observe generation %d (observed %d)", d.Generation, s.ObservedGeneration)
	case s.UpdatedReplicas < want:
		return false, "Progressing", fmt.Sprintf("%d of %d updated replicas", s.UpdatedReplicas, want)
	case s.Replicas > s.UpdatedReplicas:
		return false, "Progressing", fmt.Sprintf("%d old replicas pending termination", s.Replicas-s.UpdatedReplicas)
	case s.AvailableReplicas < s.UpdatedReplicas:
		return false, "Progressing", fmt.Sprintf("%d of %d updated replicas available", s.AvailableReplicas, s.UpdatedReplicas)
	}
	for _, c := range s.Conditions {
		if c.Type == appsv1.DeploymentAvailable {
			if c.Status == corev1.ConditionTrue {
				return true, c.Reason, fmt.Sprintf("%d/%d replicas available", s.AvailableReplicas, want)
			}
			return false, c.Reason, c.Message
		}
	}
	return false, "NoAvailableCondition", "the Deployment has no Available condition yet"
}

// podDiagnosis explains why a pod is not Ready, the way an operator would
// read it from `kubectl describe pod`: scheduling failures (GPU capacity or
// quota), image pulls, crash loops, failing readiness.
func podDiagnosis(p *corev1.Pod) (ready bool, reason, message string) {
	if p.DeletionTimestamp != nil {
		return false, "Terminating", ""
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return false, orDefault(c.Reason, "Unschedulable"), c.Message
		}
	}
	for _, cs := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "ContainerCreating" && w.Reason != "PodInitializing" {
			return false, w.Reason, w.Message
		}
		if t := cs.LastTerminationState.Terminated; t != nil && !cs.Ready && cs.RestartCount > 0 {
			return false, "Restarting", fmt.Sprintf("container %s restarted %d times, last exit %d (%s)", cs.Name, cs.RestartCount, t.ExitCode, t.Reason)
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			if c.Status == corev1.ConditionTrue {
				return true, "Ready", ""
			}
			if p.Status.Phase == corev1.PodRunning {
				return false, "NotReady", orDefault(c.Message, "readiness probe not passing yet (the model may still be loading)")
			}
		}
	}
	return false, string(orDefault(string(p.Status.Phase), "Pending")), "waiting for the pod to be scheduled and started"
}

// endpointsReady counts the ready endpoints across a Service's slices.
func endpointsReady(slices []*discoveryv1.EndpointSlice) int {
	n := 0
	for _, s := range slices {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready == nil || *e.Conditions.Ready {
				n++
			}
		}
	}
	return n
}

// podMonitoringStatus judges a PodMonitoring: the operator has observed the
// current generation and ConfigurationCreateSuccess is True; where target
// status is on, the targets are healthy. failed means the operator said
// False (no point waiting).
func podMonitoringStatus(pm *gmp.PodMonitoring) (ok, failed bool, reason, message string) {
	if pm.Status.ObservedGeneration < pm.Generation {
		return false, false, "NotObserved", fmt.Sprintf("waiting for the Managed Prometheus operator to observe generation %d (observed %d); is Managed Prometheus enabled?", pm.Generation, pm.Status.ObservedGeneration)
	}
	var cond *gmp.MonitoringCondition
	for i := range pm.Status.Conditions {
		if pm.Status.Conditions[i].Type == gmp.ConditionConfigurationCreateSuccess {
			cond = &pm.Status.Conditions[i]
		}
	}
	switch {
	case cond == nil:
		return false, false, "NoCondition", "no ConfigurationCreateSuccess condition yet"
	case cond.Status == "False":
		return false, true, orDefault(cond.Reason, "ScrapeConfigError"), cond.Message
	case cond.Status != "True":
		return false, false, orDefault(cond.Reason, "Unknown"), orDefault(cond.Message, "ConfigurationCreateSuccess is "+string(cond.Status))
	}
	if len(pm.Status.EndpointStatuses) == 0 {
		return true, false, gmp.ConditionConfigurationCreateSuccess, "scrape configuration generated (target status is off: targets not checked)"
	}
	var active, unhealthy int64
	var lastErr string
	for _, es := range pm.Status.EndpointStatuses {
		active += es.ActiveTargets
		unhealthy += es.UnhealthyTargets
		for _, g := range es.SampleGroups {
			for _, t := range g.SampleTargets {
				if t.LastError != nil && *t.LastError != "" {
					lastErr = *t.LastError
				}
			}
		}
	}
	switch {
	case active == 0:
		return false, false, "NoTargets", "no active targets: does the selector match the vLLM pods?"
	case unhealthy > 0:
		return false, false, "UnhealthyTargets", fmt.Sprintf("%d of %d targets unhealthy: %s", unhealthy, active, lastErr)
	}
	return true, false, "TargetsHealthy", fmt.Sprintf("%d targets healthy", active)
}

// apiServiceStatus reads an APIService's Available condition.
func apiServiceStatus(a *apiregistrationv1.APIService) (ok bool, reason, message string) {
	for _, c := range a.Status.Conditions {
		if c.Type == apiregistrationv1.Available {
			return c.Status == apiregistrationv1.ConditionTrue, c.Reason, c.Message
		}
	}
	return false, "NoCondition", "no Available condition yet"
}

// hpaStatus judges an HPA: AbleToScale True and ScalingActive True with
// ValidMetricFound. It also returns the current value of the metric.
func hpaStatus(h *autoscalingv2.HorizontalPodAutoscaler, metric string) (ok bool, reason, message, current string) {
	for _, m := range h.Status.CurrentMetrics {
		if m.Type == autoscalingv2.PodsMetricSourceType && m.Pods != nil && m.Pods.Metric.Name == metric && m.Pods.Current.AverageValue != nil {
			current = m.Pods.Current.AverageValue.String()
		}
	}
	conds := map[autoscalingv2.HorizontalPodAutoscalerConditionType]autoscalingv2.HorizontalPodAutoscalerCondition{}
	for _, c := range h.Status.Conditions {
		conds[c.Type] = c
	}
	able, hasAble := conds[autoscalingv2.AbleToScale]
	active, hasActive := conds[autoscalingv2.ScalingActive]
	switch {
	case !hasAble && !hasActive:
		return false, "NoConditions", "the HPA controller has not evaluated the HPA yet", current
	case hasAble && able.Status != corev1.ConditionTrue:
		return false, able.Reason, explainHPA(able.Reason, able.Message), current
	case !hasActive || active.Status != corev1.ConditionTrue || active.Reason != "ValidMetricFound":
		return false, active.Reason, explainHPA(active.Reason, active.Message), current
	}
	return true, "ValidMetricFound", active.Message, current
}

// hpaHints say what an HPA condition reason means for this stack.
var hpaHints = map[string]string{
	"FailedGetPodsMetric":          "the custom metrics API returned no value: check that the adapter is Available, has Workload Identity (roles/monitoring.viewer), and that Managed Prometheus scrapes the pods; a new metric can take a few minutes to appear in Cloud Monitoring",
	"FailedGetScale":               "the HPA cannot read its target's scale: does the vLLM Deployment exist?",
	"InvalidMetricSourceType":      "the HPA's metric spec is not valid for the controller",
	"InvalidSelector":              "the target's label selector is invalid",
	"ScalingDisabled":              "the target has 0 replicas, so autoscaling is off",
	"FailedComputeMetricsReplicas": "the controller could not compute a replica count from the metric",
}

func explainHPA(reason, message string) string {
	if hint, ok := hpaHints[reason]; ok {
		return message + " (" + hint + ")"
	}
	return message
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// summarize joins distinct pod diagnoses, most frequent first:
// "2 pods Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu".
func summarize(diag map[string]string) string {
	count := map[string]int{}
	for _, d := range diag {
		count[d]++
	}
	var keys []string
	for k := range count {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if count[keys[i]] != count[keys[j]] {
			return count[keys[i]] > count[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var parts []string
	for _, k := range keys {
		if count[k] == 1 {
			parts = append(parts, "1 pod "+k)
		} else {
			parts = append(parts, fmt.Sprintf("%d pods %s", count[k], k))
		}
	}
	return strings.Join(parts, "; ")
}
