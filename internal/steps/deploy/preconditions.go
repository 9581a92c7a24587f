package deploy

import (
	"context"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// Services: Cloud Storage with workload.model-source (the bucket's
// listing and policy); else deploy calls no Google API.
func (Definition) Services(cfg *config.Config) []string {
	if _, _, ok := cfg.Workload.ModelBucket(); ok {
		return []string{gcp.ServiceStorage}
	}
	return nil
}

// ProjectPreconditions: the model bucket (ModelPreconditions).
func (Definition) ProjectPreconditions(ctx context.Context, cfg *config.Config, deps step.Deps) ([]gcp.Precondition, error) {
	return ModelPreconditions(ctx, cfg, deps)
}

// Preconditions: a way to GPU nodes of workload.accelerator, how they get
// the vLLM image (gcp.ImageStart, advice only), and where
// they come only from ComputeClasses (or one is named), which one the vLLM
// pods select; with the weights from a bucket, what their identity needs.
func (d Definition) Preconditions(ctx context.Context, f step.ClusterFacts) ([]gcp.Precondition, error) {
	out, err := d.nodePreconditions(ctx, f)
	if _, _, ok := f.Config.Workload.ModelBucket(); !ok || err != nil {
		return out, err
	}
	// The pool the bucket grant's principal lives in, and the GKE
	// metadata server, without which the pods act as the node's service
	// account, not as their own KSA. (The bucket itself is a
	// ProjectPrecondition: it is checked without a cluster too.)
	out = append(out, gcp.WorkloadIdentityPool(f.Cluster, f.Wants))
	if p, ok := gcp.MetadataServer(f.Cluster, f.Wants); ok {
		out = append(out, p)
	}
	return out, nil
}

func (Definition) nodePreconditions(ctx context.Context, f step.ClusterFacts) ([]gcp.Precondition, error) {
	w := &f.Config.Workload
	gpu := gcp.GPUNodes(f.Cluster, f.Wants)
	// How the GPU nodes get the image: said, never refused.
	image, _ := gcp.ImageStart(f.Cluster, f.Wants, w.Image)
	viaClass := !gpu.OK
	if !viaClass && w.ComputeClass == "" {
		return []gcp.Precondition{gpu, image}, nil
	}
	// ComputeClasses live in the cluster, not in the container API: read
	// only when one is named, or no node pool or auto-provisioning will
	// do.
	var err error
	if f.Wants.ComputeClasses, err = gpuComputeClasses(ctx, f.Deps, w.Accelerator); err != nil {
		return nil, err
	}
	out := []gcp.Precondition{gcp.GPUNodes(f.Cluster, f.Wants), image}
	if p, ok := ComputeClass(w, f.Wants.ComputeClasses, viaClass); ok {
		out = append(out, p)
	}
	return out, nil
}

// ComputeClass decides the ComputeClass the vLLM pods select, from the
// cluster's classes with a GPU rule for the accelerator (classes) and
// whether the cluster's GPU nodes come only from one (viaClass): a class
// named must be one of them; else the one class there is is selected
// (setting w.ComputeClass), as a class serves only the pods that select
// it; several make the user choose. false: nothing to say.
func ComputeClass(w *config.Workload, classes []string, viaClass bool) (gcp.Precondition, bool) {
	switch {
	case w.ComputeClass != "" && !slices.Contains(classes, w.ComputeClass):
		return gcp.Precondition{Check: "compute class", Message: fmt.Sprintf("workload.compute-class %s is not a ComputeClass of this cluster with a GPU rule for %s (classes that have one: %s)", w.ComputeClass, w.Accelerator, orNone(classes)),
			Fix: "name one of them with --compute-class, or create " + w.ComputeClass + " with a priorities[].gpu.type " + w.Accelerator + " rule"}, true
	case w.ComputeClass != "":
		return gcp.Precondition{Check: "compute class", OK: true, Message: w.ComputeClass + " creates " + w.Accelerator + " nodes; the vLLM pods select it"}, true
	case viaClass && len(classes) == 1:
		w.ComputeClass = classes[0]
		return gcp.Precondition{Check: "compute class", OK: true, Message: w.ComputeClass + " is the cluster's one way to " + w.Accelerator + " nodes: the vLLM pods select it (workload.compute-class)"}, true
	case viaClass && len(classes) > 1:
		return gcp.Precondition{Check: "compute class", Message: "the cluster's " + w.Accelerator + " nodes come only from ComputeClasses (" + strings.Join(classes, ", ") + "), which serve only the pods that select one",
			Fix: "choose one with --compute-class"}, true
	}
	return gcp.Precondition{}, false
}

func orNone(list []string) string {
	if len(list) == 0 {
		return "none"
	}
	return strings.Join(list, ", ")
}

// computeClassesGVR are GKE's ComputeClasses.
var computeClassesGVR = schema.GroupVersionResource{Group: "cloud.google.com", Version: "v1", Resource: "computeclasses"}

// gpuComputeClasses names the cluster's ComputeClasses that can create
// nodes with accelerator (none where the kind is not served).
func gpuComputeClasses(ctx context.Context, deps step.Deps, accelerator string) ([]string, error) {
	if deps.Kube == nil {
		return nil, nil
	}
	list, err := deps.Kube.Dynamic.Resource(computeClassesGVR).List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list ComputeClasses: %w", err)
	}
	var out []string
	for _, cc := range list.Items {
		prios, _, _ := unstructured.NestedSlice(cc.Object, "spec", "priorities")
		for _, p := range prios {
			if t, _, _ := unstructured.NestedString(p.(map[string]any), "gpu", "type"); t == accelerator {
				out = append(out, cc.GetName())
				break
			}
		}
	}
	return out, nil
}
