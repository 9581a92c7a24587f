package monitor

import (
	"context"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// Services: monitor calls no Google API (Managed Prometheus writes to
// Cloud Monitoring as the cluster's own).
func (Definition) Services(*config.Config) []string { return nil }

// Preconditions: Managed Prometheus is on, where a PodMonitoring is
// applied (not on the native route without one).
func (Definition) Preconditions(_ context.Context, f step.ClusterFacts) ([]gcp.Precondition, error) {
	if !f.Config.WantsPodMonitoring() {
		return nil, nil
	}
	return []gcp.Precondition{gcp.ManagedPrometheus(f.Cluster, f.Wants)}, nil
}
