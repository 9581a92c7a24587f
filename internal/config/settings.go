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
}

// Env is the environment variable that sets the key.
func (s Setting) Env() string {
	return EnvPrefix + "_" + strings.NewReplacer(".", "_", "-", "_").Replace(strings.ToUpper(s.Key))
}

// EnvPrefix starts every environment variable of a setting.
const EnvPrefix = "VLLM_HPA"

// Settings lists every leaf of Config, in the order of the struct.
var Settings = []Setting{
	{"project", "project", "GCP project id (required); every IAM member derives from it"},
	{"cluster", "cluster", "GKE cluster name, to connect through the container API and check preconditions"},
	{"location", "location", "GKE cluster location (region or zone), e.g. us-central1"},
	{"instance", "instance", "value of the stack-instance label on every object; cleanup deletes only this instance"},

	{"workload.namespace", "namespace", "namespace of the vLLM Deployment, Service, PodMonitoring and HPA"},
	{"workload.deployment", "deployment", "name of the vLLM Deployment"},
	{"workload.replicas", "", "initial replicas of the vLLM Deployment (the HPA owns the count afterwards)"},
	{"workload.app-label", "app-label", "value of the pod label app; the Service, PodMonitoring and HPA select on it"},
	{"workload.model-label", "", "value of the pod label ai.gke.io/model"},
	{"workload.server-label", "", "value of the pod label ai.gke.io/inference-server"},
	{"workload.container", "", "name of the vLLM container"},
	{"workload.image", "image", "vLLM server image (pin a tag or digest)"},
	{"workload.model", "model", "model the server loads (env MODEL_ID)"},
	{"workload.port", "", "port the vLLM server listens on"},
	{"workload.tensor-parallel-size", "", "vLLM --tensor-parallel-size"},
	{"workload.log-level", "", "VLLM_LOGGING_LEVEL of the server"},
	{"workload.cpu", "", "CPU request and limit of the vLLM container"},
	{"workload.memory", "", "memory request and limit of the vLLM container"},
	{"workload.ephemeral-storage", "", "ephemeral-storage request and limit of the vLLM container"},
	{"workload.gpus", "", "nvidia.com/gpu request and limit of the vLLM container"},
	{"workload.accelerator", "accelerator", "GKE accelerator (nodeSelector cloud.google.com/gke-accelerator), e.g. nvidia-l4"},
	{"workload.gpu-driver-version", "", "nodeSelector cloud.google.com/gke-gpu-driver-version (latest or default)"},
	{"workload.spot", "", "tolerate Spot nodes (cloud.google.com/gke-spot=true:NoSchedule)"},

	{"hf-token.file", "hf-token-file", "file holding the Hugging Face token (else the HF_TOKEN environment variable); never a flag value"},
	{"hf-token.secret-name", "", "name of the Secret that holds the Hugging Face token"},
	{"hf-token.secret-key", "", "key of the token in that Secret"},
	{"hf-token.env-name", "", "environment variable the server reads the token from"},

	{"service.name", "service", "name of the ClusterIP Service in front of vLLM"},
	{"service.port", "", "port of that Service"},

	{"monitoring.name", "", "name of the PodMonitoring"},
	{"monitoring.path", "", "path Managed Prometheus scrapes"},
	{"monitoring.interval", "scrape-interval", "scrape interval"},

	{"adapter.namespace", "", "namespace of the Custom Metrics Stackdriver Adapter"},
	{"adapter.service-account", "", "Kubernetes service account of the adapter"},
	{"adapter.image", "", "adapter image repository"},
	{"adapter.tag", "adapter-tag", "adapter image tag"},

	{"identity.mode", "identity-mode", "gsa (a Google service account, as in the walkthrough) or direct (grant the adapter's KSA principal)"},
	{"identity.gsa-name", "gsa-name", "Google service account name (gsa mode)"},
	{"identity.gsa-display-name", "", "Google service account display name (gsa mode)"},
	{"identity.adopt-existing-gsa", "adopt-existing-gsa", "use an existing Google service account vllm-hpa did not create (cleanup leaves it in place)"},
	{"identity.impersonate-service-account", "impersonate-service-account", "service account to impersonate for Google API calls (CI)"},

	{"hpa.name", "", "name of the HorizontalPodAutoscaler"},
	{"hpa.min-replicas", "min-replicas", "HPA minimum replicas"},
	{"hpa.max-replicas", "max-replicas", "HPA maximum replicas"},
	{"hpa.metric", "metric", "running (vllm:num_requests_running, lower latency) or waiting (vllm:num_requests_waiting, throughput)"},
	{"hpa.target", "target", "target average value of the metric per pod"},
	{"hpa.scale-up-stabilization", "", "HPA scaleUp stabilization window"},
	{"hpa.scale-up-pods", "", "HPA scaleUp policy: at most this many pods per period"},
	{"hpa.scale-up-percent", "", "HPA scaleUp policy: at most this percent per period"},
	{"hpa.scale-up-period", "", "HPA scaleUp policies' period"},
	{"hpa.scale-down-stabilization", "", "HPA scaleDown stabilization window"},
	{"hpa.scale-down-percent", "", "HPA scaleDown policy: at most this percent per period"},
	{"hpa.scale-down-period", "", "HPA scaleDown policy's period"},

	{"timeouts.deploy", "", "how long deploy waits for the vLLM Deployment"},
	{"timeouts.monitor", "", "how long monitor waits for the PodMonitoring"},
	{"timeouts.adapter", "", "how long adapter waits for the adapter and its APIServices"},
	{"timeouts.hpa", "", "how long hpa waits for the HPA to find its metric"},
	{"timeouts.cleanup", "", "how long cleanup waits for deletions"},

	{"kube.kubeconfig", "kubeconfig", "kubeconfig file (default: the standard loading rules, like kubectl)"},
	{"kube.context", "context", "kubeconfig context"},
	{"kube.force-conflicts", "force-conflicts", "take over fields (and APIServices) owned by another manager"},

	{"endpoints.iam", "", "IAM API endpoint override (tests, local emulator)"},
	{"endpoints.resource-manager", "", "Resource Manager API endpoint override"},
	{"endpoints.container", "", "container (GKE) API endpoint override"},
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
