package config

import (
	"fmt"
	"reflect"
	"strings"
	"time"
)

// Setting documents one configuration key: its flag (if it has one) and what
// it means. The list is the single source for flags, environment variables,
// the config file's keys and the README's configuration reference.
type Setting struct {
	Key   string // dotted path of `key` tags, e.g. "hpa.max-replicas"
	Flag  string // flag name without dashes; "" when only file and env set it
	Usage string
	// Scope says which commands have the flag: ScopeGlobal on every
	// command; otherwise the steps (and "load") whose commands have it.
	// Commands that act on the whole stack have every flag.
	Scope []string
}

// ScopeGlobal marks a flag every command has: how to reach the project and
// the cluster.
const ScopeGlobal = "global"

// InScope reports whether the setting's flag belongs on a command that
// acts on the given steps.
func (s Setting) InScope(steps ...string) bool {
	for _, want := range steps {
		for _, sc := range s.Scope {
			if sc == want {
				return true
			}
		}
	}
	return false
}

// Env is the environment variable that sets the key.
func (s Setting) Env() string {
	return EnvPrefix + "_" + strings.NewReplacer(".", "_", "-", "_").Replace(strings.ToUpper(s.Key))
}

// EnvPrefix starts every environment variable of a setting.
const EnvPrefix = "VLLM_HPA"

