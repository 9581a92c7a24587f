// Package hpa is the walkthrough's last step: the HorizontalPodAutoscaler
// on the vLLM metric (templates/hpa.yaml.tmpl), waited for until it is
// AbleToScale and ScalingActive with ValidMetricFound.
package hpa

import (
	"context"
	"fmt"
	"strings"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/objectstep"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// Name is the step's name and command.
const Name = "hpa"

// Definition is the hpa step in the registry.
type Definition struct{}

func (Definition) Name() string { return Name }

func (Definition) Help() step.Help {
	return step.Help{
		Short: "Create the HorizontalPodAutoscaler on the vLLM metric",
		Long: `Create or update the HPA that scales the vLLM Deployment on
prometheus.googleapis.com|<metric>|gauge, then wait until it is AbleToScale and
ScalingActive with ValidMetricFound, showing the current value.`,
	}
}

func (Definition) New(cfg *config.Config, deps step.Deps) step.Step {
	s := &Step{cfg: cfg}
	s.Step = objectstep.New(Name, cfg, deps, objectstep.Options{Timeout: cfg.Timeouts.HPA}, s)
	return s
}

// Step is the hpa step.
type Step struct {
	*objectstep.Step
	cfg *config.Config
}

func (s *Step) hpa() objectstep.One {
	return objectstep.One{
		GVR: kube.HPAsGVR, Namespace: s.cfg.Workload.Namespace, Name: s.cfg.HPA.Name,
		Kind: "HPA", Goal: "to find its metric", Check: "hpa scaling active",
		Judge: func(u *unstructured.Unstructured) (step.Result, bool) { return Judge(u, s.cfg) },
	}
}

// Wait waits until the HPA finds its metric.
func (s *Step) Wait(ctx context.Context) error { return s.WaitOne(ctx, s.hpa()) }

// Check judges the HPA.
func (s *Step) Check(ctx context.Context) ([]step.Result, error) { return s.CheckOne(ctx, s.hpa()) }

// Judge is the HPA's check, with the metric's current value against its
// target. Metrics can appear late: no HPA verdict is final.
func Judge(u *unstructured.Unstructured, cfg *config.Config) (r step.Result, final bool) {
	h, err := kube.Convert[autoscalingv2.HorizontalPodAutoscaler](u)
	if err != nil {
		r.Reason, r.Message = "Invalid", err.Error()
		return r, false
	}
	var current string
	r.OK, r.Reason, r.Message, current = Status(h, cfg.HPAMetricName())
	if current != "" {
		r.Message = fmt.Sprintf("current %s / target %s; %s", current, render.Quantity(cfg.HPA.Target), r.Message)
	}
	return r, false
}

// Status judges an HPA: AbleToScale True and ScalingActive True with
// ValidMetricFound. It also returns the current value of the metric.
func Status(h *autoscalingv2.HorizontalPodAutoscaler, metric string) (ok bool, reason, message, current string) {
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

// Hints for what the adapter answers the HPA, by what it says: Google
// documents both waits.
const (
	// HintDenied: Cloud Monitoring refused the adapter.
	HintDenied = "the adapter is denied by Cloud Monitoring: IAM changes take about 2 minutes to apply, sometimes 7 or more, so this is expected right after vllm-hpa identity; if it lasts, check roles/monitoring.viewer with vllm-hpa verify"
	// HintNoSamples: the metric has no samples in Cloud Monitoring yet.
	HintNoSamples = "the metric has no samples in Cloud Monitoring yet: a new metric takes up to 10 minutes to appear; if it lasts, check that Managed Prometheus scrapes the pods (vllm-hpa verify)"
)

// HintNative: GKE does not serve the native metric to the HPA.
const HintNative = "GKE serves autoscaling.gke.io metrics when the cluster has the performance HPA profile and the AutoscalingMetric's pods serve the gauge; check with vllm-hpa verify (monitor, autoscalingmetric)"

func explainHPA(reason, message string) string {
	lower := strings.ToLower(message)
	if reason == "FailedGetPodsMetric" && strings.Contains(message, "autoscaling.gke.io|") {
		return message + " (" + HintNative + ")"
	}
	if reason == "FailedGetPodsMetric" {
		switch {
		case strings.Contains(lower, "403") || strings.Contains(lower, "forbidden") || strings.Contains(lower, "permission"):
			return message + " (" + HintDenied + ")"
		case strings.Contains(lower, "404") || strings.Contains(lower, "cannot find metric") || strings.Contains(lower, "not found") ||
			strings.Contains(lower, "could not find the metric") || strings.Contains(lower, "no metrics returned"):
			return message + " (" + HintNoSamples + ")"
		}
	}
	if hint, ok := hpaHints[reason]; ok {
		return message + " (" + hint + ")"
	}
	return message
}
