// Package monitor is the walkthrough's second step: the Managed Prometheus
// PodMonitoring that has vLLM's /metrics scraped
// (templates/monitor.yaml.tmpl), waited for until the operator has
// generated its scrape configuration.
package monitor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/gmp"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/objectstep"
	"github.com/vllm-hpa/vllm-hpa/internal/promtext"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// Name is the step's name and command.
const Name = "monitor"

// Definition is the monitor step in the registry.
type Definition struct{}

func (Definition) Name() string { return Name }

// Settings are the keys monitor's command takes as flags.
func (Definition) Settings() []string {
	return []string{"instance", "adopt", "kube.force-conflicts", "workload.namespace", "workload.app-label", "monitoring.interval", "hpa.metric", "hpa.backend"}
}

// Timeout is the key of how long the step waits.
func (Definition) Timeout() string { return "timeouts.monitor" }

func (Definition) Help() step.Help {
	return step.Help{
		Short: "Have Managed Prometheus scrape vLLM's /metrics (PodMonitoring)",
		Long: `Create or update the PodMonitoring that has Managed Prometheus scrape the
vLLM pods' /metrics, then wait for ConfigurationCreateSuccess at the current
generation (and healthy targets where target status is on).`,
	}
}

func (Definition) New(cfg *config.Config, deps step.Deps) step.Step {
	s := &Scraping{cfg: cfg}
	s.Base = objectstep.New(Name, cfg, deps, objectstep.Options{Timeout: cfg.Timeouts.Monitor}, s)
	return s
}

// Scraping is the monitor step: what has the pods' gauges collected (a
// PodMonitoring for Managed Prometheus, or on the native route an
// AutoscalingMetric GKE reads).
type Scraping struct {
	*objectstep.Base
	cfg *config.Config
}

func (s *Scraping) podMonitoring() objectstep.One {
	return objectstep.One{
		GVR: gmp.Resource, Namespace: s.cfg.Workload.Namespace, Name: s.cfg.Monitoring.Name,
		Kind: "PodMonitoring", Goal: "to be configured", Check: "podmonitoring configured",
		Judge: Judge,
	}
}

// Wait waits, by watch, until the operator has configured the
// PodMonitoring, then until there is evidence that its pods are scraped
// (see Evidence), which spans several objects and the pods' own /metrics:
// it is read again every evidencePeriod. With the native backend it then
// waits for the AutoscalingMetric's evidence (see NativeEvidence).
func (s *Scraping) Wait(ctx context.Context) error {
	if s.cfg.WantsPodMonitoring() {
		if err := s.waitPodMonitoring(ctx); err != nil {
			return err
		}
	}
	if s.cfg.Native() {
		return s.waitNative(ctx)
	}
	return nil
}

// waitPodMonitoring waits for the PodMonitoring's condition and evidence.
func (s *Scraping) waitPodMonitoring(ctx context.Context) error {
	_, u, err := s.AwaitOne(ctx, s.podMonitoring())
	if err != nil {
		return err
	}
	k, err := s.Kube()
	if err != nil {
		return err
	}
	first := true
	return s.poll(ctx, "evidence that Managed Prometheus scrapes the pods", func(ctx context.Context) (step.Result, bool, error) {
		if !first { // the first round judges the object the wait saw
			var err error
			if u, err = k.Dynamic.Resource(gmp.Resource).Namespace(s.cfg.Workload.Namespace).Get(ctx, s.cfg.Monitoring.Name, metav1.GetOptions{}); err != nil {
				return step.Result{}, false, err
			}
		}
		first = false
		return s.judgeAll(ctx, k, u)
	})
}

// poll judges evidence every evidencePeriod until it passes, its verdict
// is final, or ctx ends (a timeout naming what and the last reason),
// saying each new reason it waits for.
func (s *Scraping) poll(ctx context.Context, what string, judge func(context.Context) (step.Result, bool, error)) error {
	var last string
	for {
		r, final, err := judge(ctx)
		if err != nil {
			return waitError(ctx, err, what, last)
		}
		if r.OK {
			s.Report().Result(r)
			return nil
		}
		if final {
			return &step.Failed{Results: []step.Result{r}}
		}
		if reason := r.Reason + ": " + r.Message; reason != last {
			last = reason
			s.Report().Waiting(Name, reason)
		}
		select {
		case <-ctx.Done():
			return waitError(ctx, ctx.Err(), what, last)
		case <-time.After(evidencePeriod):
		}
	}
}

// evidencePeriod is how often the wait reads the evidence again.
const evidencePeriod = 2 * time.Second

// waitError is a timeout naming what was awaited and the last reason, or
// err.
func waitError(ctx context.Context, err error, what, last string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &kube.TimeoutError{What: what, LastReason: last}
	}
	return err
}

// Check judges the PodMonitoring and the evidence that it works.
func (s *Scraping) Check(ctx context.Context) ([]step.Result, error) {
	var results []step.Result
	if s.cfg.WantsPodMonitoring() {
		r, err := s.checkPodMonitoring(ctx)
		if err != nil {
			return r, err
		}
		results = append(results, r...)
	}
	if s.cfg.Native() {
		k, err := s.Kube()
		if err != nil {
			return nil, err
		}
		r, _, err := s.judgeNative(ctx, k)
		if err != nil {
			return results, err
		}
		results = append(results, r)
	}
	return results, nil
}

