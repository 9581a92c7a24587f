// Command emulator runs a local stand-in for a GKE cluster and the Google
// Cloud APIs vllm-hpa calls, made of real components: etcd, kube-apiserver
// (with aggregation) and kube-controller-manager (with the HPA controller)
// from the cached binaries; a pod runner in the kubelet's place that runs a
// vLLM simulator for each vLLM pod and serves port-forwards; a Managed
// Prometheus stand-in that sets PodMonitoring status and scrapes the pods; a
// custom metrics API server (sigs.k8s.io/custom-metrics-apiserver) with the
// Stackdriver adapter's semantics, reached through the Service and
// APIServices vllm-hpa itself creates; and fakes of the IAM, Resource
// Manager and container APIs. Only loopback is ever dialed.
//
// It writes DIR/kubeconfig and DIR/env (the settings vllm-hpa needs, to be
// sourced) and runs until SIGINT or SIGTERM, then stops everything.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vllm-hpa/vllm-hpa/internal/localcluster"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "emulator:", err)
		os.Exit(1)
	}
}

func run() error {
	// The profile sets every timing's default, so it is read before the
	// flags that override one of them.
	profile, compress := "gke", 10.0
	if v, ok := preFlag(os.Args[1:], "profile"); ok {
		profile = v
	}
	if v, ok := preFlag(os.Args[1:], "compress"); ok {
		c, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("invalid --compress %q: a number such as 10", v)
		}
		compress = c
	}
	metricPath := boolPreFlag(os.Args[1:], "compress-metric-path")
	o, err := Profile(profile, compress, metricPath)
	if err != nil {
		return err
	}
	flag.Bool("compress-metric-path", metricPath, "gke profile: divide the metric's path (ingestion, IAM propagation, HPA sync, the scrape interval and scale-down window it writes to the env file) by --compress as well, never below 1s (tests)")
	flag.String("profile", profile, "timing profile: gke (the published lags of a scale-up on GKE, the pod's path divided by --compress) or fast (pods Ready in 3 s, no node to wait for, no ingestion lag)")
	flag.Float64("compress", compress, "gke profile: divide the pod's path (node provisioning, image pull, model load, warm-up, probe period) by this; 1 is GKE's published timings")
	flag.StringVar(&o.Dir, "dir", "", "directory for kubeconfig and env (default: a temporary directory, removed on exit)")
	flag.StringVar(&o.Bin, "k8s-bin", os.Getenv(localcluster.BinDirEnv), "directory of etcd, kube-apiserver and kube-controller-manager (scripts/build-k8s-cache.sh prints it)")
	flag.DurationVar(&o.HPASyncPeriod, "hpa-sync-period", o.HPASyncPeriod, "the HPA controller's sync period (GKE's is 15s)")
	flag.DurationVar(&o.ImagePull, "image-pull", o.ImagePull, "how long a pod's image takes to pull (Pulling to Pulled)")
	flag.DurationVar(&o.Sim.LoadTime, "model-load", o.Sim.LoadTime, "how long vLLM takes to start, compile and capture CUDA graphs, the weights' stage aside (--model-bytes over --hub-rate or --streamer-rate), /health failing (the readiness probe keeps the pod not Ready)")
	flag.DurationVar(&o.Sim.WarmupTime, "warmup", o.Sim.WarmupTime, "after the load, how long completions wait while /health passes (Ready before warm)")
	flag.DurationVar(&o.ProbePeriod, "probe-period", o.ProbePeriod, "how often the kubelet runs the readiness probe")
	flag.DurationVar(&o.IngestionDelay, "ingestion-delay", o.IngestionDelay, "how long a scraped sample takes to reach the Stackdriver adapter (Cloud Monitoring ingestion and query); the native route has none")
	flag.DurationVar(&o.GPUNodes.Provisioning, "node-provisioning", o.GPUNodes.Provisioning, "how long the cluster autoscaler takes to add a GPU node for a pod that does not fit (0: one node has room for every pod)")
	flag.IntVar(&o.GPUNodes.GPUs, "gpus-per-node", o.GPUNodes.GPUs, "GPUs per node when nodes are provisioned")
	flag.IntVar(&o.GPUNodes.Max, "max-nodes", o.GPUNodes.Max, "the GPU node pool's maximum size (NotTriggerScaleUp beyond it)")
	flag.DurationVar(&o.Sim.TokenLatency, "token-latency", o.Sim.TokenLatency, "the simulated server's time per token")
	flag.IntVar(&o.Sim.OutputTokens, "output-tokens", o.Sim.OutputTokens, "tokens per simulated answer")
	flag.IntVar(&o.Sim.MaxNumSeqs, "max-num-seqs", o.Sim.MaxNumSeqs, "simulated requests running at once per pod")
	flag.BoolVar(&o.TargetStatus, "target-status", o.TargetStatus, "enable Managed Prometheus target status in gmp-public/config (GKE's default: off)")
	flag.DurationVar(&o.Google.NewAccountWindow, "new-account-window", o.Google.NewAccountWindow, "how long IAM does not see a new service account (Google: up to about a minute)")
	flag.DurationVar(&o.IAMPropagation, "iam-propagation", o.IAMPropagation, "how long an IAM grant takes to apply to the adapter's identity (Google: typically 2 minutes, sometimes 7 or more); until then the adapter is denied")
	flag.DurationVar(&o.CrashBackoff, "crash-backoff", o.CrashBackoff, "the kubelet's first back-off before restarting a container that exited (doubled each time, up to 30 times it; 0 is the kubelet's own, 10s)")
	flag.StringVar(&o.Project, "project", o.Project, "the emulated GCP project id")
	flag.StringVar(&o.ProjectNumber, "project-number", o.ProjectNumber, "the emulated project's number")
	flag.StringVar(&o.Cluster, "cluster", o.Cluster, "the emulated GKE cluster's name")
	flag.StringVar(&o.Location, "location", o.Location, "the emulated cluster's location")
	flag.BoolVar(&o.NativeMetrics, "native-metrics", o.NativeMetrics, "the cluster serves GKE's native custom metrics (GKE 1.37 GA, performance HPA profile, AutoscalingMetric); false: a cluster that does not (no performance profile), for hpa.backend auto")
	flag.StringVar(&o.ImageCache, "image-cache", o.ImageCache, "boot-disk: a Standard cluster whose L4 pool holds the vLLM image on a secondary boot disk (the pull --image-pull/29, Google's \"up to 29x\"); empty: the Autopilot cluster, pulling the Docker Hub image whole")
	flag.DurationVar(&o.EndpointLag, "endpoint-lag", o.EndpointLag, "how long a deleted pod stays an endpoint of its Service (the EndpointSlice controller's batch period, standing for kube-proxy's lag): requests still reach it")
	flag.DurationVar(&o.NativeInterval, "native-interval", o.NativeInterval, "how often the native metrics stand-in scrapes the AutoscalingMetrics' pods")
	flag.StringVar(&o.ModelBucket, "model-bucket", o.ModelBucket, "gs://BUCKET/PATH the emulated Cloud Storage holds the model in (config, tokenizer and --model-bytes of safetensors) for workload.model-source")
	flag.Int64Var(&o.Weights.Bytes, "model-bytes", o.Weights.Bytes, "the model's weights in bytes (google/gemma-3-1b-it's 2.0 GB; Google's fast-start architecture streamed 59 GiB)")
	hubMBps := flag.Float64("hub-rate", o.Weights.HubRate/1e6, "MB/s a vLLM pod downloads weights from Hugging Face at (0: at once)")
	streamerMBps := flag.Float64("streamer-rate", o.Weights.StreamerRate/1e6, "MB/s the Run:ai streamer reads weights from Cloud Storage at (0: at once)")
	flag.BoolVar(&o.Lean, "lean", o.Lean, "serve only the APIs vllm-hpa and the walkthrough use (no batch, policy, events.k8s.io...) and run etcd, kube-apiserver and kube-controller-manager on one core each (tests: several emulators at once)")
	counted := flag.Bool("count-requests", false, "also write DIR/kubeconfig-counted, through a proxy that counts requests; GET http://ADDR/counts (ADDR in DIR/counter) reads and resets them (benchmarks)")
	flag.Parse()
	o.Weights.HubRate, o.Weights.StreamerRate = *hubMBps*1e6, *streamerMBps*1e6
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: the emulator takes only flags", flag.Arg(0))
	}
	if _, given := preFlag(os.Args[1:], "compress"); (given || metricPath) && profile != "gke" {
		return fmt.Errorf("--compress and --compress-metric-path apply to --profile gke only")
	}
	if o.Bin == "" {
		return fmt.Errorf("no Kubernetes binaries: pass --k8s-bin or set %s (scripts/build-k8s-cache.sh prints the directory)", localcluster.BinDirEnv)
	}
	if !slices.Contains(ImageCaches, o.ImageCache) {
		return fmt.Errorf("invalid --image-cache %q: boot-disk, or empty", o.ImageCache)
	}
	if o.GPUNodes.Provisioning > 0 && (o.GPUNodes.GPUs < 1 || o.GPUNodes.Max < 1) {
		return fmt.Errorf("invalid --gpus-per-node %d or --max-nodes %d: at least 1 each when --node-provisioning is set", o.GPUNodes.GPUs, o.GPUNodes.Max)
	}
	if o.IAMPropagation < 0 || o.CrashBackoff < 0 {
		return fmt.Errorf("invalid --iam-propagation %s or --crash-backoff %s: durations of 0 or more", o.IAMPropagation, o.CrashBackoff)
	}
	if o.Weights.Bytes < 0 || o.Weights.HubRate < 0 || o.Weights.StreamerRate < 0 {
		return fmt.Errorf("invalid --model-bytes %d, --hub-rate or --streamer-rate: 0 or more", o.Weights.Bytes)
	}
	if o.NativeMetrics && o.NativeInterval <= 0 {
		return fmt.Errorf("invalid --native-interval %s: must be a positive duration such as 5s", o.NativeInterval)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.Dir == "" {
		d, err := os.MkdirTemp("", "vllm-hpa-emulator-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		o.Dir = d
	} else if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return err
	}
	// An env file left by an emulator that was killed (SIGKILL: no
	// Stop) would tell whoever waits for this one's that it is ready.
	if err := os.Remove(filepath.Join(o.Dir, "env")); err != nil && !os.IsNotExist(err) {
		return err
	}
	e, err := Start(ctx, o)
	if err != nil {
		return err
	}
	defer e.Stop()
	if *counted {
		if err := e.serveCounter(); err != nil {
			return err
		}
	}
	env, err := e.WriteEnv()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "emulator ready in %.1fs: kube-apiserver %s, HPA sync %s; source %s\n", e.Started.Seconds(), e.CP.URL, o.HPASyncPeriod, env)
	fmt.Fprintln(os.Stderr, describe(profile, compress, metricPath, o))
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "emulator stopping")
	return nil
}

