package gcp

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	container "google.golang.org/api/container/v1"
)

// Precondition is one requirement the cluster must meet before the stack
// can work, with the gcloud command that fixes it.
type Precondition struct {
	Check   string
	OK      bool
	Message string
	Fix     string
	// Denied: what fails is a permission of the caller's (exit 6 when
	// every failure is one), not the cluster or the project.
	Denied bool
}

// ClusterWants name the cluster and what the stack needs of it.
type ClusterWants struct {
	Project, Location, Cluster string
	Accelerator                string // the GPU node pool's accelerator type
	// ComputeClasses are the cluster's ComputeClasses that can create nodes
	// with Accelerator (read from the cluster: the container API does not
	// list them).
	ComputeClasses []string
}

// where is the gcloud flags that name the cluster's location and project.
func (w ClusterWants) where() string {
	return fmt.Sprintf("--location %s --project %s", w.Location, w.Project)
}

// MinMasterVersion: Managed Prometheus is on by default from GKE 1.27.
const MinMasterVersion = "1.27"

// Each judge below is one precondition of the cluster as the container
// API describes it; the step that needs it asks for it
// (step.Preconditioner).

// WorkloadIdentityPool: the cluster's pool is PROJECT.svc.id.goog (the
// adapter's identity).
func WorkloadIdentityPool(c *container.Cluster, w ClusterWants) Precondition {
	pool := w.Project + ".svc.id.goog"
	got := ""
	if c.WorkloadIdentityConfig != nil {
		got = c.WorkloadIdentityConfig.WorkloadPool
	}
	p := Precondition{Check: "workload identity pool", OK: got == pool, Message: pool}
	if !p.OK {
		p.Message = fmt.Sprintf("the cluster's Workload Identity pool is %q, want %q", got, pool)
		p.Fix = fmt.Sprintf("gcloud container clusters update %s %s --workload-pool=%s", w.Cluster, w.where(), pool)
	}
	return p
}

// ManagedPrometheus: Managed Service for Prometheus is on (the
// PodMonitoring is its).
func ManagedPrometheus(c *container.Cluster, w ClusterWants) Precondition {
	on := c.MonitoringConfig != nil && c.MonitoringConfig.ManagedPrometheusConfig != nil && c.MonitoringConfig.ManagedPrometheusConfig.Enabled
	p := Precondition{Check: "managed prometheus", OK: on, Message: "enabled"}
	if !on {
		p.Message = "Managed Service for Prometheus is not enabled"
		p.Fix = fmt.Sprintf("gcloud container clusters update %s %s --enable-managed-prometheus", w.Cluster, w.where())
	}
	return p
}

// MasterVersion: the control plane is at least MinMasterVersion.
func MasterVersion(c *container.Cluster, w ClusterWants) Precondition {
	p := Precondition{Check: "master version", OK: versionAtLeast(c.CurrentMasterVersion, MinMasterVersion), Message: c.CurrentMasterVersion}
	if !p.OK {
		p.Message = fmt.Sprintf("control plane version %q is older than %s", c.CurrentMasterVersion, MinMasterVersion)
		p.Fix = fmt.Sprintf("gcloud container clusters upgrade %s %s --master --cluster-version=%s", w.Cluster, w.where(), MinMasterVersion)
	}
	return p
}

// GPUNodes: a way to nodes with the accelerator: Autopilot, a node pool
// of it, node auto-provisioning with a limit for it, or a ComputeClass.
func GPUNodes(c *container.Cluster, w ClusterWants) Precondition {
	if autopilot(c) {
		return Precondition{Check: "gpu nodes", OK: true, Message: "Autopilot provisions " + w.Accelerator + " nodes on demand (checked: Autopilot is on; not checked: the project's GPU quota and the zone's " + w.Accelerator + " capacity, which show as FailedScheduling while deploy waits)"}
	}
	var gpuPools []string
	for _, np := range c.NodePools {
		if np.Config == nil {
			continue
		}
		for _, a := range np.Config.Accelerators {
			if a.AcceleratorType == w.Accelerator {
				gpuPools = append(gpuPools, np.Name)
			}
		}
	}
	p := Precondition{Check: "gpu nodes", OK: len(gpuPools) > 0, Message: "node pools with " + w.Accelerator + ": " + strings.Join(gpuPools, ", ")}
	switch limit := napLimit(c, w.Accelerator); {
	case p.OK:
	case limit > 0:
		// Node auto-provisioning creates GPU nodes on demand.
		p.OK, p.Message = true, fmt.Sprintf("no node pool of %s yet: node auto-provisioning creates them on demand (up to %d GPUs)", w.Accelerator, limit)
	case len(w.ComputeClasses) > 0:
		p.OK, p.Message = true, fmt.Sprintf("no node pool of %s yet: ComputeClass %s creates them on demand", w.Accelerator, strings.Join(w.ComputeClasses, ", "))
	}
	if !p.OK {
		loc := w.where()
		p.Message = "Standard cluster without a node pool of " + w.Accelerator
		p.Fix = fmt.Sprintf("gcloud container node-pools create %s-pool --cluster %s %s --accelerator type=%s,count=1,gpu-driver-version=latest --workload-metadata=GKE_METADATA (or let node auto-provisioning create them: gcloud container clusters update %s %s --enable-autoprovisioning --max-accelerator type=%s,count=8)", w.Accelerator, w.Cluster, loc, w.Accelerator, w.Cluster, loc, w.Accelerator)
	}
	return p
}

