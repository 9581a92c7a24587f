package gcp

import (
	"fmt"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
)

// GKE Autopilot's admission rules (GKE Warden) for the pod specs the stack
// creates, as Google documents them:
// cloud.google.com/kubernetes-engine/docs/how-to/autopilot-gpus,
// .../concepts/autopilot-resource-requests and
// .../how-to/autopilot-spot-pods. A pod that breaks one is refused at
// creation, so its Deployment never gets a pod.

// GPUResource is NVIDIA's device plugin resource.
const GPUResource corev1.ResourceName = "nvidia.com/gpu"

// Node selector keys of GKE.
const (
	AcceleratorLabel  = "cloud.google.com/gke-accelerator"
	DriverLabel       = "cloud.google.com/gke-gpu-driver-version"
	ComputeClassLabel = "cloud.google.com/compute-class"
	SpotLabel         = "cloud.google.com/gke-spot"
	nodePoolLabel     = "cloud.google.com/gke-nodepool"
)

// autopilotSelectors are the node selector keys Autopilot accepts
// (Warden's autogke-node-affinity-selector-limitation).
var autopilotSelectors = []string{
	AcceleratorLabel, DriverLabel, ComputeClassLabel, SpotLabel,
	"cloud.google.com/gke-accelerator-count", "cloud.google.com/machine-family",
	"cloud.google.com/gke-ephemeral-storage-local-ssd", "cloud.google.com/gke-placement-group",
	"cloud.google.com/gke-os-distribution", "cloud.google.com/private-node", "cloud.google.com/gke-boot-disk",
	"topology.kubernetes.io/region", "topology.kubernetes.io/zone", "kubernetes.io/os", "kubernetes.io/arch",
	"sandbox.gke.io/runtime",
}

// AutopilotViolations are the rules of Autopilot a pod spec breaks, each
// naming the rule: a GPU pod selects its GPU type (the accelerator label,
// or a ComputeClass with a GPU rule) and asks for GPUs in limits, equal to
// any requests; the driver version is default or latest; only the node
// selector keys Autopilot knows, never a node pool; and a pod without GPUs
// does not tolerate nvidia.com/gpu with Exists.
func AutopilotViolations(spec corev1.PodSpec) []string {
	var out []string
	gpus := false
	for _, c := range spec.Containers {
		lim, hasLim := c.Resources.Limits[GPUResource]
		req, hasReq := c.Resources.Requests[GPUResource]
		switch {
		case hasReq && !hasLim:
			out = append(out, fmt.Sprintf("container %s requests %s without a limit: GPUs go in limits", c.Name, GPUResource))
		case hasReq && req.Cmp(lim) != 0:
			out = append(out, fmt.Sprintf("container %s requests %s %s but limits %s: they must be equal", c.Name, GPUResource, req.String(), lim.String()))
		}
		gpus = gpus || (hasLim && !lim.IsZero()) || (hasReq && !req.IsZero())
	}
	sel := spec.NodeSelector
	if gpus && sel[AcceleratorLabel] == "" && sel[ComputeClassLabel] == "" {
		out = append(out, "a pod that requests "+string(GPUResource)+" must select node selector '"+AcceleratorLabel+"' with its accelerator type, or '"+ComputeClassLabel+"' with a ComputeClass that has a GPU rule (autogke-gpu-limitation)")
	}
	if v, ok := sel[DriverLabel]; ok && v != "default" && v != "latest" {
		out = append(out, fmt.Sprintf("node selector %s=%q: Autopilot takes default or latest", DriverLabel, v))
	}
	var keys []string
	for k := range sel {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == nodePoolLabel || !slices.Contains(autopilotSelectors, k) {
			out = append(out, fmt.Sprintf("node selector key %q is not allowed on Autopilot (autogke-node-affinity-selector-limitation)", k))
		}
	}
	if !gpus {
		for _, t := range spec.Tolerations {
			if t.Key == string(GPUResource) && t.Operator == corev1.TolerationOpExists {
				out = append(out, "a pod that does not request "+string(GPUResource)+" may not tolerate it with operator Exists (autogke-gpu-limitation)")
			}
		}
	}
	return out
}

// AutopilotRulesPage is where Google documents the rules.
const AutopilotRulesPage = "https://cloud.google.com/kubernetes-engine/docs/how-to/autopilot-gpus"
