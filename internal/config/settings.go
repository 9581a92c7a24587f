package config

import (
	"fmt"
	"reflect"
	"strings"
	"time"
)

// Setting documents one configuration key: its flag (if it has one) and what
// it means. The list is the single source for flags, environment variables,
// the config file's keys and the README's configuration reference. Which
// commands have a flag is said by the steps (step.Definition.Settings)
// and the commands that are not steps; a global one every command that
// reaches the project or the cluster has.
type Setting struct {
	Key   string // dotted path of `key` tags, e.g. "hpa.max-replicas"
	Flag  string // flag name without dashes; "" when only file and env set it
	Usage string
	// Global: how to reach the project and the cluster, a flag of the
	// root command.
	Global bool
}

// Env is the environment variable that sets the key.
func (s Setting) Env() string {
	return EnvPrefix + "_" + strings.NewReplacer(".", "_", "-", "_").Replace(strings.ToUpper(s.Key))
}

// EnvPrefix starts every environment variable of a setting.
const EnvPrefix = "VLLM_HPA"

// Settings lists every leaf of Config, in the order of the struct.
var Settings = []Setting{
	{"project", "project", "GCP project id, every IAM member derives from it (required; when not given: CLOUDSDK_CORE_PROJECT, gcloud's active configuration, GOOGLE_CLOUD_PROJECT, then a gke_PROJECT_LOCATION_CLUSTER kube context)", true},
	{"cluster", "cluster", "GKE cluster name, to connect through the container API and check preconditions", true},
	{"location", "location", "GKE cluster location (region or zone), e.g. us-central1", true},
	{"endpoint-type", "endpoint-type", "with --cluster: reach the control plane at its public endpoint, its private endpoint (internal IP), or its DNS endpoint (public, private or dns)", true},
	{"instance", "instance", "value of the stack-instance label on every object; cleanup deletes only this instance", false},
	{"adopt", "adopt", "take over existing objects (and the Google service account) vllm-hpa did not create: marked adopted, and cleanup then removes only vllm-hpa's labels and fields from them, never the objects", false},

	{"workload.namespace", "namespace", "namespace of the vLLM Deployment, Service, PodMonitoring and HPA", false},
	{"workload.deployment", "deployment", "name of the vLLM Deployment", false},
	{"workload.replicas", "", "initial replicas of the vLLM Deployment (the HPA owns the count afterwards)", false},
	{"workload.app-label", "app-label", "value of the pod label app; the Service, PodMonitoring and HPA select on it", false},
	{"workload.model-label", "", "value of the pod label ai.gke.io/model", false},
	{"workload.server-label", "", "value of the pod label ai.gke.io/inference-server", false},
	{"workload.container", "", "name of the vLLM container", false},
	{"workload.image", "image", "vLLM server image (pin a tag or digest)", false},
	{"workload.model", "model", "model the server loads (its container gets it as MODEL_ID)", false},
	{"workload.port", "", "port the vLLM server listens on", false},
	{"workload.tensor-parallel-size", "", "vLLM --tensor-parallel-size", false},
	{"workload.log-level", "", "VLLM_LOGGING_LEVEL of the server", false},
	{"workload.cpu", "", "CPU request and limit of the vLLM container", false},
	{"workload.memory", "", "memory request and limit of the vLLM container", false},
	{"workload.ephemeral-storage", "", "ephemeral-storage request and limit of the vLLM container", false},
	{"workload.gpus", "", "nvidia.com/gpu request and limit of the vLLM container", false},
	{"workload.accelerator", "accelerator", "GKE accelerator (nodeSelector cloud.google.com/gke-accelerator), e.g. nvidia-l4", false},
	{"workload.gpu-driver-version", "", "nodeSelector cloud.google.com/gke-gpu-driver-version (latest or default)", false},
	{"workload.spot", "", "tolerate Spot nodes (cloud.google.com/gke-spot=true:NoSchedule)", false},
	{"workload.compute-class", "compute-class", "GKE ComputeClass the vLLM pods select (nodeSelector cloud.google.com/compute-class), in place of the accelerator selectors; up chooses the cluster's one class with a GPU rule for workload.accelerator when that is the only way to GPU nodes", false},
	{"workload.drain", "drain", "how long a vLLM pod being scaled down keeps serving before SIGTERM (a preStop pause; vLLM aborts requests in flight on SIGTERM): the endpoint's removal from the Service plus the longest request; 0 sends SIGTERM at once", false},
	{"workload.model-source", "model-source", "load the weights from Cloud Storage (gs://BUCKET/PATH, a directory holding the model's config.json, tokenizer and *.safetensors) with vLLM's Run:ai model streamer, in place of Hugging Face; the vLLM pods get a Kubernetes service account of their own, granted roles/storage.objectViewer on the bucket", false},

	{"hf-token.file", "hf-token-file", "file holding the Hugging Face token (else the HF_TOKEN environment variable); never a flag value", false},
	{"hf-token.secret-name", "", "name of the Secret that holds the Hugging Face token", false},
	{"hf-token.secret-key", "", "key of the token in that Secret", false},
	{"hf-token.env-name", "", "environment variable the server reads the token from", false},

	{"service.name", "service", "name of the ClusterIP Service in front of vLLM", false},
	{"service.port", "", "port of that Service", false},

	{"monitoring.name", "", "name of the PodMonitoring", false},
	{"monitoring.path", "", "path Managed Prometheus scrapes", false},
	{"monitoring.interval", "scrape-interval", "scrape interval", false},
	{"monitoring.pod-monitoring", "", "with hpa.backend native, keep the PodMonitoring too (Cloud Monitoring dashboards, and a switch back to the adapter with samples already there)", false},

	{"adapter.namespace", "", "namespace of the Custom Metrics Stackdriver Adapter", false},
	{"adapter.service-account", "", "Kubernetes service account of the adapter", false},
	{"adapter.image", "", "adapter image repository", false},
	{"adapter.tag", "adapter-tag", "adapter image tag", false},

	{"identity.mode", "identity-mode", "gsa (a Google service account, as in the walkthrough) or direct (grant the adapter's KSA principal)", false},
	{"identity.gsa-name", "gsa-name", "Google service account name (gsa mode)", false},
	{"identity.gsa-display-name", "", "Google service account display name (gsa mode)", false},
	{"identity.adopt-existing-gsa", "adopt-existing-gsa", "use an existing Google service account vllm-hpa did not create (cleanup leaves it in place)", false},
	{"identity.impersonate-service-account", "impersonate-service-account", "service account to impersonate for Google API calls (CI)", true},

	{"hpa.name", "", "name of the HorizontalPodAutoscaler", false},
	{"hpa.min-replicas", "min-replicas", "HPA minimum replicas", false},
	{"hpa.max-replicas", "max-replicas", "HPA maximum replicas", false},
	{"hpa.metric", "metric", "running (vllm:num_requests_running, lower latency), waiting (vllm:num_requests_waiting, throughput) or kv-cache (vllm:kv_cache_usage_perc, 0-1: KV cache pressure); or several joined by + (waiting+kv-cache: the HPA scales on whichever asks for most replicas)", false},
	{"hpa.target", "target", "target average value per pod of hpa.metric's first metric", false},
	{"hpa.running-target", "running-target", "target of running when it follows the first metric of a combined hpa.metric", false},
	{"hpa.waiting-target", "waiting-target", "target of waiting when it follows the first metric of a combined hpa.metric", false},
	{"hpa.kv-cache-target", "kv-cache-target", "target of kv-cache (0-1) when it follows the first metric of a combined hpa.metric", false},
	{"hpa.backend", "backend", "how the HPA reads the metric: adapter (Stackdriver adapter, Workload Identity), native (GKE's native custom metrics: an AutoscalingMetric, no adapter, no IAM) or auto (native where the cluster serves it)", false},
	{"hpa.scale-up-stabilization", "", "HPA scaleUp stabilization window", false},
	{"hpa.scale-up-pods", "", "HPA scaleUp policy: at most this many pods per period", false},
	{"hpa.scale-up-percent", "", "HPA scaleUp policy: at most this percent per period", false},
	{"hpa.scale-up-period", "", "HPA scaleUp policies' period", false},
	{"hpa.scale-down-stabilization", "", "HPA scaleDown stabilization window", false},
	{"hpa.scale-down-percent", "", "HPA scaleDown policy: at most this percent per period", false},
	{"hpa.scale-down-period", "", "HPA scaleDown policy's period", false},

	{"timeouts.deploy", "", "how long deploy waits for the vLLM Deployment", false},
	{"timeouts.monitor", "", "how long monitor waits for the PodMonitoring", false},
	{"timeouts.adapter", "", "how long adapter waits for the adapter and its APIServices", false},
	{"timeouts.identity", "", "how long identity waits, once the grants are made, for the adapter to read Cloud Monitoring", false},
	{"timeouts.hpa", "", "how long hpa waits for the HPA to find its metric", false},
	{"timeouts.cleanup", "", "how long cleanup waits for deletions", false},

	{"kube.kubeconfig", "kubeconfig", "kubeconfig file (default: the standard loading rules, like kubectl)", true},
	{"kube.context", "context", "kubeconfig context", true},
	{"kube.force-conflicts", "force-conflicts", "take over fields (and APIServices) owned by another manager", false},

	{"endpoints.iam", "", "IAM API endpoint override (tests, local emulator)", false},
	{"endpoints.resource-manager", "", "Resource Manager API endpoint override", false},
	{"endpoints.container", "", "container (GKE) API endpoint override", false},
	{"endpoints.service-usage", "", "Service Usage API endpoint override", false},
	{"endpoints.monitoring", "", "Cloud Monitoring API endpoint override", false},
	{"endpoints.storage", "", "Cloud Storage JSON API endpoint override", false},
}