// MetadataServer: every node pool of a Standard cluster runs the GKE
// metadata server, else pods get the node's identity, not Workload
// Identity. false: Autopilot, which always does.
func MetadataServer(c *container.Cluster, w ClusterWants) (Precondition, bool) {
	if autopilot(c) {
		return Precondition{}, false
	}
	var noMetadata []string
	for _, np := range c.NodePools {
		if np.Config != nil && (np.Config.WorkloadMetadataConfig == nil || np.Config.WorkloadMetadataConfig.Mode != "GKE_METADATA") {
			noMetadata = append(noMetadata, np.Name)
		}
	}
	p := Precondition{Check: "gke metadata server", OK: len(noMetadata) == 0, Message: "every node pool runs the GKE metadata server"}
	if !p.OK {
		p.Message = "node pools without the GKE metadata server: " + strings.Join(noMetadata, ", ")
		p.Fix = fmt.Sprintf("gcloud container node-pools update %s --cluster %s %s --workload-metadata=GKE_METADATA", noMetadata[0], w.Cluster, w.where())
	}
	return p, true
}

func autopilot(c *container.Cluster) bool { return c.Autopilot != nil && c.Autopilot.Enabled }

// napLimit is how many GPUs of accelerator node auto-provisioning may
// create (0: none, or auto-provisioning is off).
func napLimit(c *container.Cluster, accelerator string) int64 {
	if c.Autoscaling == nil || !c.Autoscaling.EnableNodeAutoprovisioning {
		return 0
	}
	for _, l := range c.Autoscaling.ResourceLimits {
		if l.ResourceType == accelerator {
			return l.Maximum
		}
	}
	return 0
}

// versionAtLeast compares GKE versions such as 1.30.5-gke.1014001 by major
// and minor.
func versionAtLeast(v, min string) bool {
	parse := func(s string) (int, int, bool) {
		parts := strings.SplitN(strings.TrimPrefix(s, "v"), ".", 3)
		if len(parts) < 2 {
			return 0, 0, false
		}
		major, err1 := strconv.Atoi(parts[0])
		minor, err2 := strconv.Atoi(strings.SplitN(parts[1], "-", 2)[0])
		return major, minor, err1 == nil && err2 == nil
	}
	vm, vn, ok1 := parse(v)
	mm, mn, ok2 := parse(min)
	if !ok1 || !ok2 {
		return false
	}
	return vm > mm || (vm == mm && vn >= mn)
}

