package render_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/gmp"
	"github.com/vllm-hpa/vllm-hpa/internal/nativemetrics"
	"github.com/vllm-hpa/vllm-hpa/internal/owner"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
	"github.com/vllm-hpa/vllm-hpa/internal/textdiff"
)

var update = flag.Bool("update", false, "rewrite golden files")

func defaultConfig() *config.Config {
	c := config.Default()
	c.Project = "my-proj"
	return &c
}

// customConfig changes every value the templates use.
func customConfig() *config.Config {
	c := config.Default()
	c.Project = "acme-inference-prod"
	c.Instance = "llama-prod"
	c.Workload = config.Workload{
		Namespace: "inference", Deployment: "llama-server", Replicas: 2,
		AppLabel: "llama", ModelLabel: "llama-3-8b", ServerLabel: "vllm-v1",
		Container: "vllm", Image: "registry.example.com:5000/ml/vllm-openai@sha256:" + strings.Repeat("ab", 32),
		Model: "meta-llama/Meta-Llama-3-8B-Instruct", Port: 8000, TensorParallel: 2, LogLevel: "INFO",
		CPU: "8", Memory: "32Gi", EphemeralStorage: "50Gi", GPUs: 2,
		Accelerator: "nvidia-h100-80gb", GPUDriverVersion: "default", Spot: false,
	}
	c.HFToken = config.HFToken{SecretName: "hf", SecretKey: "token", EnvName: "HF_TOKEN"}
	c.Service = config.Service{Name: "llama", Port: 80}
	// The native route alone: the AutoscalingMetric, no PodMonitoring.
	c.Monitoring = config.Monitoring{Name: "llama-metrics", Path: "/v1/metrics", Interval: 30 * time.Second, PodMonitoring: false}
	c.Adapter.Namespace = "metrics-adapter"
	c.Adapter.ServiceAccount = "adapter"
	c.Adapter.Image = "us-docker.pkg.dev/acme/mirror/custom-metrics-stackdriver-adapter"
	c.Adapter.Tag = "v0.16.9-gke.0"
	c.Identity.Mode = "direct"
	c.HPA = config.HPA{
		Name: "llama-hpa", MinReplicas: 2, MaxReplicas: 10, Metric: "waiting+kv-cache", Target: 2.5, KVCacheTarget: 0.75, Backend: config.BackendNative,
		ScaleUpStabilization: 10 * time.Second, ScaleUpPods: 2, ScaleUpPercent: 50, ScaleUpPeriod: 30 * time.Second,
		ScaleDownStabilization: 5 * time.Minute, ScaleDownPercent: 10, ScaleDownPeriod: time.Minute,
	}
	return &c
}

func TestRenderGolden(t *testing.T) {
	for name, cfg := range map[string]*config.Config{"default": defaultConfig(), "custom": customConfig()} {
		t.Run(name, func(t *testing.T) {
			if err := cfg.Validate(); err != nil {
				t.Fatalf("test config does not validate: %v", err)
			}
			got, err := render.AllYAML(cfg, steps.Rendered()...)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join("testdata", name+".golden.yaml")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/render -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("render differs from %s (run with -update after checking the diff):\n%s", path, textdiff.First(string(want), string(got)))
			}
		})
	}
}

func TestDefaultStackHas18Objects(t *testing.T) {
	n := 0
	kinds := map[string]int{}
	for _, src := range steps.Rendered() {
		objs, err := render.Objects(defaultConfig(), src.Step, src.Shared)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			kinds[o.GetKind()]++
			n++
		}
	}
	if n != 18 {
		t.Errorf("default stack has %d objects, want 18: %v", n, kinds)
	}
	if kinds["APIService"] != 3 {
		t.Errorf("want 3 APIServices, got %d", kinds["APIService"])
	}
}

// strictCodecs decode every built-in kind and APIService, rejecting unknown
// and duplicate fields.
func strictCodecs(t *testing.T) runtime.Decoder {
	s := runtime.NewScheme()
	if err := scheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := apiregistrationv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}

