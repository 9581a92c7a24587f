package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	container "google.golang.org/api/container/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/gcpfake"
	"github.com/vllm-hpa/vllm-hpa/internal/localcluster"
	"github.com/vllm-hpa/vllm-hpa/internal/vllmsim"
)

// Options shape the emulated cluster and project.
type Options struct {
	Dir           string // where kubeconfig and env go
	Bin           string // the cached Kubernetes binaries
	HPASyncPeriod time.Duration
	// ImagePull is how long a pod's image takes to pull: from its
	// scheduling to its container's start.
	ImagePull time.Duration
	// ProbePeriod is how often the kubelet runs the readiness probe
	// (the deployment's periodSeconds: 10).
	ProbePeriod time.Duration
	// Sim is each vLLM pod's simulator (the model comes from MODEL_ID);
	// its LoadTime and WarmupTime are the model's load and warm-up.
	Sim vllmsim.Config
	// IngestionDelay is how long a scraped sample takes to reach the
	// Stackdriver adapter's queries (Managed Prometheus's ingestion into
	// Cloud Monitoring and the adapter's query, together).
	IngestionDelay time.Duration
	// IAMPropagation is how long an IAM grant takes to apply to the
	// adapter's identity (Google: typically 2 minutes, sometimes 7 or
	// more); until then the adapter is denied.
	IAMPropagation time.Duration
	// CrashBackoff is the kubelet's first restart back-off for a pod whose
	// process exits at start (the adapter without identity): 10 s on GKE,
	// doubled on each restart up to 5 minutes.
	CrashBackoff time.Duration
	// GPUNodes is the cluster autoscaler's GPU pool; without Provisioning
	// one node holds every GPU pod.
	GPUNodes localcluster.GPUNodes
	Project  string
	// ProjectNumber is the emulated project's number.
	ProjectNumber string
	// TargetStatus enables Managed Prometheus's target status in
	// gmp-public/config (GKE's default: off).
	TargetStatus bool
	// Google is how harsh the Google API fakes are.
	Google gcpfake.Behaviour
	// Settings are vllm-hpa settings the profile asks for beside the
	// connection (a compressed metric path's scrape interval and
	// scale-down window), written to the env file as well.
	Settings map[string]string
	Cluster  string
	Location string
	// NativeMetrics: the cluster serves GKE's native custom metrics (GA
	// in 1.37, the performance HPA profile, the AutoscalingMetric CRD),
	// read every NativeInterval; false, a cluster that does not.
	NativeMetrics  bool
	NativeInterval time.Duration
	// Lean serves only the APIs vllm-hpa and the walkthrough use and runs
	// each control-plane process on one core (localcluster's OnlyUsedAPIs
	// and OneProc): for the tests, which run several emulators at once on
	// 2 cores beside the CLI's control planes.
	Lean bool
	// ImageCache "boot-disk" makes the cluster a Standard one whose L4
	// pool has a secondary boot disk holding the vLLM image (and image
	// streaming on): the image pull takes ImagePull / BootDiskSpeedup.
	// "": the Autopilot cluster, which pulls the Docker Hub image whole.
	ImageCache string
	// EndpointLag is how long a pod being deleted stays an endpoint of
	// its Service (kube-proxy's programming on GKE's nodes lags the
	// deletion): requests still reach it that long.
	EndpointLag time.Duration
	// Weights are the weights' stage of the model load (added to
	// Sim.LoadTime), by where a pod's vLLM reads them from. The project
	// holds the model in ModelBucket (gs://BUCKET/PATH) for
	// workload.model-source: its config, tokenizer and Weights.Bytes of
	// safetensors.
	Weights     Weights
	ModelBucket string
}

// Weights model how long a vLLM server takes to get its model's weights.
type Weights struct {
	// Bytes are the model's weights (a bucket's are its safetensors).
	Bytes int64
	// HubRate and StreamerRate are bytes per second downloaded from
	// Hugging Face and streamed from Cloud Storage by the Run:ai streamer
	// (0: no time at all).
	HubRate, StreamerRate float64
}

