package identity

import (
	"context"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// Services: IAM and Resource Manager, which identity calls, and Cloud
// Monitoring, which the adapter reads as the identity (and vllm-hpa reads
// to explain a metric it does not serve).
func (Definition) Services(*config.Config) []string {
	return []string{gcp.ServiceIAM, gcp.ServiceResourceManager, gcp.ServiceMonitoring}
}

// Preconditions: the cluster's Workload Identity pool, and on Standard
// the GKE metadata server on every node pool (else the adapter's pods get
// the node's identity).
func (Definition) Preconditions(_ context.Context, f step.ClusterFacts) ([]gcp.Precondition, error) {
	out := []gcp.Precondition{gcp.WorkloadIdentityPool(f.Cluster, f.Wants)}
	if p, ok := gcp.MetadataServer(f.Cluster, f.Wants); ok {
		out = append(out, p)
	}
	return out, nil
}