// checkPodMonitoring judges the PodMonitoring and the evidence it works.
func (s *Scraping) checkPodMonitoring(ctx context.Context) ([]step.Result, error) {
	k, err := s.Kube()
	if err != nil {
		return nil, err
	}
	results, err := s.CheckOne(ctx, s.podMonitoring())
	if err != nil || len(results) == 0 || results[0].Reason == "NotFound" {
		return results, err
	}
	u, err := k.Dynamic.Resource(gmp.Resource).Namespace(s.cfg.Workload.Namespace).Get(ctx, s.cfg.Monitoring.Name, metav1.GetOptions{})
	if err != nil {
		return nil, objectstep.MissingAPI(err)
	}
	r, _, err := s.judgeAll(ctx, k, u)
	if err != nil {
		return nil, err
	}
	return []step.Result{r}, nil
}

// judgeAll is the step's whole verdict on the live PodMonitoring: the
// operator's condition, then the evidence that it scrapes the pods.
func (s *Scraping) judgeAll(ctx context.Context, k *kube.Client, u *unstructured.Unstructured) (step.Result, bool, error) {
	r, final := Judge(u)
	r.Step, r.Check = Name, "podmonitoring configured"
	if !r.OK {
		return r, final, nil
	}
	ev, err := s.gather(ctx, k, u)
	if err != nil {
		return r, false, err
	}
	e := Evidence(ev)
	e.Step, e.Check = Name, r.Check
	return e, false, nil
}

// Facts are what the evidence rests on.
type Facts struct {
	// TargetStatus: gmp-public/config enables target status, so the
	// operator reports targets in endpointStatuses.
	TargetStatus bool
	// Reported: the PodMonitoring has endpointStatuses (even []).
	Reported bool
	// EndpointStatuses as reported.
	EndpointStatuses []gmp.ScrapeEndpointStatus
	// Selector is the PodMonitoring's selector, Pods what it selects.
	Selector string
	Pods     []corev1.Pod
	// Scraped (target status off): the Ready pod whose /metrics was read
	// through the API server, what its gauges were, or why it failed.
	Scraped     string
	ScrapedWith string
	ScrapeError error
}

// gather reads the facts: the OperatorConfig, the pods, and (target status
// off) one Ready pod's /metrics through the API server.
func (s *Scraping) gather(ctx context.Context, k *kube.Client, u *unstructured.Unstructured) (Facts, error) {
	var f Facts
	oc, err := k.Dynamic.Resource(gmp.OperatorConfigResource).Namespace(gmp.OperatorConfigNamespace).Get(ctx, gmp.OperatorConfigName, metav1.GetOptions{})
	switch {
	case err == nil:
		f.TargetStatus = gmp.TargetStatusEnabled(oc.Object)
	case !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err):
		return f, fmt.Errorf("read OperatorConfig %s/%s: %w", gmp.OperatorConfigNamespace, gmp.OperatorConfigName, err)
	}
	_, f.Reported, _ = unstructured.NestedSlice(u.Object, "status", "endpointStatuses")
	if pm, err := kube.Convert[gmp.PodMonitoring](u); err == nil {
		f.EndpointStatuses = pm.Status.EndpointStatuses
		sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
		if err != nil {
			return f, fmt.Errorf("PodMonitoring selector: %w", err)
		}
		f.Selector = sel.String()
	}
	pods, err := k.Typed.CoreV1().Pods(s.cfg.Workload.Namespace).List(ctx, metav1.ListOptions{LabelSelector: f.Selector})
	if err != nil {
		return f, err
	}
	f.Pods = pods.Items
	if f.TargetStatus {
		return f, nil
	}
	f.Scraped, f.ScrapedWith, f.ScrapeError = s.scrapeReadyPod(ctx, k, f.Pods, []string{"vllm:num_requests_running", "vllm:num_requests_waiting"})
	return f, nil
}

// scrapeReadyPod reads the first Ready pod's /metrics through the API
// server: which pod, which of gauges it serves, or why not (no Ready pod:
// all empty).
func (s *Scraping) scrapeReadyPod(ctx context.Context, k *kube.Client, pods []corev1.Pod, gauges []string) (pod, with string, err error) {
	for _, p := range pods {
		if !ready(&p) {
			continue
		}
		body, err := k.Typed.CoreV1().Pods(p.Namespace).ProxyGet("http", p.Name, fmt.Sprint(s.cfg.Workload.Port), s.cfg.Monitoring.Path, nil).DoRaw(ctx)
		if err != nil {
			return p.Name, "", err
		}
		fams, err := promtext.Families(strings.NewReader(string(body)))
		if err != nil {
			return p.Name, "", err
		}
		var have []string
		for _, g := range gauges {
			if _, ok := fams[g]; ok {
				have = append(have, g)
			}
		}
		if len(have) == 0 {
			return p.Name, "", fmt.Errorf("%s answers, without %s", s.cfg.Monitoring.Path, strings.Join(gauges, " or "))
		}
		return p.Name, strings.Join(have, ", "), nil
	}
	return "", "", nil
}