func (w Weights) download() time.Duration { return transfer(w.Bytes, w.HubRate) }

func (w Weights) stream(bytes int64) time.Duration { return transfer(bytes, w.StreamerRate) }

func transfer(bytes int64, rate float64) time.Duration {
	if rate <= 0 {
		return 0
	}
	return time.Duration(float64(bytes) / rate * float64(time.Second))
}

// scaled are the weights at rates multiplied by compress.
func (w Weights) scaled(compress float64) Weights {
	w.HubRate *= compress
	w.StreamerRate *= compress
	return w
}

// Profiles are the emulator's timing profiles.
var Profiles = []string{"gke", "fast"}

// DefaultOptions are the fast profile: GKE's intervals (scrape, HPA sync)
// and the walkthrough's names, and pods that start in 3 s on a node that
// has room for them all. The project and cluster are those the README and
// docs/ name (my-proj, gpu-hpa in us-central1), so that every documented
// command runs on it.
func DefaultOptions() Options {
	return Options{
		HPASyncPeriod: 15 * time.Second,
		ImagePull:     3 * time.Second, ProbePeriod: 10 * time.Second, CrashBackoff: time.Second,
		Sim:     vllmsim.Config{TokenLatency: 20 * time.Millisecond, OutputTokens: 50, MaxNumSeqs: 256},
		Project: "my-proj", ProjectNumber: "123456789012",
		// Google documents up to a minute; the demo keeps it short.
		Google:  gcpfake.Behaviour{NewAccountWindow: 5 * time.Second, MaxPrincipals: gcpfake.DefaultBehaviour.MaxPrincipals},
		Cluster: "gpu-hpa", Location: "us-central1",
		// GKE documents no interval for native metrics, only that the
		// performance profile collects them faster.
		NativeMetrics: true, NativeInterval: 5 * time.Second,
		EndpointLag: time.Second,
		// The walkthrough's model, in the bucket workload.model-source
		// names in docs/; the fast profile loads it at once.
		Weights:     Weights{Bytes: gemmaBytes},
		ModelBucket: "gs://my-models/google/gemma-3-1b-it",
		// The simulator answers in about a second: a 5 s drain covers
		// the endpoint's removal and every answer, and a scale-down
		// does not wait vllm-hpa's default 30 s.
		Settings: map[string]string{"VLLM_HPA_WORKLOAD_DRAIN": "5s"},
	}
}

// The gke profile's lags, from Google's vLLM reference architecture
// (GoogleCloudPlatform/accelerated-platforms, online-inference-gpu):
// before compression, a scale-up from load to the new pod's first answer
// takes about 5.5 minutes against the published 4.3-7.4.
const (
	// The adapter saw the metric 48-54 s after saturation with a 15 s
	// scrape: 40 s of ingestion and query after a scrape 0-15 s late.
	gkeIngestion = 40 * time.Second
	// A GPU node: 1-2 minutes (RTX PRO 6000) to 2-3 (H100).
	gkeNodeProvisioning = 90 * time.Second
	// The vLLM image (about 10 GB) without image streaming.
	gkeImagePull = 45 * time.Second
	// vLLM's start before the weights (the published 1-1.5 min, less the
	// pull), compilation and CUDA graph capture (1.3-2.7 min): /health
	// fails all along. The weights' stage comes between (Weights).
	gkeModelLoad = 30*time.Second + 100*time.Second
	// Pods were Ready about 22 s before they served.
	gkeWarmup = 22 * time.Second
	// IAM applies a grant in about 2 minutes (sometimes 7 or more:
	// cloud.google.com/iam/docs/access-change-propagation).
	gkeIAMPropagation = 2 * time.Minute
	// The kubelet's first back-off before restarting a crashed container.
	gkeCrashBackoff = 10 * time.Second
	// vllm-hpa's defaults for the metric's path, compressed with it:
	// monitoring.interval and hpa.scale-down-stabilization.
	gkeScrapeInterval  = 15 * time.Second
	gkeScaleDownWindow = 30 * time.Second
	// A deleted pod stays behind its Service until kube-proxy on every
	// node has reprogrammed (its minimum sync period is 1 s): the model's
	// figure, not a published one.
	gkeEndpointLag = 2 * time.Second
)

