package nativemetrics

import (
	"strings"
	"testing"

	container "google.golang.org/api/container/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

func TestVersionAtLeast(t *testing.T) {
	for _, c := range []struct {
		v    string
		want bool
	}{
		{"1.37.0-gke.3100000", true},
		{"1.37.0-gke.3099999", false},
		{"1.37.1-gke.100", true},
		{"1.36.9-gke.99999999", false},
		{"1.38.0-gke.1", true},
		{"2.0.0", true},
		{"v1.37.0-gke.3100000", true},
		{"", false},
		{"latest", false},
		{"1.37.x", false},
	} {
		if got := VersionAtLeast(c.v, GAVersion); got != c.want {
			t.Errorf("VersionAtLeast(%q) = %v, want %v", c.v, got, c.want)
		}
	}
}

// TestRequirements: clusters below Preview, on Preview and GA, in every
// channel or none (no channel is needed any more), with and without the
// performance profile; each unmet requirement with its fix.
func TestRequirements(t *testing.T) {
	cluster := func(version, channel, profile string) *container.Cluster {
		c := &container.Cluster{Name: "gpu-hpa", CurrentMasterVersion: version}
		if channel != "" {
			c.ReleaseChannel = &container.ReleaseChannel{Channel: channel}
		}
		if profile != "" {
			c.PodAutoscaling = &container.PodAutoscaling{HpaProfile: profile}
		}
		return c
	}
	cases := []struct {
		version, channel, profile string
		stage                     Stage
		unmet                     string // the check that fails, "" for none
		fix                       string
	}{
		{"1.37.0-gke.3100000", "REGULAR", "PERFORMANCE", StageGA, "", ""},
		{"1.37.2-gke.1000", "STABLE", "PERFORMANCE", StageGA, "", ""},
		{"1.38.1-gke.1", "", "PERFORMANCE", StageGA, "", ""},
		{"1.37.0-gke.3099999", "RAPID", "PERFORMANCE", StagePreview, "", ""},
		{"1.36.4-gke.1247000", "REGULAR", "PERFORMANCE", StagePreview, "", ""},
		{"1.36.4-gke.1246999", "RAPID", "PERFORMANCE", StageNone, "gke version", "--master --cluster-version=1.37.0-gke.3100000"},
		{"1.35.1-gke.1396000", "RAPID", "PERFORMANCE", StageNone, "gke version", "--master --cluster-version=1.37.0-gke.3100000"},
		{"1.37.1-gke.1000", "REGULAR", "", StageGA, "hpa profile", "--hpa-profile=performance"},
		{"1.37.1-gke.1000", "REGULAR", "NONE", StageGA, "hpa profile", "--hpa-profile=performance"},
	}
	for _, c := range cases {
		name := c.version + "/" + c.channel + "/" + c.profile
		if got := StageOf(c.version); got != c.stage {
			t.Errorf("%s: stage %s, want %s", name, got, c.stage)
		}
		rs := Requirements(cluster(c.version, c.channel, c.profile), "my-proj", "us-central1")
		if Supported(rs) != (c.unmet == "") {
			t.Errorf("%s: supported = %v", name, Supported(rs))
		}
		for _, r := range rs {
			if r.Check == "release channel" {
				t.Errorf("%s: a release channel is still required", name)
			}
			if r.OK == (r.Check == c.unmet) {
				t.Errorf("%s: %s ok=%v (%s)", name, r.Check, r.OK, r.Message)
			}
			if !r.OK && (!strings.Contains(r.Fix, c.fix) || !strings.Contains(r.Fix, "gpu-hpa --location us-central1 --project my-proj")) {
				t.Errorf("%s: fix %q", name, r.Fix)
			}
			if r.Check == "gke version" && r.OK && !strings.Contains(r.Message, string(c.stage)) {
				t.Errorf("%s: the version check does not say %s: %s", name, c.stage, r.Message)
			}
		}
	}
}

func TestNames(t *testing.T) {
	if got := GaugeName("vllm:num_requests_running"); got != "num-requests-running" {
		t.Errorf("GaugeName = %q", got)
	}
	if got := GaugeName("vllm:kv_cache_usage_perc"); got != "kv-cache-usage-perc" {
		t.Errorf("GaugeName = %q", got)
	}
	n := MetricName("gemma-server-vllm", "num-requests-running")
	if n != "autoscaling.gke.io|gemma-server-vllm|num-requests-running" {
		t.Errorf("MetricName = %q", n)
	}
	if am, g, ok := ParseMetricName(n); !ok || am != "gemma-server-vllm" || g != "num-requests-running" {
		t.Errorf("ParseMetricName = %q %q %v", am, g, ok)
	}
	for _, bad := range []string{"prometheus.googleapis.com|vllm:num_requests_running|gauge", "autoscaling.gke.io||x", "autoscaling.gke.io|a"} {
		if _, _, ok := ParseMetricName(bad); ok {
			t.Errorf("ParseMetricName(%q) ok", bad)
		}
	}
}

func TestFindAndGauges(t *testing.T) {
	var u unstructured.Unstructured
	if err := yaml.Unmarshal([]byte(`
apiVersion: autoscaling.gke.io/v1beta1
kind: AutoscalingMetric
metadata: {name: m, namespace: ns}
spec:
  metrics:
  - pod:
      selector: {matchLabels: {app: a}}
      containers:
      - endpoint: {port: 8081}
        metrics:
        - gauge: {name: num-requests-running, prometheusMetricName: "vllm:num_requests_running"}
        - gauge: {name: num-requests-waiting, prometheusMetricName: "vllm:num_requests_waiting"}
`), &u.Object); err != nil {
		t.Fatal(err)
	}
	if g := Gauges(&u); len(g) != 2 {
		t.Errorf("Gauges = %v", g)
	}
	g, ok := Find(&u, "num-requests-waiting")
	if !ok || g.PrometheusName != "vllm:num_requests_waiting" || g.Port != 8081 || g.Path != "/metrics" || g.Selector["app"] != "a" {
		t.Errorf("Find = %+v %v", g, ok)
	}
	if _, ok := Find(&u, "other"); ok {
		t.Error("Find found an undeclared gauge")
	}
}