// SettingByKey returns the setting for key.
func SettingByKey(key string) (Setting, bool) {
	for _, s := range Settings {
		if s.Key == key {
			return s, true
		}
	}
	return Setting{}, false
}

// field is one leaf of Config reached by its key path.
type field struct {
	key   string
	value reflect.Value // addressable
}

// fields walks c's exported leaves in struct order.
func fields(c *Config) []field {
	var out []field
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			tag := t.Field(i).Tag.Get("key")
			if tag == "" {
				continue
			}
			key := prefix + tag
			fv := v.Field(i)
			if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeOf(time.Duration(0)) {
				walk(fv, key+".")
				continue
			}
			out = append(out, field{key, fv})
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
	return out
}

// Values returns every key with its value as the config file would spell it.
func (c *Config) Values() []KeyValue {
	var out []KeyValue
	for _, f := range fields(c) {
		out = append(out, KeyValue{Key: f.key, Value: formatValue(f.value)})
	}
	return out
}

// KeyValue is one effective setting.
type KeyValue struct {
	Key   string
	Value string
}

func formatValue(v reflect.Value) string {
	if d, ok := v.Interface().(time.Duration); ok {
		return d.String()
	}
	return fmt.Sprint(v.Interface())
}

// Tree is the configuration as nested maps keyed like the config file,
// durations spelled as in the file: what a config file holds, so that
// written out it loads back unchanged. The Hugging Face token is not a
// setting and is never in it.
func (c *Config) Tree() map[string]any {
	root := map[string]any{}
	for _, f := range fields(c) {
		var v any = f.value.Interface()
		if d, ok := v.(time.Duration); ok {
			v = d.String()
		}
		setPath(root, strings.Split(f.key, "."), v)
	}
	return root
}

