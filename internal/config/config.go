// Package config holds the one configuration struct every step renders and
// acts from: every name and value of the stack, with defaults that reproduce
// the walkthrough (with its two inconsistencies fixed: one project id, one
// Service name).
package config

import (
	"fmt"
	"maps"
	"sort"
	"strings"
	"time"

	"github.com/vllm-hpa/vllm-hpa/internal/nativemetrics"
)

// Config is the whole stack's configuration. The `key` tags are the YAML keys
// of the config file; nested structs are YAML sections. Environment variables
// are VLLM_HPA_ followed by the key path upper-cased with '.' and '-' as '_'.
type Config struct {
	// given are the keys a flag, the environment or the file set (Load).
	given map[string]bool
	// origin says where a key not given came from when it is not its
	// default: Google's tools' configuration or the kube context.
	origin map[string]string
	// file is the config file read: a path, StdinFile, or "" for none.
	file string

	// Project is the GCP project id; every IAM member string derives from it.
	Project string `key:"project"`
	// Cluster and Location name the GKE cluster, for discovery through the
	// container API and for the preconditions.
	Cluster  string `key:"cluster"`
	Location string `key:"location"`
	// EndpointType is how the cluster's control plane is reached through
	// the container API: its public endpoint, its private endpoint (an
	// internal IP), or its DNS endpoint.
	EndpointType string `key:"endpoint-type"`
	// Instance is the value of the stack-instance label on every object; it
	// lets two stacks share a cluster and lets cleanup find only its own.
	Instance string `key:"instance"`
	// Adopt takes over existing objects (and the Google service account)
	// vllm-hpa did not create; they are marked adopted, and cleanup removes
	// only vllm-hpa's labels and fields from them, never the objects.
	Adopt bool `key:"adopt"`

	Workload   Workload   `key:"workload"`
	HFToken    HFToken    `key:"hf-token"`
	Service    Service    `key:"service"`
	Monitoring Monitoring `key:"monitoring"`
	Adapter    Adapter    `key:"adapter"`
	Identity   Identity   `key:"identity"`
	HPA        HPA        `key:"hpa"`
	Timeouts   Timeouts   `key:"timeouts"`
	Kube       Kube       `key:"kube"`
	Endpoints  Endpoints  `key:"endpoints"`
}

// Workload is the vLLM inference server's Deployment.
type Workload struct {
	Namespace        string `key:"namespace"`
	Deployment       string `key:"deployment"`
	Replicas         int32  `key:"replicas"`
	AppLabel         string `key:"app-label"`
	ModelLabel       string `key:"model-label"`
	ServerLabel      string `key:"server-label"`
	Container        string `key:"container"`
	Image            string `key:"image"`
	Model            string `key:"model"`
	Port             int32  `key:"port"`
	TensorParallel   int32  `key:"tensor-parallel-size"`
	LogLevel         string `key:"log-level"`
	CPU              string `key:"cpu"`
	Memory           string `key:"memory"`
	EphemeralStorage string `key:"ephemeral-storage"`
	GPUs             int32  `key:"gpus"`
	Accelerator      string `key:"accelerator"`
	GPUDriverVersion string `key:"gpu-driver-version"`
	Spot             bool   `key:"spot"`
	// ComputeClass, when set, is the GKE ComputeClass the pods select
	// (nodeSelector cloud.google.com/compute-class): the class then says
	// which GPU, driver and Spot, in place of the accelerator selectors.
	ComputeClass string `key:"compute-class"`
	// Drain is how long a vLLM pod being deleted keeps serving before it
	// is sent SIGTERM (a preStop pause): long enough for its endpoint to
	// leave the Service and for the requests it holds to finish. vLLM
	// aborts every request in flight on SIGTERM (its launcher cancels the
	// server task), so the pause is the only drain; 0 sends SIGTERM at once.
	Drain time.Duration `key:"drain"`
	// ModelSource, when set, is where the server loads the weights from
	// in place of Hugging Face: gs://BUCKET/PATH, streamed by vLLM's
	// Run:ai model streamer as the pods' own Kubernetes service account
	// (Workload Identity, roles/storage.objectViewer on the bucket).
	ModelSource string `key:"model-source"`
}