// The weights: the walkthrough's model, google/gemma-3-1b-it, is 2.0 GB
// of safetensors (bf16, 1.0 B parameters).
//   - The Run:ai streamer from Cloud Storage: Google measured 58.99 GiB
//     in 48.2 s on an H100 (1.22 GiB/s; GoogleCloudPlatform/
//     accelerated-platforms, vllm-with-runai-model-streamer.md).
//   - A download from Hugging Face: no Google or Hugging Face page gives
//     a measured rate; a published cold start of Llama-3.1-8B (16 GB) on
//     an L40S downloaded it in 61 s (tensorfuse.io, "reducing GPU cold
//     start"), 0.26 GB/s, as Google's own "default load path" row (0.30
//     GiB/s) agrees.
const (
	gemmaBytes      = 2_000_000_000
	gkeStreamerRate = 58.99 * (1 << 30) / 48.2
	gkeHubRate      = 16e9 / 61
)

// BootDiskSpeedup: a secondary boot disk holding the image is "up to 29x
// faster" than its pull for a 16 GB image (Google, "Use secondary boot
// disks to preload data or container images").
const BootDiskSpeedup = 29

// ImageCaches are the values of Options.ImageCache.
var ImageCaches = []string{"", "boot-disk"}

// GKEOptions is the gke profile: the fast profile's names and intervals
// with the published lags of a scale-up on GKE. The pod's path (node,
// pull, model load, warm-up) is divided by compress, so that a demo
// finishes in minutes. The metric's path (scrape, ingestion, IAM's
// propagation, HPA sync, the scale-down window) keeps its real timing
// unless metricPath: then it is divided too (never below a second), so
// that a test sees every stage of a gke scale-up in its order, at a
// fiftieth of its length.
func GKEOptions(compress float64, metricPath bool) Options {
	o := DefaultOptions()
	scale := func(d time.Duration) time.Duration { return time.Duration(float64(d) / compress) }
	o.IngestionDelay, o.IAMPropagation = gkeIngestion, gkeIAMPropagation
	if metricPath {
		atLeastSecond := func(d time.Duration) time.Duration { return max(scale(d), time.Second).Round(time.Second) }
		o.IngestionDelay, o.IAMPropagation = scale(gkeIngestion), scale(gkeIAMPropagation)
		o.HPASyncPeriod, o.NativeInterval = atLeastSecond(o.HPASyncPeriod), atLeastSecond(o.NativeInterval)
		o.Google.NewAccountWindow = scale(o.Google.NewAccountWindow)
		o.Settings = map[string]string{
			"VLLM_HPA_MONITORING_INTERVAL":          atLeastSecond(gkeScrapeInterval).String(),
			"VLLM_HPA_HPA_SCALE_DOWN_STABILIZATION": atLeastSecond(gkeScaleDownWindow).String(),
			"VLLM_HPA_WORKLOAD_DRAIN":               o.Settings["VLLM_HPA_WORKLOAD_DRAIN"],
		}
	} else {
		// At GKE's timings, vllm-hpa's own default drain.
		o.Settings = nil
	}
	o.EndpointLag = gkeEndpointLag
	o.CrashBackoff = scale(gkeCrashBackoff)
	o.GPUNodes = localcluster.GPUNodes{GPUs: 1, Provisioning: scale(gkeNodeProvisioning), Max: 8}
	o.ImagePull, o.ProbePeriod = scale(gkeImagePull), scale(o.ProbePeriod)
	o.Sim.LoadTime, o.Sim.WarmupTime = scale(gkeModelLoad), scale(gkeWarmup)
	o.Weights = Weights{Bytes: gemmaBytes, HubRate: gkeHubRate, StreamerRate: gkeStreamerRate}.scaled(compress)
	return o
}

// imagePull is how long a pod's image takes to pull on this cluster's
// nodes.
func (o Options) imagePull() time.Duration {
	if o.ImageCache == "boot-disk" {
		return o.ImagePull / BootDiskSpeedup
	}
	return o.ImagePull
}

