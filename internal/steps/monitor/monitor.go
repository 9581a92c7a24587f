// Package monitor is the walkthrough's second step: the Managed Prometheus
// PodMonitoring that has vLLM's /metrics scraped
// (templates/monitor.yaml.tmpl), waited for until the operator has
// generated its scrape configuration.
package monitor

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/gmp"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/objectstep"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// Name is the step's name and command.
const Name = "monitor"

// Definition is the monitor step in the registry.
type Definition struct{}

func (Definition) Name() string { return Name }

func (Definition) Help() step.Help {
	return step.Help{
		Short: "Have Managed Prometheus scrape vLLM's /metrics (PodMonitoring)",
		Long: `Create or update the PodMonitoring that has Managed Prometheus scrape the
vLLM pods' /metrics, then wait for ConfigurationCreateSuccess at the current
generation (and healthy targets where target status is on).`,
	}
}

func (Definition) New(cfg *config.Config, deps step.Deps) step.Step {
	s := &Step{cfg: cfg}
	s.Step = objectstep.New(Name, cfg, deps, objectstep.Options{Timeout: cfg.Timeouts.Monitor}, s)
	return s
}

// Step is the monitor step.
type Step struct {
	*objectstep.Step
	cfg *config.Config
}

func (s *Step) podMonitoring() objectstep.One {
	return objectstep.One{
		GVR: gmp.Resource, Namespace: s.cfg.Workload.Namespace, Name: s.cfg.Monitoring.Name,
		Kind: "PodMonitoring", Goal: "to be configured", Check: "podmonitoring configured",
		Judge: Judge,
	}
}

// Wait waits until the operator has configured the PodMonitoring.
func (s *Step) Wait(ctx context.Context) error { return s.WaitOne(ctx, s.podMonitoring()) }

// Check judges the PodMonitoring.
func (s *Step) Check(ctx context.Context) ([]step.Result, error) {
	return s.CheckOne(ctx, s.podMonitoring())
}

// Judge is the PodMonitoring's check; the operator's False is final:
// waiting will not change it.
func Judge(u *unstructured.Unstructured) (r step.Result, final bool) {
	pm, err := kube.Convert[gmp.PodMonitoring](u)
	if err != nil {
		r.Reason, r.Message = "Invalid", err.Error()
		return r, false
	}
	r.OK, final, r.Reason, r.Message = Status(pm)
	return r, final
}

// Status judges a PodMonitoring: the operator has observed the
// current generation and ConfigurationCreateSuccess is True; where target
// status is on, the targets are healthy. failed means the operator said
// False (no point waiting).
func Status(pm *gmp.PodMonitoring) (ok, failed bool, reason, message string) {
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

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
