package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	container "google.golang.org/api/container/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/gcpfake"
	"github.com/vllm-hpa/vllm-hpa/internal/localcluster"
	"github.com/vllm-hpa/vllm-hpa/internal/vllmsim"
)

// Options shape the emulated cluster and project.
type Options struct {
	Dir           string // where kubeconfig and env go
	Bin           string // the cached Kubernetes binaries
	HPASyncPeriod time.Duration
	PodStartDelay time.Duration
	Sim           vllmsim.Config // per pod; the model comes from MODEL_ID
	Project       string
	ProjectNumber string
	// TargetStatus enables Managed Prometheus's target status in
	// gmp-public/config (GKE's default: off).
	TargetStatus bool
	// Google is how harsh the Google API fakes are.
	Google   gcpfake.Behaviour
	Cluster  string
	Location string
	// NativeMetrics: the cluster serves GKE's native custom metrics (Rapid
	// channel, performance HPA profile, the AutoscalingMetric CRD), read
	// every NativeInterval; false, a cluster that does not.
	NativeMetrics  bool
	NativeInterval time.Duration
}

// DefaultOptions are GKE's intervals and the walkthrough's names; the
// project and cluster are those the README and docs/ name (my-proj,
// gpu-hpa in us-central1), so that every documented command runs on it.
func DefaultOptions() Options {
	return Options{
		HPASyncPeriod: 15 * time.Second,
		PodStartDelay: 3 * time.Second,
		Sim:           vllmsim.Config{TokenLatency: 20 * time.Millisecond, OutputTokens: 50, MaxNumSeqs: 256},
		Project:       "my-proj", ProjectNumber: "123456789012",
		// Google documents up to a minute; the demo keeps it short.
		Google:  gcpfake.Behaviour{NewAccountWindow: 5 * time.Second, MaxPrincipals: gcpfake.DefaultBehaviour.MaxPrincipals},
		Cluster: "gpu-hpa", Location: "us-central1",
		// GKE documents no interval for native metrics, only that the
		// performance profile collects them faster.
		NativeMetrics: true, NativeInterval: 5 * time.Second,
	}
}

// Emulator is a running emulated GKE cluster and project.
type Emulator struct {
	Dir     string
	Env     map[string]string // vllm-hpa's settings for this cluster
	CP      *localcluster.ControlPlane
	GCP     *gcpfake.GCP
	Prom    *prometheus
	Started time.Duration // time to start

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
	sims := newSimulators(o.Sim)
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
		RunPods: true, PodStartDelay: o.PodStartDelay, PodStarted: sims.start, PodStopped: sims.stop, KubeletPort: kubeletPort,
		Monitoring: true, TargetStatus: o.TargetStatus,
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
	cp.PodBackend = func(namespace, name string, port int) (string, bool) {
		addr, err := sims.addr(namespace, name)
		return addr, err == nil
	}
	e.stops = append(e.stops, cp.Stop, cancel)

	e.Prom = newPrometheus(cp.Client, cp.Dynamic, sims)
	go e.Prom.run(bg)
	if o.NativeMetrics {
		native.store.Store(newPrometheus(cp.Client, cp.Dynamic, sims))
		go native.run(bg)
	}
	adapterAddr, err := startAdapter(bg, cp.Kubeconfig, filepath.Join(cp.Dir, "adapter-certs"), &stackdriverProvider{prom: e.Prom, client: cp.Client})
	if err != nil {
		return e, err
	}
	// kube-apiserver reaches the adapter through the Service vllm-hpa
	// creates (in whatever namespace it is configured to use).
	cp.ServeService("*", "custom-metrics-stackdriver-adapter", 443, adapterAddr)

	if e.GCP, err = gcpfake.Start(gcpfake.Project{ID: o.Project, Number: o.ProjectNumber}); err != nil {
		return e, err
	}
	e.stops = append(e.stops, e.GCP.Stop)
	e.GCP.SetBehaviour(o.Google)
	channel, profile := "REGULAR", "NONE"
	if o.NativeMetrics {
		channel, profile = "RAPID", "PERFORMANCE"
	}
	e.GCP.GKE.PutCluster(fmt.Sprintf("projects/%s/locations/%s/clusters/%s", o.Project, o.Location, o.Cluster), &container.Cluster{
		Name: o.Cluster, Location: o.Location, Status: "RUNNING",
		Endpoint:               strings.TrimPrefix(cp.URL, "https://"),
		MasterAuth:             &container.MasterAuth{ClusterCaCertificate: base64.StdEncoding.EncodeToString(cp.PKI.CAPEM)},
		CurrentMasterVersion:   "1.37.2-gke.0",
		Autopilot:              &container.Autopilot{Enabled: true},
		WorkloadIdentityConfig: &container.WorkloadIdentityConfig{WorkloadPool: o.Project + ".svc.id.goog"},
		MonitoringConfig:       &container.MonitoringConfig{ManagedPrometheusConfig: &container.ManagedPrometheusConfig{Enabled: true}},
		ReleaseChannel:         &container.ReleaseChannel{Channel: channel},
		PodAutoscaling:         &container.PodAutoscaling{HpaProfile: profile},
	})

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
		// The simulator loads no model, so any token will do.
		"HF_TOKEN": "hf_emulatorLocalToken",
	}
	e.Started = time.Since(begin)
	return e, nil
}

// WriteEnv writes the settings as a file to source; written last, its
// presence says the emulator is ready.
func (e *Emulator) WriteEnv() (string, error) {
	var b strings.Builder
	b.WriteString("# vllm-hpa settings for the local GKE emulator: source this file\n")
	for _, k := range []string{"KUBECONFIG", "VLLM_HPA_KUBE_KUBECONFIG", "VLLM_HPA_PROJECT", "VLLM_HPA_CLUSTER", "VLLM_HPA_LOCATION",
		"VLLM_HPA_ENDPOINTS_IAM", "VLLM_HPA_ENDPOINTS_RESOURCE_MANAGER", "VLLM_HPA_ENDPOINTS_CONTAINER", "VLLM_HPA_ENDPOINTS_SERVICE_USAGE", "HF_TOKEN"} {
		fmt.Fprintf(&b, "export %s=%s\n", k, e.Env[k])
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
