// Package nativemetrics is what vllm-hpa knows of GKE's native custom
// metrics (GA from 1.37): the AutoscalingMetric resource a workload declares its
// gauges with, the name the HPA gives such a metric, and what a cluster
// needs to serve it. Source, cited in docs/native-metrics.md: Google's
// "Autoscale Pods by using custom or external metrics"
// (https://cloud.google.com/kubernetes-engine/docs/how-to/autoscale-using-metrics),
// which supersedes "Expose custom metrics for autoscaling".
package nativemetrics

import (
	_ "embed"
	"fmt"
	"strconv"
	"strings"

	container "google.golang.org/api/container/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// CRD is the AutoscalingMetric CustomResourceDefinition (YAML) that the
// tests and the local emulator install where GKE would.
//
//go:embed crd.yaml
var CRD []byte

// Resource is GKE's AutoscalingMetric.
var Resource = schema.GroupVersionResource{Group: "autoscaling.gke.io", Version: "v1beta1", Resource: "autoscalingmetrics"}

// GroupVersion is Resource's API, as discovery lists it.
const GroupVersion = "autoscaling.gke.io/v1beta1"

// MetricPrefix starts every native metric's name.
const MetricPrefix = "autoscaling.gke.io|"

// MetricName is the name an HPA gives a native metric: type Pods,
// autoscaling.gke.io|<AutoscalingMetric name>|<gauge name>, target
// AverageValue (the HPA and the AutoscalingMetric in one namespace). This
// is the one place that spells it.
func MetricName(autoscalingMetric, gauge string) string {
	return MetricPrefix + autoscalingMetric + "|" + gauge
}

// ParseMetricName splits a native metric's name; ok is false for any other.
func ParseMetricName(name string) (autoscalingMetric, gauge string, ok bool) {
	parts := strings.Split(name, "|")
	if len(parts) != 3 || parts[0]+"|" != MetricPrefix || parts[1] == "" || parts[2] == "" {
		return "", "", false
	}
	return parts[1], parts[2], true
}

// GaugeName is the gauge name GKE accepts for a Prometheus metric: GKE's
// gauge names are DNS labels (^[a-z]([-a-z0-9]*[a-z0-9])?$), so
// vllm:num_requests_running becomes num-requests-running.
func GaugeName(prometheusName string) string {
	n := strings.ToLower(prometheusName)
	if i := strings.LastIndex(n, ":"); i >= 0 {
		n = n[i+1:]
	}
	return strings.Trim(strings.NewReplacer("_", "-", ":", "-").Replace(n), "-")
}

// What a cluster needs for native metrics, as Google's "Autoscale Pods by
// using custom or external metrics" gives it today (it supersedes "Expose
// custom metrics for autoscaling", whose Preview needed 1.35.1 and the
// Rapid channel, with 20 metrics per cluster).
const (
	// GAVersion is the first GKE version where custom pod metrics
	// fetched in the cluster are generally available.
	GAVersion = "1.37.0-gke.3100000"
	// PreviewVersion is the first that serves them, in Preview (where
	// the label rules below apply).
	PreviewVersion = "1.36.4-gke.1247000"
	// HPAProfile is the HPA profile they need (podAutoscaling.hpaProfile).
	HPAProfile = "PERFORMANCE"
	// MaxMetricsPerNode is how many unique metrics the pods on one node
	// may emit for autoscaling, by default (more on request to Google).
	MaxMetricsPerNode = 50
)

// Stage is what a GKE version offers of native metrics.
type Stage string

const (
	StageNone    Stage = "none"
	StagePreview Stage = "Preview"
	StageGA      Stage = "GA"
)

// StageOf is what version v offers: GA, Preview or nothing.
func StageOf(v string) Stage {
	switch {
	case VersionAtLeast(v, GAVersion):
		return StageGA
	case VersionAtLeast(v, PreviewVersion):
		return StagePreview
	}
	return StageNone
}

// Requirement is one thing a cluster needs for native metrics, as the
// container API describes the cluster.
type Requirement struct {
	Check   string
	OK      bool
	Message string
	Fix     string // the gcloud command that meets it
}

// Requirements judges c against what native metrics need: a version that
// serves them (GA or Preview, said which; no release channel is needed)
// and the performance HPA profile. Location and project complete the
// gcloud fixes.
func Requirements(c *container.Cluster, project, location string) []Requirement {
	loc := fmt.Sprintf("%s --location %s --project %s", c.Name, location, project)
	var out []Requirement

	r := Requirement{Check: "gke version", Message: c.CurrentMasterVersion}
	switch StageOf(c.CurrentMasterVersion) {
	case StageGA:
		r.OK, r.Message = true, c.CurrentMasterVersion+" (native custom metrics GA)"
	case StagePreview:
		r.OK, r.Message = true, c.CurrentMasterVersion+" (native custom metrics in Preview: its label rules apply; GA from "+GAVersion+")"
	default:
		r.Message = fmt.Sprintf("control plane version %q is older than %s, the first that serves native custom metrics (GA from %s)", c.CurrentMasterVersion, PreviewVersion, GAVersion)
		r.Fix = fmt.Sprintf("gcloud container clusters upgrade %s --master --cluster-version=%s", loc, GAVersion)
	}
	out = append(out, r)

	profile := "none"
	if c.PodAutoscaling != nil && c.PodAutoscaling.HpaProfile != "" {
		profile = c.PodAutoscaling.HpaProfile
	}
	r = Requirement{Check: "hpa profile", OK: profile == HPAProfile, Message: profile}
	if !r.OK {
		r.Message = fmt.Sprintf("HPA profile %s, not performance", profile)
		r.Fix = fmt.Sprintf("gcloud container clusters update %s --hpa-profile=performance", loc)
	}
	out = append(out, r)
	return out
}

// Supported reports whether every requirement holds.
func Supported(rs []Requirement) bool {
	for _, r := range rs {
		if !r.OK {
			return false
		}
	}
	return true
}

// VersionAtLeast compares GKE versions (1.37.0-gke.3100000): major, minor,
// patch, then the gke build number. A version it cannot read is not at
// least anything.
func VersionAtLeast(v, min string) bool {
	a, ok1 := parseVersion(v)
	b, ok2 := parseVersion(min)
	if !ok1 || !ok2 {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return a[i] > b[i]
		}
	}
	return true
}