// Profile returns the options of profile name ("gke" divides the pod's
// path by compress, and the metric's path too when metricPath).
func Profile(name string, compress float64, metricPath bool) (Options, error) {
	switch {
	case name == "fast":
		return DefaultOptions(), nil
	case name == "gke" && compress >= 1 && compress <= 100:
		return GKEOptions(compress, metricPath), nil
	case name == "gke":
		return Options{}, fmt.Errorf("invalid --compress %g: between 1 (GKE's published timings) and 100", compress)
	}
	return Options{}, fmt.Errorf("invalid --profile %q: one of %s", name, strings.Join(Profiles, ", "))
}

// Emulator is a running emulated GKE cluster and project.
type Emulator struct {
	Dir     string
	Env     map[string]string // vllm-hpa's settings for this cluster
	CP      *localcluster.ControlPlane
	GCP     *gcpfake.GCP
	Prom    *prometheus
	Started time.Duration // time to start
	// Settings are the profile's vllm-hpa settings (Options.Settings).
	Settings map[string]string

	stops []func()
}

// Start starts everything; Stop stops it.
func Start(ctx context.Context, o Options) (e *Emulator, err error) {
	begin := time.Now()
	e = &Emulator{Dir: o.Dir}
	defer func() {
		if err != nil {
			e.Stop()
			e = nil
		}
	}()
	os.Setenv(localcluster.BinDirEnv, o.Bin)
	// The Google APIs first: the adapter's pods authenticate against them
	// as they start.
	if e.GCP, err = gcpfake.Start(gcpfake.Project{ID: o.Project, Number: o.ProjectNumber}); err != nil {
		return e, err
	}
	e.stops = append(e.stops, e.GCP.Stop)
	behaviour := o.Google
	behaviour.IngestionDelay, behaviour.IAMPropagation = o.IngestionDelay, o.IAMPropagation
	e.GCP.SetBehaviour(behaviour)
	target := monitoredCluster{project: o.Project, location: o.Location, cluster: o.Cluster}
	adapter := &stackdriverProvider{gcp: e.GCP, target: target}
	if err := putModel(e.GCP, o.Project, o.ModelBucket, o.Weights.Bytes); err != nil {
		return e, err
	}
	sims := newSimulators(o.Sim, o.Weights, e.GCP, o.Project)
	e.stops = append(e.stops, sims.stopAll)
	kl := &kubelet{sims: sims}
	kubeletPort, stopKubelet, err := kl.serve()
	if err != nil {
		return e, err
	}
	e.stops = append(e.stops, stopKubelet)

	// The background work lives until Stop, and stops before the control
	// plane does.
	bg, cancel := context.WithCancel(context.Background())
	startCtx, cancelStart := context.WithTimeout(ctx, 3*time.Minute)
	defer cancelStart()
	lopts := localcluster.Options{
		Controllers: true, HPASyncPeriod: o.HPASyncPeriod, Aggregation: true,
		RunPods: true, PodStartDelay: o.imagePull(), KubeletPort: kubeletPort, PodCrashBackoff: o.CrashBackoff,
		// A vLLM pod runs a simulator; an adapter pod authenticates as
		// the real adapter does at start.
		PodStarted: func(pod *corev1.Pod) error {
			if isAdapter(pod) {
				return adapter.startPod(pod)
			}
			return sims.start(pod)
		},
		PodStopped: func(pod *corev1.Pod) {
			adapter.stopPod(pod)
			sims.stop(pod)
		},
		// The deployment's readiness probe: GET /health.
		PodReady: sims.healthy, PodProbePeriod: o.ProbePeriod, GPUNodes: o.GPUNodes,
		// Scale-down as on GKE: the preStop pause, then SIGTERM, while
		// the endpoint leaves the Service EndpointLag after the deletion.
		PodDrain: true, EndpointLag: o.EndpointLag,
		Monitoring: true, TargetStatus: o.TargetStatus,
		OnlyUsedAPIs: o.Lean, OneProc: o.Lean,
	}
	// GKE's native metrics, bound to the cluster's clients once it runs.
	native := &gkeNative{interval: o.NativeInterval}
	if o.NativeMetrics {
		lopts.NativeMetrics = native
	}
	cp, err := localcluster.Start(startCtx, lopts)
	if err != nil {
		cancel()
		return e, err
	}
	e.CP = cp
	// kube-apiserver proxies to a vLLM pod's port (pods/proxy) through
	// its simulator.
	cp.PodAddress = func(namespace, name string, port int) (string, bool) {
		addr, err := sims.addr(namespace, name)
		return addr, err == nil
	}
	e.stops = append(e.stops, cp.Stop, cancel)

	// Managed Prometheus writes to Cloud Monitoring, which holds each
	// sample IngestionDelay before the adapter can read it.
	e.Prom = newPrometheus(cp.Client, cp.Dynamic, sims)
	e.Prom.sink, e.Prom.target = e.GCP.Monitoring, target
	go e.Prom.run(bg)
	if o.NativeMetrics {
		// GKE collects native metrics itself, without Cloud
		// Monitoring's ingestion.
		native.store.Store(newPrometheus(cp.Client, cp.Dynamic, sims))
		go native.run(bg)
	}
	adapter.client = cp.Client
	adapterAddr, err := startAdapter(bg, cp.Kubeconfig, filepath.Join(cp.Dir, "adapter-certs"), adapter)
	if err != nil {
		return e, err
	}
	// kube-apiserver reaches the adapter through the Service vllm-hpa
	// creates (in whatever namespace it is configured to use).
	cp.ServeService("*", "custom-metrics-stackdriver-adapter", 443, adapterAddr)

	// GKE 1.37.2 serves native custom metrics as GA in any channel: the
	// HPA profile decides (NONE: a cluster that does not serve them).
	channel, profile := "REGULAR", "NONE"
	if o.NativeMetrics {
		profile = "PERFORMANCE"
	}
	cluster := &container.Cluster{
		Name: o.Cluster, Location: o.Location, Status: "RUNNING",
		Endpoint:               strings.TrimPrefix(cp.URL, "https://"),
		MasterAuth:             &container.MasterAuth{ClusterCaCertificate: base64.StdEncoding.EncodeToString(cp.PKI.CAPEM)},
		CurrentMasterVersion:   "1.37.2-gke.0",
		Autopilot:              &container.Autopilot{Enabled: true},
		WorkloadIdentityConfig: &container.WorkloadIdentityConfig{WorkloadPool: o.Project + ".svc.id.goog"},
		MonitoringConfig:       &container.MonitoringConfig{ManagedPrometheusConfig: &container.ManagedPrometheusConfig{Enabled: true}},
		ReleaseChannel:         &container.ReleaseChannel{Channel: channel},
		PodAutoscaling:         &container.PodAutoscaling{HpaProfile: profile},
	}
	if o.ImageCache == "boot-disk" {
		// A Standard cluster: an autoscaled L4 pool whose nodes hold the
		// vLLM image on a secondary boot disk.
		cluster.Autopilot = nil
		cluster.NodePools = []*container.NodePool{{Name: "l4-pool", Config: &container.NodeConfig{
			Accelerators:           []*container.AcceleratorConfig{{AcceleratorType: "nvidia-l4", AcceleratorCount: 1}},
			WorkloadMetadataConfig: &container.WorkloadMetadataConfig{Mode: "GKE_METADATA"},
			GcfsConfig:             &container.GcfsConfig{Enabled: true},
			SecondaryBootDisks:     []*container.SecondaryBootDisk{{DiskImage: "global/images/vllm-openai-v0-11-0", Mode: "CONTAINER_IMAGE_CACHE"}},
		}}}
	}
	e.GCP.GKE.PutCluster(fmt.Sprintf("projects/%s/locations/%s/clusters/%s", o.Project, o.Location, o.Cluster), cluster)

	kubeconfig := filepath.Join(o.Dir, "kubeconfig")
	b, err := os.ReadFile(cp.Kubeconfig)
	if err == nil {
		err = os.WriteFile(kubeconfig, b, 0o600)
	}
	if err != nil {
		return e, err
	}
	e.Env = map[string]string{
		"VLLM_HPA_KUBE_KUBECONFIG": kubeconfig,
		// For kubectl beside vllm-hpa, once the env file is sourced.
		"KUBECONFIG":                          kubeconfig,
		"VLLM_HPA_PROJECT":                    o.Project,
		"VLLM_HPA_CLUSTER":                    o.Cluster,
		"VLLM_HPA_LOCATION":                   o.Location,
		"VLLM_HPA_ENDPOINTS_IAM":              e.GCP.IAMEndpoint,
		"VLLM_HPA_ENDPOINTS_RESOURCE_MANAGER": e.GCP.ResourceManagerEndpoint,
		"VLLM_HPA_ENDPOINTS_CONTAINER":        e.GCP.ContainerEndpoint,
		"VLLM_HPA_ENDPOINTS_SERVICE_USAGE":    e.GCP.ServiceUsageEndpoint,
		"VLLM_HPA_ENDPOINTS_MONITORING":       e.GCP.MonitoringEndpoint,
		"VLLM_HPA_ENDPOINTS_STORAGE":          e.GCP.StorageEndpoint,
		// The simulator loads no model, so any token will do.
		"HF_TOKEN": "hf_emulatorLocalToken",
	}
	for k, v := range o.Settings {
		e.Env[k] = v
	}
	e.Settings = o.Settings
	e.Started = time.Since(begin)
	return e, nil
}