func setPath(m map[string]any, path []string, v any) {
	for _, p := range path[:len(path)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[path[len(path)-1]] = v
}

// ReferenceMarkdown is the README's configuration reference: every key with
// its environment variable, flag, default and meaning.
func ReferenceMarkdown() string {
	def := Default()
	defaults := map[string]string{}
	for _, kv := range def.Values() {
		defaults[kv.Key] = kv.Value
	}
	var b strings.Builder
	b.WriteString("| key | environment | flag | default | meaning |\n|---|---|---|---|---|\n")
	for _, s := range Settings {
		flag := ""
		if s.Flag != "" {
			flag = "`--" + s.Flag + "`"
		}
		d := defaults[s.Key]
		if d == "" {
			d = " "
		} else {
			d = "`" + d + "`"
		}
		fmt.Fprintf(&b, "| `%s` | `%s` | %s | %s | %s |\n", s.Key, s.Env(), flag, d, strings.ReplaceAll(s.Usage, "|", "\\|"))
	}
	return b.String()
}

// SetDuration sets the duration setting key (e.g. timeouts.deploy); a key
// that is not a duration is a programming error.
func (c *Config) SetDuration(key string, d time.Duration) {
	for _, f := range fields(c) {
		if f.key == key && f.value.Type() == reflect.TypeOf(d) {
			f.value.Set(reflect.ValueOf(d))
			return
		}
	}
	panic("config: no duration setting " + key)
}