// Evidence judges whether Managed Prometheus can be shown to scrape the
// pods: never a pass on missing evidence. The selector must match a Ready
// pod; with target status on, the operator's targets must be healthy; with
// it off, a Ready pod's own /metrics, read through the API server, must
// carry the gauges (and verify then reads the metric through the custom
// metrics API).
func Evidence(f Facts) step.Result {
	var r step.Result
	var ready, names []string
	for _, p := range f.Pods {
		state := "not Ready"
		if p.DeletionTimestamp != nil {
			state = "terminating"
		} else if kube.PodReady(&p) {
			state = "Ready"
			ready = append(ready, p.Name)
		}
		names = append(names, p.Name+" ("+state+")")
	}
	switch {
	case len(f.Pods) == 0:
		r.Reason, r.Message = "NoPods", fmt.Sprintf("the selector %s matches no pod in the namespace: does it match the vLLM pods' labels?", f.Selector)
		return r
	case len(ready) == 0:
		r.Reason, r.Message = "NoReadyPods", fmt.Sprintf("the selector %s matches no Ready pod: %s", f.Selector, strings.Join(names, ", "))
		return r
	}
	if f.TargetStatus {
		if !f.Reported {
			r.Reason, r.Message = "TargetsNotReported", "target status is on (gmp-public/config) but the operator has not reported the targets yet"
			return r
		}
		var active, unhealthy int64
		var lastErr string
		for _, es := range f.EndpointStatuses {
			active += es.ActiveTargets
			unhealthy += es.UnhealthyTargets
			for _, g := range es.SampleGroups {
				for _, t := range g.SampleTargets {
					if t.LastError != nil && *t.LastError != "" {
						lastErr = *t.LastError
					}
				}
			}
		}
		switch {
		case active == 0:
			r.Reason, r.Message = "NoTargets", fmt.Sprintf("the operator reports no target although %d pods are Ready (%s)", len(ready), strings.Join(ready, ", "))
		case unhealthy > 0:
			r.Reason, r.Message = "UnhealthyTargets", fmt.Sprintf("%d of %d targets unhealthy: %s", unhealthy, active, lastErr)
		default:
			r.OK, r.Reason, r.Message = true, "TargetsHealthy", fmt.Sprintf("%d targets healthy (target status is on)", active)
		}
		return r
	}
	if f.ScrapeError != nil {
		r.Reason, r.Message = "MetricsUnreachable", fmt.Sprintf("target status is off (gmp-public/config), and pod %s's /metrics could not be read through the API server: %v", f.Scraped, f.ScrapeError)
		return r
	}
	r.OK, r.Reason = true, "PodsServeMetrics"
	r.Message = fmt.Sprintf("scrape configuration generated; target status is off (gmp-public/config), so the targets are not observable: pod %s serves %s through the API server (verify then reads the metric through the custom metrics API)", f.Scraped, f.ScrapedWith)
	return r
}

func ready(p *corev1.Pod) bool { return p.DeletionTimestamp == nil && kube.PodReady(p) }

// Judge is the PodMonitoring's own check (the operator's condition); the
// operator's False is final: waiting will not change it.
func Judge(u *unstructured.Unstructured) (r step.Result, final bool) {
	pm, err := kube.Convert[gmp.PodMonitoring](u)
	if err != nil {
		r.Reason, r.Message = "Invalid", err.Error()
		return r, false
	}
	r.OK, final, r.Reason, r.Message = Status(pm)
	return r, final
}

// Status judges a PodMonitoring's condition: the operator has observed
// the current generation and ConfigurationCreateSuccess is True (which
// does not prove scraping works: see Evidence). failed means the operator
// said False (no point waiting).
func Status(pm *gmp.PodMonitoring) (ok, failed bool, reason, message string) {
	if pm.Status.ObservedGeneration < pm.Generation {
		return false, false, "NotObserved", fmt.Sprintf("waiting for the Managed Prometheus operator to observe generation %d (observed %d); is Managed Prometheus enabled?", pm.Generation, pm.Status.ObservedGeneration)
	}
	var cond *gmp.MonitoringCondition
	for i := range pm.Status.Conditions {
		if pm.Status.Conditions[i].Type == gmp.ConditionConfigurationCreateSuccess {
			cond = &pm.Status.Conditions[i]
		}
	}
	switch {
	case cond == nil:
		return false, false, "NoCondition", "no ConfigurationCreateSuccess condition yet"
	case cond.Status == "False":
		return false, true, orDefault(cond.Reason, "ScrapeConfigError"), cond.Message
	case cond.Status != "True":
		return false, false, orDefault(cond.Reason, "Unknown"), orDefault(cond.Message, "ConfigurationCreateSuccess is "+string(cond.Status))
	}
	return true, false, gmp.ConditionConfigurationCreateSuccess, "scrape configuration generated"
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