// putModel puts a model into the project's Cloud Storage at source
// (gs://BUCKET/PATH): what `hf download` and `gcloud storage rsync` put
// there for vLLM's streamer, with weights bytes of safetensors.
func putModel(g *gcpfake.GCP, project, source string, weights int64) error {
	if source == "" {
		return nil
	}
	bucket, dir, ok := config.Workload{ModelSource: source}.ModelBucket()
	if !ok || dir == "" {
		return fmt.Errorf("invalid --model-bucket %q: gs://BUCKET/PATH", source)
	}
	g.Storage.PutBucket(project, bucket)
	for name, size := range map[string]int64{"config.json": 855, "generation_config.json": 215, "tokenizer.json": 33_384_568, "tokenizer.model": 4_689_074, "tokenizer_config.json": 1_156_999, "special_tokens_map.json": 662, "model.safetensors": weights} {
		g.Storage.PutObject(bucket, dir+"/"+name, size)
	}
	return nil
}

// WriteEnv writes the settings as a file to source; written last, its
// presence says the emulator is ready.
func (e *Emulator) WriteEnv() (string, error) {
	var b strings.Builder
	b.WriteString("# vllm-hpa settings for the local GKE emulator: source this file\n")
	for _, k := range []string{"KUBECONFIG", "VLLM_HPA_KUBE_KUBECONFIG", "VLLM_HPA_PROJECT", "VLLM_HPA_CLUSTER", "VLLM_HPA_LOCATION",
		"VLLM_HPA_ENDPOINTS_IAM", "VLLM_HPA_ENDPOINTS_RESOURCE_MANAGER", "VLLM_HPA_ENDPOINTS_CONTAINER", "VLLM_HPA_ENDPOINTS_SERVICE_USAGE", "VLLM_HPA_ENDPOINTS_MONITORING", "VLLM_HPA_ENDPOINTS_STORAGE", "HF_TOKEN"} {
		fmt.Fprintf(&b, "export %s=%s\n", k, e.Env[k])
	}
	for _, k := range slices.Sorted(maps.Keys(e.Settings)) {
		fmt.Fprintf(&b, "export %s=%s\n", k, e.Settings[k])
	}
	path := filepath.Join(e.Dir, "env")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return "", err
	}
	return path, os.Rename(tmp, path)
}

// Stop stops everything in reverse order of starting.
func (e *Emulator) Stop() {
	for i := len(e.stops) - 1; i >= 0; i-- {
		e.stops[i]()
	}
	e.stops = nil
	if e.Dir != "" {
		os.Remove(filepath.Join(e.Dir, "env"))
	}
}