func TestObjectsDecodeStrictly(t *testing.T) {
	dec := strictCodecs(t)
	for name, cfg := range map[string]*config.Config{"default": defaultConfig(), "custom": customConfig()} {
		for _, src := range steps.Rendered() {
			step := src.Step
			objs, err := render.Objects(cfg, src.Step, src.Shared)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range objs {
				j, err := o.MarshalJSON()
				if err != nil {
					t.Fatal(err)
				}
				ref := name + " " + step + " " + o.GetKind() + "/" + o.GetName()
				if o.GetKind() == "PodMonitoring" {
					var pm gmp.PodMonitoring
					d := json.NewDecoder(bytes.NewReader(j))
					d.DisallowUnknownFields()
					if err := d.Decode(&pm); err != nil {
						t.Errorf("%s: %v", ref, err)
					}
					if len(pm.Spec.Endpoints) < 1 || len(pm.Spec.Endpoints) > 10 || pm.Spec.Endpoints[0].Interval == "" {
						t.Errorf("%s: endpoints must be 1-10, each with an interval: %+v", ref, pm.Spec.Endpoints)
					}
					continue
				}
				if o.GetKind() == "AutoscalingMetric" {
					// Its schema is the CRD's (the API server checks it in
					// the cmd tests): here, that it declares the HPA's gauge.
					g, ok := nativemetrics.Find(o, cfg.GaugeName())
					if !ok || g.PrometheusName != cfg.MetricName() || g.Port != int64(cfg.Workload.Port) || g.Selector["app"] != cfg.Workload.AppLabel {
						t.Errorf("%s: declares %+v", ref, g)
					}
					continue
				}
				typed, gvk, err := dec.Decode(j, nil, nil)
				if err != nil {
					t.Errorf("%s: strict decode: %v", ref, err)
					continue
				}
				if gvk.Kind != o.GetKind() {
					t.Errorf("%s: decoded as %s", ref, gvk)
				}
				_ = typed
				// Whose it is, as cleanup and the next apply will judge it.
				if j := owner.Judge(o, cfg.Instance, src.Shared); j.Verdict != owner.Mine || o.GetLabels()[owner.StepLabel] != step {
					t.Errorf("%s: ownership labels do not make it instance %s's: %v (%s)", ref, cfg.Instance, o.GetLabels(), j.Verdict)
				}
			}
		}
	}
}

func TestTokenNeverRendered(t *testing.T) {
	cfg := defaultConfig()
	const token = "hf_plantedSECRETvalue123"
	cfg.SetHFToken(token)
	y, err := render.AllYAML(cfg, steps.Rendered()...)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(y), token) {
		t.Fatal("token appears in rendered YAML")
	}
	// No Secret at all: `kubectl apply` of a copy with a placeholder
	// would overwrite the real token.
	if strings.Contains(string(y), "kind: Secret") || strings.Contains(string(y), render.Redacted) {
		t.Fatal("rendered YAML holds the token Secret")
	}
	objs, _ := render.Objects(cfg, "deploy", false)
	if err := render.SetSecretToken(cfg, objs[0], token); err != nil {
		t.Fatal(err)
	}
	data, _, _ := unstructuredString(objs[0].Object, "data", cfg.HFToken.SecretKey)
	if data != "aGZfcGxhbnRlZFNFQ1JFVHZhbHVlMTIz" {
		t.Errorf("Secret data = %q, want the token base64-encoded", data)
	}
	if _, found, _ := unstructuredString(objs[0].Object, "stringData", cfg.HFToken.SecretKey); found {
		t.Error("stringData (the marker) still present after SetSecretToken")
	}
	if err := render.SetSecretToken(cfg, objs[1], token); err == nil {
		t.Error("SetSecretToken accepted the Deployment")
	}
}

func unstructuredString(obj map[string]any, path ...string) (string, bool, error) {
	var cur any = obj
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false, nil
		}
		cur, ok = m[p]
		if !ok {
			return "", false, nil
		}
	}
	s, _ := cur.(string)
	return s, true, nil
}

func TestAdapterMetricNameDerived(t *testing.T) {
	cfg := defaultConfig()
	if got := cfg.AdapterMetricName(); got != "prometheus.googleapis.com|vllm:num_requests_running|gauge" {
		t.Errorf("running: %s", got)
	}
	cfg.HPA.Metric = "waiting"
	if got := cfg.AdapterMetricName(); got != "prometheus.googleapis.com|vllm:num_requests_waiting|gauge" {
		t.Errorf("waiting: %s", got)
	}
	objs, _ := render.Objects(cfg, "hpa", false)
	y, _ := objs[0].MarshalJSON()
	if !strings.Contains(string(y), `"prometheus.googleapis.com|vllm:num_requests_waiting|gauge"`) {
		t.Errorf("HPA does not use the derived metric name: %s", y)
	}
}
