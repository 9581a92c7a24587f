package steps

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/nativemetrics"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/hpa"
)

// ResolveBackend decides hpa.backend for a command that reaches the
// cluster, before any step reads it, and says which and why. auto is
// native when the container API shows a cluster that serves native
// metrics (a GA or Preview version, the performance HPA profile), or, without
// the container API, when the cluster serves AutoscalingMetric; the
// adapter otherwise. native is checked the same way and refused (exit 5,
// with the gcloud fixes) where it cannot work; so is a cluster whose
// nodes already emit the most metrics GKE serves per node.
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
	location, name := NamedCluster(cfg, *deps)
	c, err := ReadCluster(ctx, cfg, deps)
	if err != nil {
		if deps.Kube == nil {
			return nil, "", err
		}
		// The API server can still say whether it serves the kind.
		deps.Reporter().Action("backend", "cluster "+name+" not read from the container API ("+err.Error()+"): judging by what the API server serves")
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
		r.Fix = "gcloud container clusters update CLUSTER --location LOCATION --hpa-profile=performance, on GKE " + nativemetrics.GAVersion + " or later (" + nativemetrics.PreviewVersion + " for the Preview)"
	}
	return []nativemetrics.Requirement{r}, "the cluster", nil
}

// checkMetricLimit refuses to add gauges on a node whose pods would then
// emit more unique metrics for autoscaling than GKE serves per node
// (nativemetrics.MaxMetricsPerNode), counted as Google counts them: per
// node, the distinct AutoscalingMetric gauges whose selected pods run on
// it. The nodes that count are those the vLLM pods run on now; before
// they run (a first up), the busiest node is said, not refused: where
// the pods will land is not known yet.
func checkMetricLimit(ctx context.Context, cfg *config.Config, deps step.Deps) error {
	if deps.Kube == nil {
		return nil
	}
	notChecked := func(why string) error {
		deps.Reporter().Action("backend", fmt.Sprintf("the %d-metrics-per-node limit not checked: %s", nativemetrics.MaxMetricsPerNode, why))
		return nil
	}
	list, err := deps.Kube.Dynamic.Resource(nativemetrics.Resource).List(ctx, metav1.ListOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case apierrors.IsForbidden(err):
		return notChecked("the caller may not list AutoscalingMetrics in every namespace")
	case err != nil:
		return fmt.Errorf("list AutoscalingMetrics: %w", err)
	}
	perNode := map[string]map[string]bool{} // node -> namespace/metric/gauge
	var own []string                        // this instance's declared gauges
	podsOf := map[string][]corev1.Pod{}     // by namespace and selector
	for _, am := range list.Items {
		if am.GetNamespace() == cfg.Workload.Namespace && am.GetName() == cfg.AutoscalingMetricName() {
			own = nativemetrics.Gauges(&am)
			continue // counted as configured below
		}
		for _, g := range nativemetrics.Gauges(&am) {
			gauge, _ := nativemetrics.Find(&am, g)
			if len(gauge.Selector) == 0 {
				// No matchLabels (matchExpressions, or none): which pods
				// it selects is not read here, so it is counted nowhere
				// rather than on every node.
				deps.Reporter().Action("backend", fmt.Sprintf("AutoscalingMetric %s/%s selects pods without matchLabels: its gauge %s is not counted towards the per-node limit", am.GetNamespace(), am.GetName(), g))
				continue
			}
			pods, err := selectedPods(ctx, deps, am.GetNamespace(), gauge.Selector, podsOf)
			if apierrors.IsForbidden(err) {
				return notChecked("the caller may not list the pods in namespace " + am.GetNamespace())
			} else if err != nil {
				return err
			}
			for _, p := range pods {
				if p.Spec.NodeName == "" {
					continue
				}
				if perNode[p.Spec.NodeName] == nil {
					perNode[p.Spec.NodeName] = map[string]bool{}
				}
				perNode[p.Spec.NodeName][am.GetNamespace()+"/"+am.GetName()+"/"+g] = true
			}
		}
	}
	var adds []string
	for _, m := range cfg.ScaledMetrics() {
		if !slices.Contains(own, m.GaugeName) {
			adds = append(adds, m.GaugeName)
		}
	}
	if len(adds) == 0 {
		// Nothing new to declare (verify, status, a re-run): others
		// having grown past the limit since is not this run's to refuse.
		return nil
	}
	want := len(cfg.ScaledMetrics())
	ours, err := selectedPods(ctx, deps, cfg.Workload.Namespace, map[string]string{"app": cfg.Workload.AppLabel}, podsOf)
	if apierrors.IsForbidden(err) {
		return notChecked("the caller may not list the pods in namespace " + cfg.Workload.Namespace)
	} else if err != nil {
		return err
	}
	busiest, most := "", 0
	for node, metrics := range perNode {
		if len(metrics) > most || len(metrics) == most && node < busiest {
			busiest, most = node, len(metrics)
		}
	}
	checked := false
	for _, p := range ours {
		if node := p.Spec.NodeName; node != "" {
			checked = true
			if n := len(perNode[node]); n+want > nativemetrics.MaxMetricsPerNode {
				return exitcode.With(exitcode.Precondition, fmt.Errorf("hpa.backend native: the pods on node %s already emit %d unique metrics for autoscaling, this instance adds %d, and GKE serves at most %d per node by default (nothing was changed): remove unused AutoscalingMetrics, ask Google for a higher limit, or use --backend adapter",
					node, n, want, nativemetrics.MaxMetricsPerNode))
			}
		}
	}
	if !checked && most+want > nativemetrics.MaxMetricsPerNode {
		deps.Reporter().Action("backend", fmt.Sprintf("node %s's pods already emit %d unique metrics for autoscaling: a vLLM pod placed there would pass GKE's %d per node", busiest, most, nativemetrics.MaxMetricsPerNode))
	}
	return nil
}

// selectedPods lists the pods of namespace that selector selects, once
// per namespace and selector.
func selectedPods(ctx context.Context, deps step.Deps, namespace string, selector map[string]string, cache map[string][]corev1.Pod) ([]corev1.Pod, error) {
	sel := labels.SelectorFromSet(selector).String()
	key := namespace + "|" + sel
	if pods, ok := cache[key]; ok {
		return pods, nil
	}
	list, err := deps.Kube.Typed.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, err
	}
	cache[key] = list.Items
	return list.Items, nil
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