// StreamerImage is the default image with workload.model-source: vLLM
// 0.11.1 is the first whose image ships the Run:ai streamer's Cloud
// Storage client (runai-model-streamer[gcs], vLLM #26464; Google's GKE
// page on the streamer asks for 0.11.1 or later). 0.11.0's code accepts
// gs:// but its image cannot read it.
const StreamerImage = "vllm/vllm-openai:v0.11.1"

// GCSPrefix is the scheme of workload.model-source.
const GCSPrefix = "gs://"

// ModelBucket splits workload.model-source into its bucket and the path
// of the model's directory in it (without a trailing /); ok is false when
// the weights come from Hugging Face.
func (w Workload) ModelBucket() (bucket, path string, ok bool) {
	rest, ok := strings.CutPrefix(w.ModelSource, GCSPrefix)
	if !ok {
		return "", "", false
	}
	bucket, path, _ = strings.Cut(rest, "/")
	return bucket, strings.TrimSuffix(path, "/"), true
}

// ServiceAccount is the Kubernetes service account the vLLM pods run as:
// their own (named as the Deployment) when they read the weights from a
// bucket, so that the bucket's grant is to them alone; else the
// namespace's default.
func (w Workload) ServiceAccount() string {
	if _, _, ok := w.ModelBucket(); ok {
		return w.OwnServiceAccount()
	}
	return ""
}

// OwnServiceAccount is the name of the vLLM pods' own KSA whenever they
// have one (cleanup looks for it even when the configuration no longer
// names a model bucket).
func (w Workload) OwnServiceAccount() string { return w.Deployment }

// DrainShutdown is what terminationGracePeriodSeconds adds to the drain:
// vLLM's own shutdown after SIGTERM (engine and workers) before the
// kubelet kills it.
const DrainShutdown = 15 * time.Second

// TerminationGrace is the vLLM pods' terminationGracePeriodSeconds: the
// drain, then vLLM's shutdown.
func (w Workload) TerminationGrace() time.Duration { return w.Drain + DrainShutdown }

// HFToken says where the Hugging Face token goes. The token itself is never a
// config key or flag value: it comes from the HF_TOKEN environment variable
// or from File.
type HFToken struct {
	File       string `key:"file"`
	SecretName string `key:"secret-name"`
	SecretKey  string `key:"secret-key"`
	EnvName    string `key:"env-name"`

	// value is the token, loaded by Load; unexported so that no encoder
	// (YAML, JSON, viper) can ever see it.
	value string
	// problem is why the token given cannot be used (malformed, or its
	// file unreadable); only the commands that write or check it fail on
	// it (TokenProblem).
	problem error
	// raw is what was read, usable or not: a secret all the same.
	raw string
}

// Service is the ClusterIP Service in front of the vLLM pods.
type Service struct {
	Name string `key:"name"`
	Port int32  `key:"port"`
}

// Monitoring is the Managed Prometheus PodMonitoring that scrapes vLLM.
type Monitoring struct {
	Name     string        `key:"name"`
	Path     string        `key:"path"`
	Interval time.Duration `key:"interval"`
	// PodMonitoring: with the native backend, keep the PodMonitoring
	// (the adapter route always has it).
	PodMonitoring bool `key:"pod-monitoring"`
}

// Adapter is the Custom Metrics Stackdriver Adapter.
type Adapter struct {
	Namespace      string `key:"namespace"`
	ServiceAccount string `key:"service-account"`
	Image          string `key:"image"`
	Tag            string `key:"tag"`
}

