package steps

import (
	"context"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/nativemetrics"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/hpa"
)

// ResolveBackend decides hpa.backend for a command that reaches the
// cluster, before any step reads it, and says which and why. auto is
// native when the container API shows a cluster that serves native
// metrics (version, Rapid channel, performance HPA profile), or, without
// the container API, when the cluster serves AutoscalingMetric; the
// adapter otherwise. native is checked the same way and refused (exit 5,
// with the gcloud fixes) where it cannot work; so is a cluster whose
// AutoscalingMetrics already declare the most gauges GKE serves.
// The cluster read from the container API is kept in deps, for the
// preconditions.
func ResolveBackend(ctx context.Context, cfg *config.Config, deps *step.Deps) error {
	if cfg.HPA.Backend == config.BackendAdapter {
		return nil
	}
	report := deps.Reporter()
	reqs, where, err := nativeRequirements(ctx, cfg, deps)
	if err != nil {
		return err
	}
	supported := nativemetrics.Supported(reqs)
	if cfg.HPA.Backend == config.BackendAuto {
		if !supported {
			cfg.HPA.Backend = config.BackendAdapter
			report.Action("backend", "hpa.backend auto: adapter, as "+where+" does not serve GKE's native custom metrics ("+unmet(reqs)+")")
			return nil
		}
		cfg.HPA.Backend = config.BackendNative
		report.Action("backend", "hpa.backend auto: native, as "+where+" serves GKE's native custom metrics ("+met(reqs)+")")
	} else if !supported {
		var fixes []string
		for _, r := range reqs {
			if !r.OK {
				fixes = append(fixes, r.Message+"; fix: "+r.Fix)
			}
		}
		return exitcode.With(exitcode.Precondition, fmt.Errorf("hpa.backend native: %s cannot serve GKE's native custom metrics (nothing was changed; --backend adapter works on any cluster):\n  %s", where, strings.Join(fixes, "\n  ")))
	}
	return checkMetricLimit(ctx, cfg, *deps)
}

// InferBackend keeps, when hpa.backend is not given, the route the live HPA
// reads (as an earlier up built it): a plain up, verify or status on a
// native stack neither checks nor rebuilds the adapter. One read.
func InferBackend(ctx context.Context, cfg *config.Config, deps step.Deps) error {
	if cfg.Given("hpa.backend") || deps.Kube == nil {
		return nil
	}
	h, err := deps.Kube.Typed.AutoscalingV2().HorizontalPodAutoscalers(cfg.Workload.Namespace).Get(ctx, cfg.HPA.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) || apierrors.IsForbidden(err):
		return nil
	case err != nil:
		return err
	}
	if live := hpa.CurrentMetricName(h.Spec.Metrics); live != "" {
		if _, _, native := nativemetrics.ParseMetricName(live); native {
			cfg.HPA.Backend = config.BackendNative
			deps.Reporter().Action("backend", "hpa.backend not given: the HPA reads "+live+", the native route, so native (--backend adapter moves it)")
		}
	}
	return nil
}

// ResolveOffline decides hpa.backend where no cluster is read (render, dry
// runs): auto plans the adapter, and the note says so.
func ResolveOffline(cfg *config.Config) (note string) {
	if cfg.HPA.Backend != config.BackendAuto {
		return ""
	}
	cfg.HPA.Backend = config.BackendAdapter
	return "hpa.backend auto is decided from the cluster when up runs; shown for the adapter (--backend native shows the native route)"
}