// Settings lists every leaf of Config, in the order of the struct.
var Settings = []Setting{
	{"project", "project", "GCP project id (required); every IAM member derives from it", []string{ScopeGlobal}},
	{"cluster", "cluster", "GKE cluster name, to connect through the container API and check preconditions", []string{ScopeGlobal}},
	{"location", "location", "GKE cluster location (region or zone), e.g. us-central1", []string{ScopeGlobal}},
	{"endpoint-type", "endpoint-type", "with --cluster: reach the control plane at its public endpoint, its private endpoint (internal IP), or its DNS endpoint (public, private or dns)", []string{ScopeGlobal}},
	{"instance", "instance", "value of the stack-instance label on every object; cleanup deletes only this instance", []string{"deploy", "monitor", "adapter", "identity", "hpa", "load", "tune"}},
	{"adopt", "adopt", "take over existing objects (and the Google service account) vllm-hpa did not create: marked adopted, and cleanup then removes only vllm-hpa's labels and fields from them, never the objects", []string{"deploy", "monitor", "adapter", "identity", "hpa"}},

	{"workload.namespace", "namespace", "namespace of the vLLM Deployment, Service, PodMonitoring and HPA", []string{"deploy", "monitor", "hpa", "load", "tune"}},
	{"workload.deployment", "deployment", "name of the vLLM Deployment", []string{"deploy", "hpa"}},
	{"workload.replicas", "", "initial replicas of the vLLM Deployment (the HPA owns the count afterwards)", nil},
	{"workload.app-label", "app-label", "value of the pod label app; the Service, PodMonitoring and HPA select on it", []string{"deploy", "monitor", "hpa"}},
	{"workload.model-label", "", "value of the pod label ai.gke.io/model", nil},
	{"workload.server-label", "", "value of the pod label ai.gke.io/inference-server", nil},
	{"workload.container", "", "name of the vLLM container", nil},
	{"workload.image", "image", "vLLM server image (pin a tag or digest)", []string{"deploy"}},
	{"workload.model", "model", "model the server loads (its container gets it as MODEL_ID)", []string{"deploy", "load", "tune"}},
	{"workload.port", "", "port the vLLM server listens on", nil},
	{"workload.tensor-parallel-size", "", "vLLM --tensor-parallel-size", nil},
	{"workload.log-level", "", "VLLM_LOGGING_LEVEL of the server", nil},
	{"workload.cpu", "", "CPU request and limit of the vLLM container", nil},
	{"workload.memory", "", "memory request and limit of the vLLM container", nil},
	{"workload.ephemeral-storage", "", "ephemeral-storage request and limit of the vLLM container", nil},
	{"workload.gpus", "", "nvidia.com/gpu request and limit of the vLLM container", nil},
	{"workload.accelerator", "accelerator", "GKE accelerator (nodeSelector cloud.google.com/gke-accelerator), e.g. nvidia-l4", []string{"deploy"}},
	{"workload.gpu-driver-version", "", "nodeSelector cloud.google.com/gke-gpu-driver-version (latest or default)", nil},
	{"workload.spot", "", "tolerate Spot nodes (cloud.google.com/gke-spot=true:NoSchedule)", nil},
	{"workload.compute-class", "compute-class", "GKE ComputeClass the vLLM pods select (nodeSelector cloud.google.com/compute-class), in place of the accelerator selectors; up chooses the cluster's one class with a GPU rule for workload.accelerator when that is the only way to GPU nodes", []string{"deploy"}},

	{"hf-token.file", "hf-token-file", "file holding the Hugging Face token (else the HF_TOKEN environment variable); never a flag value", []string{"deploy"}},
	{"hf-token.secret-name", "", "name of the Secret that holds the Hugging Face token", nil},
	{"hf-token.secret-key", "", "key of the token in that Secret", nil},
	{"hf-token.env-name", "", "environment variable the server reads the token from", nil},

	{"service.name", "service", "name of the ClusterIP Service in front of vLLM", []string{"deploy", "load", "tune"}},
	{"service.port", "", "port of that Service", nil},

	{"monitoring.name", "", "name of the PodMonitoring", nil},
	{"monitoring.path", "", "path Managed Prometheus scrapes", nil},
	{"monitoring.interval", "scrape-interval", "scrape interval", []string{"monitor"}},
	{"monitoring.pod-monitoring", "", "with hpa.backend native, keep the PodMonitoring too (Cloud Monitoring dashboards, and a switch back to the adapter with samples already there)", nil},

	{"adapter.namespace", "", "namespace of the Custom Metrics Stackdriver Adapter", nil},
	{"adapter.service-account", "", "Kubernetes service account of the adapter", nil},
	{"adapter.image", "", "adapter image repository", nil},
	{"adapter.tag", "adapter-tag", "adapter image tag", []string{"adapter"}},

	{"identity.mode", "identity-mode", "gsa (a Google service account, as in the walkthrough) or direct (grant the adapter's KSA principal)", []string{"identity"}},
	{"identity.gsa-name", "gsa-name", "Google service account name (gsa mode)", []string{"identity"}},
	{"identity.gsa-display-name", "", "Google service account display name (gsa mode)", nil},
	{"identity.adopt-existing-gsa", "adopt-existing-gsa", "use an existing Google service account vllm-hpa did not create (cleanup leaves it in place)", []string{"identity"}},
	{"identity.impersonate-service-account", "impersonate-service-account", "service account to impersonate for Google API calls (CI)", []string{ScopeGlobal}},

	{"hpa.name", "", "name of the HorizontalPodAutoscaler", nil},
	{"hpa.min-replicas", "min-replicas", "HPA minimum replicas", []string{"hpa"}},
	{"hpa.max-replicas", "max-replicas", "HPA maximum replicas", []string{"hpa"}},
	{"hpa.metric", "metric", "running (vllm:num_requests_running, lower latency), waiting (vllm:num_requests_waiting, throughput) or kv-cache (vllm:kv_cache_usage_perc, 0-1: KV cache pressure); or several joined by + (waiting+kv-cache: the HPA scales on whichever asks for most replicas)", []string{"monitor", "hpa", "tune"}},
	{"hpa.target", "target", "target average value per pod of hpa.metric's first metric", []string{"hpa"}},
	{"hpa.running-target", "running-target", "target of running when it follows the first metric of a combined hpa.metric", []string{"hpa"}},
	{"hpa.waiting-target", "waiting-target", "target of waiting when it follows the first metric of a combined hpa.metric", []string{"hpa"}},
	{"hpa.kv-cache-target", "kv-cache-target", "target of kv-cache (0-1) when it follows the first metric of a combined hpa.metric", []string{"hpa"}},
	{"hpa.backend", "backend", "how the HPA reads the metric: adapter (Stackdriver adapter, Workload Identity), native (GKE's native custom metrics: an AutoscalingMetric, no adapter, no IAM) or auto (native where the cluster serves it)", []string{"monitor", "adapter", "identity", "hpa", "tune"}},
	{"hpa.scale-up-stabilization", "", "HPA scaleUp stabilization window", nil},
	{"hpa.scale-up-pods", "", "HPA scaleUp policy: at most this many pods per period", nil},
	{"hpa.scale-up-percent", "", "HPA scaleUp policy: at most this percent per period", nil},
	{"hpa.scale-up-period", "", "HPA scaleUp policies' period", nil},
	{"hpa.scale-down-stabilization", "", "HPA scaleDown stabilization window", nil},
	{"hpa.scale-down-percent", "", "HPA scaleDown policy: at most this percent per period", nil},
	{"hpa.scale-down-period", "", "HPA scaleDown policy's period", nil},

	{"timeouts.deploy", "", "how long deploy waits for the vLLM Deployment", nil},
	{"timeouts.monitor", "", "how long monitor waits for the PodMonitoring", nil},
	{"timeouts.adapter", "", "how long adapter waits for the adapter and its APIServices", nil},
	{"timeouts.identity", "", "how long identity waits, once the grants are made, for the adapter to read Cloud Monitoring", nil},
	{"timeouts.hpa", "", "how long hpa waits for the HPA to find its metric", nil},
	{"timeouts.cleanup", "", "how long cleanup waits for deletions", nil},

	{"kube.kubeconfig", "kubeconfig", "kubeconfig file (default: the standard loading rules, like kubectl)", []string{ScopeGlobal}},
	{"kube.context", "context", "kubeconfig context", []string{ScopeGlobal}},
	{"kube.force-conflicts", "force-conflicts", "take over fields (and APIServices) owned by another manager", []string{"deploy", "monitor", "adapter", "identity", "hpa"}},

	{"endpoints.iam", "", "IAM API endpoint override (tests, local emulator)", nil},
	{"endpoints.resource-manager", "", "Resource Manager API endpoint override", nil},
	{"endpoints.container", "", "container (GKE) API endpoint override", nil},
	{"endpoints.service-usage", "", "Service Usage API endpoint override", nil},
	{"endpoints.monitoring", "", "Cloud Monitoring API endpoint override", nil},
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

// Redacted view: the effective configuration as nested maps keyed like the
// config file, durations spelled as in the file. The Hugging Face token shows
// only whether it is set and where from, never its value.
func (c *Config) Redacted() map[string]any {
	root := map[string]any{}
	for _, f := range fields(c) {
		var v any = f.value.Interface()
		if d, ok := v.(time.Duration); ok {
			v = d.String()
		}
		setPath(root, strings.Split(f.key, "."), v)
	}
	token := "(not set: HF_TOKEN or hf-token.file)"
	if c.HFToken.value != "" {
		token = "<redacted> (from " + TokenEnv + ")"
		if c.HFToken.File != "" {
			token = "<redacted> (from " + c.HFToken.File + ")"
		}
	}
	root["hf-token"].(map[string]any)["value"] = token
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