// Identity is the Workload Identity wiring of the adapter to Cloud Monitoring.
type Identity struct {
	// Mode is "gsa" (the walkthrough's Google service account route) or
	// "direct" (roles/monitoring.viewer granted to the KSA's principal).
	Mode           string `key:"mode"`
	GSAName        string `key:"gsa-name"`
	GSADisplayName string `key:"gsa-display-name"`
	// AdoptExistingGSA uses a Google service account vllm-hpa did not
	// create (cleanup then leaves it in place).
	AdoptExistingGSA   bool   `key:"adopt-existing-gsa"`
	ImpersonateAccount string `key:"impersonate-service-account"`
}

// HPA is the HorizontalPodAutoscaler on the vLLM Deployment.
type HPA struct {
	Name        string `key:"name"`
	MinReplicas int32  `key:"min-replicas"`
	MaxReplicas int32  `key:"max-replicas"`
	// Metric is one of Metrics, or several joined by "+" (a combined
	// strategy: the HPA scales on whichever asks for most replicas).
	Metric string  `key:"metric"`
	Target float64 `key:"target"` // the first metric's target (see targetOf)
	// Each metric's own target: a further metric's in a combined
	// strategy (hpa.metric waiting+kv-cache: KVCacheTarget), and the
	// first's when hpa.target is not given.
	RunningTarget float64 `key:"running-target"`
	WaitingTarget float64 `key:"waiting-target"`
	KVCacheTarget float64 `key:"kv-cache-target"`
	// Backend is how the HPA reads the metric: adapter (the Stackdriver
	// adapter, through Cloud Monitoring), native (GKE's native custom
	// metrics, an AutoscalingMetric) or auto (native where the cluster
	// serves it). Commands that reach the cluster resolve auto (see
	// internal/steps.ResolveBackend) before anything reads it.
	Backend string `key:"backend"`

	ScaleUpStabilization   time.Duration `key:"scale-up-stabilization"`
	ScaleUpPods            int32         `key:"scale-up-pods"`
	ScaleUpPercent         int32         `key:"scale-up-percent"`
	ScaleUpPeriod          time.Duration `key:"scale-up-period"`
	ScaleDownStabilization time.Duration `key:"scale-down-stabilization"`
	ScaleDownPercent       int32         `key:"scale-down-percent"`
	ScaleDownPeriod        time.Duration `key:"scale-down-period"`
}

// Timeouts bound each step's wait for its conditions.
type Timeouts struct {
	Deploy  time.Duration `key:"deploy"`
	Monitor time.Duration `key:"monitor"`
	Adapter time.Duration `key:"adapter"`
	// Identity bounds the wait, once the grants are made, for the adapter
	// to read Cloud Monitoring (IAM applies them in about 2 minutes,
	// sometimes 7 or more).
	Identity time.Duration `key:"identity"`
	HPA      time.Duration `key:"hpa"`
	Cleanup  time.Duration `key:"cleanup"`
}

// Kube says how to reach the Kubernetes API server.
type Kube struct {
	Kubeconfig     string `key:"kubeconfig"`
	Context        string `key:"context"`
	ForceConflicts bool   `key:"force-conflicts"`
}

// Endpoints override the Google API endpoints (tests and the local emulator
// point them at fakes on loopback). Empty means Google's default.
type Endpoints struct {
	IAM             string `key:"iam"`
	ResourceManager string `key:"resource-manager"`
	Container       string `key:"container"`
	ServiceUsage    string `key:"service-usage"`
	Monitoring      string `key:"monitoring"`
	Storage         string `key:"storage"`
}

// Metrics the HPA can scale on (hpa.metric), each a vLLM gauge.
var Metrics = map[string]string{
	"running":  "vllm:num_requests_running",
	"waiting":  "vllm:num_requests_waiting",
	"kv-cache": "vllm:kv_cache_usage_perc",
}