func parseVersion(s string) ([4]int, bool) {
	var out [4]int
	s = strings.TrimPrefix(s, "v")
	base, build, _ := strings.Cut(s, "-gke.")
	parts := strings.Split(base, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return out, false
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			return out, false
		}
		out[i] = n
	}
	if build != "" {
		n, err := strconv.Atoi(build)
		if err != nil {
			return out, false
		}
		out[3] = n
	}
	return out, true
}

// Gauges are the gauge names an AutoscalingMetric declares.
func Gauges(u *unstructured.Unstructured) []string {
	var out []string
	metrics, _, _ := unstructured.NestedSlice(u.Object, "spec", "metrics")
	for _, m := range metrics {
		mm, _ := m.(map[string]any)
		containers, _, _ := unstructured.NestedSlice(mm, "pod", "containers")
		for _, c := range containers {
			cm, _ := c.(map[string]any)
			gauges, _, _ := unstructured.NestedSlice(cm, "metrics")
			for _, g := range gauges {
				gm, _ := g.(map[string]any)
				if name, _, _ := unstructured.NestedString(gm, "gauge", "name"); name != "" {
					out = append(out, name)
				}
			}
		}
	}
	return out
}

// Gauge is one gauge an AutoscalingMetric declares, with where it is read.
type Gauge struct {
	Name, PrometheusName string
	Selector             map[string]string
	Port                 int64
	Path                 string
}

// Find returns the gauge named name in an AutoscalingMetric.
func Find(u *unstructured.Unstructured, name string) (Gauge, bool) {
	metrics, _, _ := unstructured.NestedSlice(u.Object, "spec", "metrics")
	for _, m := range metrics {
		mm, _ := m.(map[string]any)
		sel, _, _ := unstructured.NestedStringMap(mm, "pod", "selector", "matchLabels")
		containers, _, _ := unstructured.NestedSlice(mm, "pod", "containers")
		for _, c := range containers {
			cm, _ := c.(map[string]any)
			port := number(cm, "endpoint", "port")
			path, _, _ := unstructured.NestedString(cm, "endpoint", "path")
			if path == "" {
				path = "/metrics" // the documented default
			}
			gauges, _, _ := unstructured.NestedSlice(cm, "metrics")
			for _, g := range gauges {
				gm, _ := g.(map[string]any)
				n, _, _ := unstructured.NestedString(gm, "gauge", "name")
				p, _, _ := unstructured.NestedString(gm, "gauge", "prometheusMetricName")
				if n == name {
					return Gauge{Name: n, PrometheusName: p, Selector: sel, Port: port, Path: path}, true
				}
			}
		}
	}
	return Gauge{}, false
}

// number reads an integer field decoded either by the API machinery
// (int64) or from JSON (float64).
func number(m map[string]any, fields ...string) int64 {
	v, _, _ := unstructured.NestedFieldNoCopy(m, fields...)
	switch n := v.(type) {
	case int64:
		return n
	case float64:
		return int64(n)
	}
	return 0
}
