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
	"syscall"

	"github.com/vllm-hpa/vllm-hpa/internal/localcluster"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "emulator:", err)
		os.Exit(1)
	}
}

func run() error {
	o := DefaultOptions()
	flag.StringVar(&o.Dir, "dir", "", "directory for kubeconfig and env (default: a temporary directory, removed on exit)")
	flag.StringVar(&o.Bin, "k8s-bin", os.Getenv(localcluster.BinDirEnv), "directory of etcd, kube-apiserver and kube-controller-manager (scripts/build-k8s-cache.sh prints it)")
	flag.DurationVar(&o.HPASyncPeriod, "hpa-sync-period", o.HPASyncPeriod, "the HPA controller's sync period (GKE's is 15s)")
	flag.DurationVar(&o.PodStartDelay, "pod-start-delay", o.PodStartDelay, "how long a pod takes to become Ready (model loading)")
	flag.DurationVar(&o.Sim.TokenLatency, "token-latency", o.Sim.TokenLatency, "the simulated server's time per token")
	flag.IntVar(&o.Sim.OutputTokens, "output-tokens", o.Sim.OutputTokens, "tokens per simulated answer")
	flag.IntVar(&o.Sim.MaxNumSeqs, "max-num-seqs", o.Sim.MaxNumSeqs, "simulated requests running at once per pod")
	flag.BoolVar(&o.TargetStatus, "target-status", o.TargetStatus, "enable Managed Prometheus target status in gmp-public/config (GKE's default: off)")
	flag.DurationVar(&o.Google.NewAccountWindow, "new-account-window", o.Google.NewAccountWindow, "how long IAM does not see a new service account (Google: up to about a minute)")
	flag.StringVar(&o.Project, "project", o.Project, "the emulated GCP project id")
	flag.StringVar(&o.ProjectNumber, "project-number", o.ProjectNumber, "the emulated project's number")
	flag.StringVar(&o.Cluster, "cluster", o.Cluster, "the emulated GKE cluster's name")
	flag.StringVar(&o.Location, "location", o.Location, "the emulated cluster's location")
	flag.BoolVar(&o.NativeMetrics, "native-metrics", o.NativeMetrics, "the cluster serves GKE's native custom metrics (Rapid channel, performance HPA profile, AutoscalingMetric); false: a cluster that does not, for hpa.backend auto")
	flag.DurationVar(&o.NativeInterval, "native-interval", o.NativeInterval, "how often the native metrics stand-in scrapes the AutoscalingMetrics' pods")
	counted := flag.Bool("count-requests", false, "also write DIR/kubeconfig-counted, through a proxy that counts requests; GET http://ADDR/counts (ADDR in DIR/counter) reads and resets them (benchmarks)")
	flag.Parse()
	if o.Bin == "" {
		return fmt.Errorf("no Kubernetes binaries: pass --k8s-bin or set %s (scripts/build-k8s-cache.sh prints the directory)", localcluster.BinDirEnv)
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
	<-ctx.Done()
	fmt.Fprintln(os.Stderr, "emulator stopping")
	return nil
}