// MetricNames are the values hpa.metric takes, sorted.
func MetricNames() []string {
	var out []string
	for k := range Metrics {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Default returns the walkthrough's configuration. Project has no default.
func Default() Config {
	return Config{
		Instance:     "gemma-server",
		EndpointType: "public",
		Workload: Workload{
			Namespace:        "default",
			Deployment:       "vllm-gemma-deployment",
			Replicas:         1,
			AppLabel:         "gemma-server",
			ModelLabel:       "gemma-3-1b-it",
			ServerLabel:      "vllm",
			Container:        "inference-server",
			Image:            "vllm/vllm-openai:v0.11.0",
			Model:            "google/gemma-3-1b-it",
			Port:             8081,
			TensorParallel:   1,
			LogLevel:         "DEBUG",
			CPU:              "2",
			Memory:           "10Gi",
			EphemeralStorage: "10Gi",
			GPUs:             1,
			Accelerator:      "nvidia-l4",
			GPUDriverVersion: "latest",
			Spot:             true,
			// kube-proxy's lag (a few seconds) and the longest answer of
			// a small model under load; verify --load says when the
			// longest answer it saw does not fit.
			Drain: 30 * time.Second,
		},
		HFToken: HFToken{
			SecretName: "hf-secret",
			SecretKey:  "hf_token",
			EnvName:    "HUGGING_FACE_HUB_TOKEN",
		},
		Service: Service{Name: "llm-service", Port: 8081},
		Monitoring: Monitoring{
			Name:     "gemma-pod-monitoring",
			Path:     "/metrics",
			Interval: 15 * time.Second,
			// Dashboards and alerts read Cloud Monitoring, and a switch
			// back to the adapter finds samples already there.
			PodMonitoring: true,
		},
		Adapter: Adapter{
			Namespace:      "custom-metrics",
			ServiceAccount: "custom-metrics-stackdriver-adapter",
			Image:          "gcr.io/gke-release/custom-metrics-stackdriver-adapter",
			Tag:            "v0.16.10-gke.0",
		},
		Identity: Identity{
			Mode:           "gsa",
			GSAName:        "metrics-adapter-gsa",
			GSADisplayName: "Metrics Adapter GSA",
		},
		HPA: HPA{
			Name:        "gemma-server-hpa",
			MinReplicas: 1,
			MaxReplicas: 5,
			Metric:      "running",
			Target:      4,
			// Starting points for a combined strategy; tune measures them.
			RunningTarget: 4, WaitingTarget: 4, KVCacheTarget: 0.8,
			// The walkthrough's route; native is a Preview GKE feature,
			// chosen by name or by auto, never silently.
			Backend:                BackendAdapter,
			ScaleUpStabilization:   0,
			ScaleUpPods:            4,
			ScaleUpPercent:         100,
			ScaleUpPeriod:          15 * time.Second,
			ScaleDownStabilization: 30 * time.Second,
			ScaleDownPercent:       100,
			ScaleDownPeriod:        15 * time.Second,
		},
		Timeouts: Timeouts{
			Deploy:  15 * time.Minute, // a GPU node may have to be provisioned
			Monitor: 2 * time.Minute,
			Adapter: 5 * time.Minute,
			// IAM applies new grants in about 2 minutes, sometimes 7
			// or more, and a pod that crashed before waits out its
			// back-off.
			Identity: 10 * time.Minute,
			// IAM changes take about 2 minutes (sometimes 7 or more), and a
			// new metric up to 10 minutes to appear in Cloud Monitoring.
			HPA:     15 * time.Minute,
			Cleanup: 5 * time.Minute,
		},
	}
}

// HFTokenValue returns the Hugging Face token, or "" when none was given.
func (c *Config) HFTokenValue() string { return c.HFToken.value }

// TokenProblem is why the token given cannot be used (a *FieldError), or
// nil: a command that writes the token Secret or checks it fails on it;
// the others never look.
func (c *Config) TokenProblem() error { return c.HFToken.problem }

// Secrets are the values no output may show: the token, and what was
// read as one even when it is malformed.
func (c *Config) Secrets() []string { return []string{c.HFToken.value, c.HFToken.raw} }

// File is the config file Load read: its path, StdinFile, or "" for none.
func (c *Config) File() string { return c.file }

// Origin says where key's value came from when neither a flag, the
// environment nor the file gave it and it is not the default (the project
// from gcloud's configuration, say); "" otherwise.
func (c *Config) Origin(key string) string { return c.origin[key] }

// SetOrigin records that key's value came from origin (see Origin).
func (c *Config) SetOrigin(key, origin string) {
	if c.origin == nil {
		c.origin = map[string]string{}
	}
	c.origin[key] = origin
}

// SetHFToken sets the token; used by Load and by tests.
func (c *Config) SetHFToken(v string) { c.HFToken.value = v }

// MetricKeys are hpa.metric's metrics, in order: one, or several joined
// by "+".
func (c *Config) MetricKeys() []string { return strings.Split(c.HPA.Metric, "+") }

// MetricName is the vLLM gauge of the HPA's first metric, e.g.
// vllm:num_requests_running.
func (c *Config) MetricName() string { return Metrics[c.MetricKeys()[0]] }

// TargetKey is the setting that holds metric key's target (see
// targetOf).
func (c *Config) TargetKey(key string) string {
	own := "hpa." + key + "-target"
	if key != c.MetricKeys()[0] || (!c.Given("hpa.target") && (c.Given(own) || key == "kv-cache")) {
		return own
	}
	return "hpa.target"
}

// ScaledMetric is one metric the HPA scales on.
type ScaledMetric struct {
	Key    string  // running, waiting or kv-cache
	Gauge  string  // vLLM's name, e.g. vllm:num_requests_running
	Target float64 // average per pod
	// HPAName is the name the HPA reads it by, for the backend.
	HPAName string
	// GaugeName is its name in the AutoscalingMetric (native backend).
	GaugeName string
}

// ScaledMetrics are the metrics the HPA scales on, the first first.
func (c *Config) ScaledMetrics() []ScaledMetric {
	var out []ScaledMetric
	for _, k := range c.MetricKeys() {
		m := ScaledMetric{Key: k, Gauge: Metrics[k], Target: c.targetOf(k)}
		m.GaugeName = nativemetrics.GaugeName(m.Gauge)
		m.HPAName = c.hpaMetricName(m.Gauge)
		out = append(out, m)
	}
	return out
}

// HPAMetricNames are the names the HPA reads its metrics by, the first
// first.
func (c *Config) HPAMetricNames() []string {
	var out []string
	for _, m := range c.ScaledMetrics() {
		out = append(out, m.HPAName)
	}
	return out
}

// Copy is a copy of c that can be changed without changing c.
func (c *Config) Copy() *Config {
	out := *c
	out.given = maps.Clone(c.given)
	out.origin = maps.Clone(c.origin)
	return &out
}

// SetTarget sets metric key's target, as if given (tune --apply).
func (c *Config) SetTarget(key string, v float64) {
	if c.given == nil {
		c.given = map[string]bool{}
	}
	if key == c.MetricKeys()[0] {
		c.HPA.Target, c.given["hpa.target"] = v, true
	}
	*c.ownTarget(key) = v
	c.given["hpa."+key+"-target"] = true
}

// ownTarget is the field of hpa.<key>-target.
func (c *Config) ownTarget(key string) *float64 {
	switch key {
	case "running":
		return &c.HPA.RunningTarget
	case "waiting":
		return &c.HPA.WaitingTarget
	}
	return &c.HPA.KVCacheTarget
}

// targetOf is metric key's target. The first metric's is hpa.target when
// given, else its own hpa.<key>-target when given, else hpa.target's
// default, but for kv-cache, a fraction, whose own default (0.8) applies;
// a further metric's is its own.
func (c *Config) targetOf(key string) float64 {
	if key == c.MetricKeys()[0] && (c.Given("hpa.target") || (!c.Given("hpa."+key+"-target") && key != "kv-cache")) {
		return c.HPA.Target
	}
	return *c.ownTarget(key)
}

// The values of hpa.backend.
const (
	BackendAdapter = "adapter"
	BackendNative  = "native"
	BackendAuto    = "auto"
)

// Native reports whether the HPA reads GKE's native custom metrics.
func (c *Config) Native() bool { return c.HPA.Backend == BackendNative }

// AutoscalingMetricName is the name of the instance's AutoscalingMetric
// (native backend).
func (c *Config) AutoscalingMetricName() string { return c.Instance + "-vllm" }

// GaugeName is the native gauge name of the HPA's first metric.
func (c *Config) GaugeName() string { return nativemetrics.GaugeName(c.MetricName()) }

// HPAMetricName is the name the HPA reads its first metric by.
func (c *Config) HPAMetricName() string { return c.hpaMetricName(c.MetricName()) }

// hpaMetricName is the name the HPA reads vLLM's gauge by, for its
// backend: the adapter's prometheus.googleapis.com|<gauge>|gauge, or the
// native autoscaling.gke.io|<AutoscalingMetric>|<gauge's native name>.
func (c *Config) hpaMetricName(gauge string) string {
	if c.Native() {
		return nativemetrics.MetricName(c.AutoscalingMetricName(), nativemetrics.GaugeName(gauge))
	}
	return AdapterMetricName(gauge)
}

// AdapterMetricName is the name the HPA reads the first metric by through
// the Stackdriver adapter.
func (c *Config) AdapterMetricName() string { return AdapterMetricName(c.MetricName()) }

// AdapterMetricName is the name the HPA asks the Stackdriver adapter for
// vLLM's gauge by: prometheus.googleapis.com|<gauge>|gauge. It is
// derived, never typed.
func AdapterMetricName(gauge string) string { return "prometheus.googleapis.com|" + gauge + "|gauge" }

// AdapterImage is the adapter's image reference with its pinned tag.
func (c *Config) AdapterImage() string { return c.Adapter.Image + ":" + c.Adapter.Tag }

// GSAEmail is the Google service account's email.
func (c *Config) GSAEmail() string {
	return fmt.Sprintf("%s@%s.iam.gserviceaccount.com", c.Identity.GSAName, c.Project)
}

// WorkloadPool is the cluster's Workload Identity pool.
func (c *Config) WorkloadPool() string { return c.Project + ".svc.id.goog" }

// KSAMember is the adapter KSA as an IAM member of the gsa route:
// serviceAccount:PROJECT.svc.id.goog[NAMESPACE/KSA].
func (c *Config) KSAMember() string {
	return fmt.Sprintf("serviceAccount:%s[%s/%s]", c.WorkloadPool(), c.Adapter.Namespace, c.Adapter.ServiceAccount)
}

// WorkloadPrincipal is the vLLM pods' own KSA as a Workload Identity
// Federation principal (what the model bucket's policy grants); "" when
// the pods have no KSA of their own.
func (c *Config) WorkloadPrincipal(projectNumber string) string {
	ksa := c.Workload.ServiceAccount()
	if ksa == "" {
		return ""
	}
	return principal(projectNumber, c.WorkloadPool(), c.Workload.Namespace, ksa)
}

func principal(projectNumber, pool, namespace, ksa string) string {
	return fmt.Sprintf("principal://iam.googleapis.com/projects/%s/locations/global/workloadIdentityPools/%s/subject/ns/%s/sa/%s",
		projectNumber, pool, namespace, ksa)
}

// GSAMember is the Google service account as an IAM member.
func (c *Config) GSAMember() string { return "serviceAccount:" + c.GSAEmail() }

// PrincipalMember is the adapter KSA's Workload Identity Federation principal
// (the direct route); it needs the project number, not the id.
func (c *Config) PrincipalMember(projectNumber string) string {
	return principal(projectNumber, c.WorkloadPool(), c.Adapter.Namespace, c.Adapter.ServiceAccount)
}

// WantsPodMonitoring reports whether the monitor step applies the
// PodMonitoring: always for the adapter, which reads what it collects;
// with the native backend when monitoring.pod-monitoring says so.
func (c *Config) WantsPodMonitoring() bool { return !c.Native() || c.Monitoring.PodMonitoring }

// Given reports whether key was set by a flag, the environment or the
// configuration file, not left at its default.
func (c *Config) Given(key string) bool { return c.given[key] }