// ImageStart says how the GPU nodes get the vLLM image (about 10 GB), the
// stage of a scale-up that a cutter removes: a secondary boot disk that
// holds it (the container image cache: up to 29x faster for a 16 GB
// image, Google says; it needs image streaming on), image streaming (for
// images in Artifact Registry or public on Docker Hub, on
// Container-Optimized OS nodes), or a whole pull before the container
// starts. It never fails (a slow start is not a broken stack); the pools
// that pull the image whole are named with the gcloud line that cuts it,
// and slow says there are some.
func ImageStart(c *container.Cluster, w ClusterWants, image string) (p Precondition, slow bool) {
	p = Precondition{Check: "image start", OK: true}
	eligible := Streamable(image)
	if autopilot(c) {
		// Autopilot (1.25.5-gke.1000 and later) streams every eligible
		// image by itself.
		if eligible {
			p.Message = "Autopilot streams " + image + " (image streaming)"
			return p, false
		}
		p.Message = "Autopilot streams only images in Artifact Registry or public on Docker Hub: " + image + " is pulled whole before vLLM starts; " + MirrorAdvice
		return p, true
	}
	var defaultStreaming bool
	if d := c.NodePoolDefaults; d != nil && d.NodeConfigDefaults != nil && d.NodeConfigDefaults.GcfsConfig != nil {
		defaultStreaming = d.NodeConfigDefaults.GcfsConfig.Enabled
	}
	var streamed, cached, whole []string
	var first *container.NodePool // the first pool that pulls whole
	for _, np := range c.NodePools {
		if np.Config == nil || !slices.ContainsFunc(np.Config.Accelerators, func(a *container.AcceleratorConfig) bool { return a.AcceleratorType == w.Accelerator }) {
			continue
		}
		// A pool's own setting, where it has one, over the cluster's.
		streaming := defaultStreaming
		if np.Config.GcfsConfig != nil {
			streaming = np.Config.GcfsConfig.Enabled
		}
		streaming = streaming && cosContainerd(np.Config.ImageType)
		switch {
		case streaming && slices.ContainsFunc(np.Config.SecondaryBootDisks, func(d *container.SecondaryBootDisk) bool { return d.Mode == "CONTAINER_IMAGE_CACHE" }):
			cached = append(cached, np.Name)
		case streaming && eligible:
			streamed = append(streamed, np.Name)
		default:
			whole = append(whole, np.Name)
			if first == nil {
				first = np
			}
		}
	}
	var parts []string
	if len(cached) > 0 {
		parts = append(parts, "the image cache of a secondary boot disk on "+strings.Join(cached, ", "))
	}
	if len(streamed) > 0 {
		parts = append(parts, "image streaming on "+strings.Join(streamed, ", "))
	}
	if first != nil {
		parts = append(parts, "a whole pull before vLLM starts on "+strings.Join(whole, ", ")+" ("+w.imageCutter(first, eligible)+")")
	}
	if len(parts) == 0 {
		p.Message = "no node pool of " + w.Accelerator + " to judge (nodes made on demand pull " + image + " as their pool says)"
		return p, false
	}
	p.Message = image + ": " + strings.Join(parts, "; ")
	return p, first != nil
}

// MirrorAdvice is how an image gets where image streaming serves it.
const MirrorAdvice = "copy it into an Artifact Registry repository (or pull it through a remote repository) and set workload.image to it"

// cosContainerd: image streaming runs only on Container-Optimized OS with
// containerd, the default node image.
func cosContainerd(imageType string) bool {
	return imageType == "" || strings.EqualFold(imageType, "COS_CONTAINERD")
}

// imageCutter is what cuts pool's image pull: image streaming where the
// pool and the image allow it, or a new pool like it whose secondary boot
// disk holds the image.
func (w ClusterWants) imageCutter(pool *container.NodePool, eligible bool) string {
	cfg := pool.Config
	var steps []string
	if !eligible {
		steps = append(steps, MirrorAdvice)
	}
	if cosContainerd(cfg.ImageType) {
		steps = append(steps, fmt.Sprintf("gcloud container node-pools update %s --cluster %s %s --enable-image-streaming", pool.Name, w.Cluster, w.where()))
	}
	count := int64(1)
	for _, a := range cfg.Accelerators {
		if a.AcceleratorType == w.Accelerator {
			count = max(a.AcceleratorCount, 1)
		}
	}
	create := fmt.Sprintf("gcloud container node-pools create %s-cached --cluster %s %s --machine-type %s --accelerator type=%s,count=%d,gpu-driver-version=latest --image-type COS_CONTAINERD --workload-metadata=GKE_METADATA --enable-image-streaming --secondary-boot-disk=disk-image=global/images/IMAGE,mode=CONTAINER_IMAGE_CACHE",
		pool.Name, w.Cluster, w.where(), orDefault(cfg.MachineType, "MACHINE_TYPE"), w.Accelerator, count)
	if cfg.Spot {
		create += " --spot"
	}
	if a := pool.Autoscaling; a != nil && a.Enabled {
		create += fmt.Sprintf(" --enable-autoscaling --num-nodes 0 --min-nodes %d --max-nodes %d", a.MinNodeCount, max(a.MaxNodeCount, 1))
	} else {
		create += fmt.Sprintf(" --num-nodes %d", max(pool.InitialNodeCount, 1))
	}
	disk := "a pool like it whose secondary boot disk holds the image (built with gke-disk-image-builder): " + create
	if len(steps) == 0 {
		return disk
	}
	return strings.Join(steps, ", then ") + "; or " + disk
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

// Streamable says whether image streaming can serve image: Artifact
// Registry (LOCATION-docker.pkg.dev, and the gcr.io hosts it serves) or a
// public image on Docker Hub (no registry host, or docker.io's).
func Streamable(image string) bool {
	host, _, ok := strings.Cut(image, "/")
	if !ok || !strings.ContainsAny(host, ".:") && host != "localhost" {
		return true // Docker Hub: "vllm/vllm-openai", "ubuntu"
	}
	switch host {
	case "docker.io", "index.docker.io", "registry-1.docker.io", "gcr.io", "us.gcr.io", "eu.gcr.io", "asia.gcr.io":
		return true
	}
	return strings.HasSuffix(host, "-docker.pkg.dev")
}
