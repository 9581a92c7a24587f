package steps

import (
	"context"
	"strings"
	"testing"

	container "google.golang.org/api/container/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

type actions []string

func (a *actions) Action(_, m string)   { *a = append(*a, m) }
func (a *actions) Waiting(_, _ string)  {}
func (a *actions) Result(_ step.Result) {}

// TestResolveBackend: auto and native against each kind of cluster the
// container API can describe; adapter is taken as it is.
func TestResolveBackend(t *testing.T) {
	native := func() *container.Cluster {
		return &container.Cluster{Name: "gpu-hpa", CurrentMasterVersion: "1.37.2-gke.0",
			ReleaseChannel: &container.ReleaseChannel{Channel: "RAPID"}, PodAutoscaling: &container.PodAutoscaling{HpaProfile: "PERFORMANCE"}}
	}
	cases := []struct {
		name     string
		backend  string
		edit     func(*container.Cluster)
		want     string // resolved backend, "" for a refusal
		mentions string // in the action or the error
	}{
		{"auto on a native cluster", "auto", func(*container.Cluster) {}, "native", "auto: native, as cluster gpu-hpa serves"},
		{"auto on GA in the regular channel", "auto", func(c *container.Cluster) {
			c.CurrentMasterVersion, c.ReleaseChannel.Channel = "1.37.0-gke.3100000", "REGULAR"
		}, "native", "native custom metrics GA"},
		{"auto on GA in no channel", "auto", func(c *container.Cluster) { c.ReleaseChannel = nil }, "native", "GA"},
		{"auto on Preview", "auto", func(c *container.Cluster) { c.CurrentMasterVersion = "1.36.4-gke.1247000" }, "native", "in Preview"},
		{"auto below Preview", "auto", func(c *container.Cluster) { c.CurrentMasterVersion = "1.36.4-gke.1246999" }, "adapter", "older than 1.36.4-gke.1247000"},
		{"auto on the old Preview's version", "auto", func(c *container.Cluster) { c.CurrentMasterVersion = "1.35.1-gke.1396000" }, "adapter", "older than 1.36.4-gke.1247000"},
		{"auto without the performance profile", "auto", func(c *container.Cluster) { c.PodAutoscaling = nil }, "adapter", "HPA profile none"},
		{"native on a native cluster", "native", func(*container.Cluster) {}, "native", ""},
		{"native on GA in the stable channel", "native", func(c *container.Cluster) { c.ReleaseChannel.Channel = "STABLE" }, "native", ""},
		{"native without the profile", "native", func(c *container.Cluster) { c.PodAutoscaling.HpaProfile = "NONE" }, "", "--hpa-profile=performance"},
		{"native on an old stable cluster", "native", func(c *container.Cluster) {
			c.CurrentMasterVersion, c.ReleaseChannel = "1.31.1-gke.1", nil
		}, "", "--cluster-version=1.37.0-gke.3100000"},
		{"adapter anywhere", "adapter", func(c *container.Cluster) { c.PodAutoscaling = nil }, "adapter", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Project, cfg.Location, cfg.Cluster, cfg.HPA.Backend = "my-proj", "us-central1", "gpu-hpa", c.backend
			cl := native()
			c.edit(cl)
			var said actions
			err := ResolveBackend(context.Background(), &cfg, &step.Deps{Cluster: cl, Report: &said})
			text := strings.Join(said, "\n")
			if err != nil {
				text += err.Error()
			}
			switch {
			case c.want == "" && exitcode.Of(err) != exitcode.Precondition:
				t.Errorf("want exit 5, got %v", err)
			case c.want != "" && (err != nil || cfg.HPA.Backend != c.want):
				t.Errorf("resolved %q (%v), want %q", cfg.HPA.Backend, err, c.want)
			}
			if !strings.Contains(text, c.mentions) {
				t.Errorf("%q does not say %q", text, c.mentions)
			}
		})
	}
}

// TestResolveOffline: where no cluster is read, auto plans the adapter and
// says so; explicit values stay.
func TestResolveOffline(t *testing.T) {
	cfg := config.Default()
	cfg.HPA.Backend = "auto"
	if note := ResolveOffline(&cfg); cfg.HPA.Backend != "adapter" || !strings.Contains(note, "--backend native") {
		t.Errorf("auto offline: %q, %q", cfg.HPA.Backend, note)
	}
	cfg.HPA.Backend = "native"
	if note := ResolveOffline(&cfg); cfg.HPA.Backend != "native" || note != "" {
		t.Errorf("native offline: %q, %q", cfg.HPA.Backend, note)
	}
}