// preFlag finds -name or --name's value among args as the flag package
// parses it: the last one given wins. (The emulator takes no arguments,
// and run refuses any, so a flag after one is never silently dropped.)
func preFlag(args []string, name string) (value string, found bool) {
	for i, a := range args {
		if a == "--" {
			break
		}
		for _, p := range []string{"-", "--"} {
			if v, ok := strings.CutPrefix(a, p+name+"="); ok {
				value, found = v, true
			}
			if a == p+name && i+1 < len(args) {
				value, found = args[i+1], true
			}
		}
	}
	return value, found
}

// boolPreFlag reports whether the boolean flag name is set in args
// (-name, --name, --name=true), before the flags are parsed.
func boolPreFlag(args []string, name string) bool {
	set := false
	for _, a := range args {
		if a == "--" {
			break
		}
		for _, p := range []string{"-", "--"} {
			if a == p+name {
				set = true
			}
			if v, ok := strings.CutPrefix(a, p+name+"="); ok {
				set, _ = strconv.ParseBool(v)
			}
		}
	}
	return set
}

// describe says what the profile models and what it compresses.
func describe(profile string, compress float64, metricPath bool, o Options) string {
	s := func(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }
	metric := fmt.Sprintf("metric: scrape at the PodMonitoring's interval, ingestion to the adapter %s, IAM propagation %s, native metrics every %s, HPA sync %s", s(o.IngestionDelay), s(o.IAMPropagation), s(o.NativeInterval), s(o.HPASyncPeriod))
	node := "one node with room for every pod"
	if o.GPUNodes.Provisioning > 0 {
		node = fmt.Sprintf("a GPU node (%d GPU) in %s, up to %d nodes", o.GPUNodes.GPUs, s(o.GPUNodes.Provisioning), o.GPUNodes.Max)
	}
	pull := s(o.imagePull())
	if o.ImageCache != "" {
		pull += " (from a secondary boot disk)"
	}
	pod := fmt.Sprintf("pod: %s, image pull %s, model load %s and the weights (%.1f GB: %s from Hugging Face, %s streamed from %s), warm-up %s, readiness probe every %s",
		node, pull, s(o.Sim.LoadTime), float64(o.Weights.Bytes)/1e9, s(o.Weights.download()), s(o.Weights.stream(o.Weights.Bytes)), o.ModelBucket, s(o.Sim.WarmupTime), s(o.ProbePeriod))
	head := "profile fast"
	if profile == "gke" {
		head = "profile gke (Google's published scale-up lags"
		switch {
		case compress != 1 && metricPath:
			head += fmt.Sprintf("; the pod's and the metric's paths %gx faster than on GKE", compress)
		case compress != 1:
			head += fmt.Sprintf("; the pod's path %gx faster than on GKE, the metric's path real-time", compress)
		}
		head += ")"
	}
	return head + ": " + metric + "; " + pod
}