// nativeRequirements are what native metrics need, judged from the
// container API's view of the cluster when there is one, else from what
// the API server serves.
func nativeRequirements(ctx context.Context, cfg *config.Config, deps *step.Deps) ([]nativemetrics.Requirement, string, error) {
	location, name := cfg.Location, cfg.Cluster
	if name == "" {
		location, name = deps.ClusterLocation, deps.ClusterName
	}
	c := deps.Cluster
	if c == nil && name != "" && deps.GCP != nil {
		var err error
		if c, err = deps.GCP.Cluster(ctx, cfg.Project, location, name); err != nil {
			if deps.Kube == nil {
				return nil, "", err
			}
			// The API server can still say whether it serves the kind.
			deps.Reporter().Action("backend", "cluster "+name+" not read from the container API ("+err.Error()+"): judging by what the API server serves")
			c = nil
		}
		deps.Cluster = c
	}
	if c != nil {
		return nativemetrics.Requirements(c, cfg.Project, location), "cluster " + c.Name, nil
	}
	if deps.Kube == nil {
		return nil, "", fmt.Errorf("no connection to tell whether the cluster serves native metrics")
	}
	served, err := deps.Kube.Served(ctx, nativemetrics.Resource)
	if err != nil {
		return nil, "", err
	}
	r := nativemetrics.Requirement{Check: "api", OK: served, Message: nativemetrics.GroupVersion + " AutoscalingMetric served"}
	if !served {
		r.Message = "the API server does not serve " + nativemetrics.GroupVersion + " AutoscalingMetric (not a GKE cluster with native custom metrics; the container API was not read, so what is missing is not known: with Google credentials and --cluster/--location, or a gcloud kubeconfig context, vllm-hpa says which)"
		r.Fix = "gcloud container clusters update CLUSTER --location LOCATION --release-channel=rapid --hpa-profile=performance (GKE " + nativemetrics.MinVersion + " or later)"
	}
	return []nativemetrics.Requirement{r}, "the cluster", nil
}

// checkMetricLimit refuses a cluster whose other AutoscalingMetrics
// already declare the most gauges GKE serves per cluster.
func checkMetricLimit(ctx context.Context, cfg *config.Config, deps step.Deps) error {
	if deps.Kube == nil {
		return nil
	}
	list, err := deps.Kube.Dynamic.Resource(nativemetrics.Resource).List(ctx, metav1.ListOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case apierrors.IsForbidden(err):
		deps.Reporter().Action("backend", fmt.Sprintf("the %d-metric limit not checked: the caller may not list AutoscalingMetrics in every namespace", nativemetrics.MaxMetricsPerCluster))
		return nil
	case err != nil:
		return fmt.Errorf("list AutoscalingMetrics: %w", err)
	}
	used := map[string]bool{}
	var own []string // this instance's declared gauges, nil when it has none
	for _, am := range list.Items {
		if am.GetNamespace() == cfg.Workload.Namespace && am.GetName() == cfg.AutoscalingMetricName() {
			own = append([]string{}, nativemetrics.Gauges(&am)...)
			continue // counted as configured below
		}
		for _, g := range nativemetrics.Gauges(&am) {
			used[am.GetNamespace()+"/"+am.GetName()+"/"+g] = true
		}
	}
	adds := false
	for _, m := range cfg.ScaledMetrics() {
		adds = adds || !slices.Contains(own, m.GaugeName)
	}
	if !adds {
		// Nothing new to declare (verify, status, a re-run): others
		// having grown past the limit since is not this run's to refuse.
		return nil
	}
	if want := len(cfg.ScaledMetrics()); len(used)+want > nativemetrics.MaxMetricsPerCluster {
		return exitcode.With(exitcode.Precondition, fmt.Errorf("hpa.backend native: the cluster's other AutoscalingMetrics declare %d gauges, this instance needs %d, and GKE serves at most %d per cluster (nothing was changed): remove unused ones, or use --backend adapter",
			len(used), want, nativemetrics.MaxMetricsPerCluster))
	}
	return nil
}

func unmet(rs []nativemetrics.Requirement) string {
	var out []string
	for _, r := range rs {
		if !r.OK {
			out = append(out, r.Message)
		}
	}
	return strings.Join(out, "; ")
}

func met(rs []nativemetrics.Requirement) string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Check+" "+r.Message)
	}
	return strings.Join(out, ", ")
}
