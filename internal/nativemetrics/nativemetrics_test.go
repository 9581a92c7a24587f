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
		{"1.35.1-gke.1396000", true},
		{"1.35.1-gke.1395999", false},
		{"1.35.2-gke.100", true},
		{"1.35.0-gke.99999999", false},
		{"1.36.0-gke.1", true},
		{"1.34.9-gke.9999999", false},
		{"2.0.0", true},
		{"1.37.2-gke.0", true},
		{"v1.35.1-gke.1396000", true},
		{"", false},
		{"latest", false},
		{"1.35.x", false},
	} {
		if got := VersionAtLeast(c.v, MinVersion); got != c.want {
			t.Errorf("VersionAtLeast(%q) = %v, want %v", c.v, got, c.want)
		}
	}
}

// TestRequirements: each kind of cluster, and the fix for each missing
// requirement.
func TestRequirements(t *testing.T) {
	ok := func() *container.Cluster {
		return &container.Cluster{Name: "gpu-hpa", CurrentMasterVersion: "1.35.1-gke.1396000",
			ReleaseChannel: &container.ReleaseChannel{Channel: "RAPID"}, PodAutoscaling: &container.PodAutoscaling{HpaProfile: "PERFORMANCE"}}
	}
	cases := []struct {
		name  string
		edit  func(c *container.Cluster)
		unmet string // the check that fails, "" for none
		fix   string
	}{
		{"supported", func(*container.Cluster) {}, "", ""},
		{"old version", func(c *container.Cluster) { c.CurrentMasterVersion = "1.34.3-gke.1000" }, "gke version", "--master --cluster-version=1.35.1-gke.1396000"},
		{"regular channel", func(c *container.Cluster) { c.ReleaseChannel.Channel = "REGULAR" }, "release channel", "--release-channel=rapid"},
		{"no channel", func(c *container.Cluster) { c.ReleaseChannel = nil }, "release channel", "--release-channel=rapid"},
		{"no hpa profile", func(c *container.Cluster) { c.PodAutoscaling = nil }, "hpa profile", "--hpa-profile=performance"},
		{"profile none", func(c *container.Cluster) { c.PodAutoscaling.HpaProfile = "NONE" }, "hpa profile", "--hpa-profile=performance"},
	}
	for _, c := range cases {
		cl := ok()
		c.edit(cl)
		rs := Requirements(cl, "my-proj", "us-central1")
		if Supported(rs) != (c.unmet == "") {
			t.Errorf("%s: supported = %v", c.name, Supported(rs))
		}
		for _, r := range rs {
			if r.OK == (r.Check == c.unmet) {
				t.Errorf("%s: %s ok=%v", c.name, r.Check, r.OK)
			}
			if !r.OK && (!strings.Contains(r.Fix, c.fix) || !strings.Contains(r.Fix, "gpu-hpa --location us-central1 --project my-proj")) {
				t.Errorf("%s: fix %q", c.name, r.Fix)
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
