// Package hpa is the walkthrough's last step: the HorizontalPodAutoscaler
// on the vLLM metric (templates/hpa.yaml.tmpl), waited for until it is
// AbleToScale and ScalingActive with ValidMetricFound.
package hpa

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/nativemetrics"
	"github.com/vllm-hpa/vllm-hpa/internal/objectstep"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/identity"
)

// Name is the step's name and command.
const Name = "hpa"

// Definition is the hpa step in the registry.
type Definition struct{}

func (Definition) Name() string { return Name }

// Settings are the keys hpa's command takes as flags.
func (Definition) Settings() []string {
	return []string{"instance", "adopt", "kube.force-conflicts", "workload.namespace", "workload.deployment", "workload.app-label", "hpa.min-replicas", "hpa.max-replicas", "hpa.metric", "hpa.target", "hpa.running-target", "hpa.waiting-target", "hpa.kv-cache-target", "hpa.backend"}
}

// Timeout is the key of how long the step waits.
func (Definition) Timeout() string { return "timeouts.hpa" }

func (Definition) Help() step.Help {
	return step.Help{
		Short: "Create the HorizontalPodAutoscaler on the vLLM metric",
		Long: `Create or update the HPA that scales the vLLM Deployment on
prometheus.googleapis.com|<metric>|gauge (hpa.backend adapter) or
autoscaling.gke.io|<instance>-vllm|<gauge> (native), then wait until it is
AbleToScale and ScalingActive with ValidMetricFound and a current value of
that metric. A move between backends needs --backend given, and the native
route its AutoscalingMetric (vllm-hpa monitor) in place first.`,
	}
}

// Requires: none, but its wait says why the adapter serves no value from
// IAM and Cloud Monitoring when Google API clients can be opened.
func (Definition) Requires(*config.Config) step.Requirements {
	return step.Requirements{ExplainsWithGoogle: true}
}

func (Definition) New(cfg *config.Config, deps step.Deps) step.Step {
	s := &Autoscaler{cfg: cfg}
	s.Base = objectstep.New(Name, cfg, deps, objectstep.Options{Timeout: cfg.Timeouts.HPA}, s)
	return s
}

// Autoscaler is the hpa step.
type Autoscaler struct {
	*objectstep.Base
	cfg *config.Config
	// movedFrom is the backend whose metric the HPA read before this run
	// moved it ("" when it did not), movedMetrics what it read there.
	movedFrom    string
	movedMetrics []autoscalingv2.MetricSpec
}

// restoreMetrics sets cfg's metrics and targets to those of an HPA spec,
// so that a failed move puts back what the HPA read, not the new metrics
// on the old route; a metric it does not know leaves cfg's.
func restoreMetrics(cfg *config.Config, metrics []autoscalingv2.MetricSpec) {
	var keys []string
	targets := map[string]float64{}
	for _, m := range metrics {
		if m.Pods == nil || m.Pods.Target.AverageValue == nil {
			return
		}
		key := metricKey(m.Pods.Metric.Name)
		if key == "" {
			return
		}
		keys = append(keys, key)
		targets[key] = float64(m.Pods.Target.AverageValue.MilliValue()) / 1000 // as rendered: thousandths
	}
	if len(keys) == 0 {
		return
	}
	cfg.HPA.Metric = strings.Join(keys, "+")
	for _, k := range keys {
		cfg.SetTarget(k, targets[k])
	}
}

// metricKey is the hpa.metric name of an HPA metric name of either route.
func metricKey(name string) string {
	_, gauge, native := nativemetrics.ParseMetricName(name)
	for key, prom := range config.Metrics {
		if (native && gauge == nativemetrics.GaugeName(prom)) || (!native && name == config.AdapterMetricName(prom)) {
			return key
		}
	}
	return ""
}

// Apply applies the HPA and waits for its metric; when a move between
// backends fails (the new metric is never read), it puts the HPA back on
// the metric it read before, whose route is still in place (up retires
// it only after this step), so that the HPA is not left without one.
func (s *Autoscaler) Apply(ctx context.Context) error {
	err := s.Base.Apply(ctx)
	if err == nil || s.movedFrom == "" || ctx.Err() != nil {
		return err
	}
	old := s.cfg.Copy()
	old.HPA.Backend = s.movedFrom
	restoreMetrics(old, s.movedMetrics)
	back := Definition{}.New(old, s.Deps()).(*Autoscaler)
	if rerr := back.Base.Apply(ctx); rerr != nil {
		return fmt.Errorf("%w; putting the HPA back on %s failed too: %v", err, strings.Join(old.HPAMetricNames(), " and "), rerr)
	}
	s.Report().Action(Name, "the HPA is back on "+strings.Join(old.HPAMetricNames(), " and ")+", the route it read before: "+strings.Join(s.cfg.HPAMetricNames(), " and ")+" was not read")
	return err
}

func (s *Autoscaler) hpa() objectstep.One {
	return objectstep.One{
		GVR: kube.HPAsGVR, Namespace: s.cfg.Workload.Namespace, Name: s.cfg.HPA.Name,
		Kind: "HPA", Goal: "to find its metric", Check: "hpa scaling active",
		Judge: func(u *unstructured.Unstructured) (step.Result, bool) { return Judge(u, s.cfg) },
	}
}

// BeforeWrite refuses to point the HPA at a route that serves nothing: the
// native route needs its AutoscalingMetric (the monitor step's), and a
// move between backends (the live HPA names the other route's metric)
// needs hpa.backend given, so that a run that forgot --backend does not
// switch a stack's route. The live HPA was read with the others: one more
// read only for the native source.
func (s *Autoscaler) BeforeWrite(ctx context.Context, objs, live []*unstructured.Unstructured) error {
	want := s.cfg.HPAMetricName()
	for _, l := range live {
		if l == nil || l.GetKind() != "HorizontalPodAutoscaler" {
			continue
		}
		h, err := kube.Convert[autoscalingv2.HorizontalPodAutoscaler](l)
		if err != nil {
			return nil
		}
		cur := CurrentMetricName(h.Spec.Metrics)
		_, _, curNative := nativemetrics.ParseMetricName(cur)
		route := config.BackendAdapter
		if curNative {
			route = config.BackendNative
		}
		if cur != "" && curNative != s.cfg.Native() {
			s.movedFrom, s.movedMetrics = route, h.Spec.Metrics
		}
		if s.movedFrom != "" && !s.cfg.Given("hpa.backend") {
			return exitcode.With(exitcode.Precondition, fmt.Errorf("the HPA reads %s (hpa.backend %s) and hpa.backend is not given, so this run would move it to %s: give --backend %s to keep it, or --backend %s with up to move the stack (nothing was changed)",
				cur, route, want, route, s.cfg.HPA.Backend))
		}
	}
	if !s.cfg.Native() {
		return nil
	}
	k, err := s.Kube()
	if err != nil {
		return err
	}
	am, err := k.Dynamic.Resource(nativemetrics.Resource).Namespace(s.cfg.Workload.Namespace).Get(ctx, s.cfg.AutoscalingMetricName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return exitcode.With(exitcode.Precondition, fmt.Errorf("the HPA would read %s, but AutoscalingMetric %s/%s does not exist: run vllm-hpa monitor --backend native (or up) first (nothing was changed)",
			want, s.cfg.Workload.Namespace, s.cfg.AutoscalingMetricName()))
	}
	if err != nil {
		return objectstep.MissingAPI(err)
	}
	// Each gauge the HPA will read, declared for its vLLM metric (a
	// combined strategy added after monitor ran would read nothing).
	for _, m := range s.cfg.ScaledMetrics() {
		if g, ok := nativemetrics.Find(am, m.GaugeName); !ok || g.PrometheusName != m.Gauge {
			return exitcode.With(exitcode.Precondition, fmt.Errorf("the HPA would read %s, but AutoscalingMetric %s/%s does not declare gauge %s for %s: run vllm-hpa monitor --backend native --metric %s (or up) first (nothing was changed)",
				m.HPAName, s.cfg.Workload.Namespace, s.cfg.AutoscalingMetricName(), m.GaugeName, m.Gauge, s.cfg.HPA.Metric))
		}
	}
	return nil
}

// CurrentMetricName is the first Pods metric an HPA spec names.
func CurrentMetricName(metrics []autoscalingv2.MetricSpec) string {
	for _, m := range metrics {
		if m.Pods != nil {
			return m.Pods.Metric.Name
		}
	}
	return ""
}

// explainEvery is how often a wait on the adapter route says why the
// adapter serves no value, from vllm-hpa's evidence.
var explainEvery = 30 * time.Second

// Wait waits until the HPA finds its metric. On the adapter route, while
// the HPA cannot read it, it says why every explainEvery, and a timeout
// ends with the cause, never a list of guesses: the adapter's one 404 has
// many.
func (s *Autoscaler) Wait(ctx context.Context) error {
	o := s.hpa()
	if s.cfg.Native() {
		return s.WaitOne(ctx, o)
	}
	judge := o.Judge
	var failing atomic.Bool
	o.Judge = func(u *unstructured.Unstructured) (step.Result, bool) {
		r, final := judge(u)
		failing.Store(!r.OK && adapterFailure(r.Reason))
		return r, final
	}
	// The explanations end with the wait: one in flight is cancelled.
	ectx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(explainEvery)
		defer t.Stop()
		for {
			select {
			case <-ectx.Done():
				return
			case <-t.C:
				if failing.Load() {
					d := s.explain(ectx)
					if ectx.Err() == nil {
						s.Report().Waiting(Name, "the adapter serves no value of "+s.cfg.HPAMetricName()+": "+d.Message)
					}
				}
			}
		}
	}()
	err := s.WaitOne(ctx, o)
	stop()
	<-done
	if err != nil && failing.Load() && exitcode.Of(err) == exitcode.Timeout {
		// The wait's time is up: one more read, of at most
		// explainAfterTimeout, names the cause (Ctrl+C never gets here).
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), explainAfterTimeout)
		defer cancel()
		d := s.explain(tctx)
		return fmt.Errorf("%w\ncause (%s): %s", err, d.Reason, d.Message)
	}
	return err
}

// explainAfterTimeout bounds the read that names the cause once the wait
// has timed out.
const explainAfterTimeout = 10 * time.Second

// adapterFailure: the HPA's reasons for not reading the adapter's value.
func adapterFailure(reason string) bool {
	return reason == "FailedGetPodsMetric" || reason == "MetricNotRead"
}

// explain says why the adapter serves no value of the first metric.
func (s *Autoscaler) explain(ctx context.Context) identity.Diagnosis {
	return identity.Explain(ctx, s.cfg, s.Deps(), s.cfg.MetricName(), nil)
}

// Check judges the HPA.
func (s *Autoscaler) Check(ctx context.Context) ([]step.Result, error) {
	return s.CheckOne(ctx, s.hpa())
}

// Judge is the HPA's check, with the metric's current value against its
// target. Metrics can appear late: no HPA verdict is final.
func Judge(u *unstructured.Unstructured, cfg *config.Config) (r step.Result, final bool) {
	h, err := kube.Convert[autoscalingv2.HorizontalPodAutoscaler](u)
	if err != nil {
		r.Reason, r.Message = "Invalid", err.Error()
		return r, false
	}
	// Every metric of a combined strategy needs a current value: the
	// controller may find one valid metric and scale on it alone.
	metrics := cfg.ScaledMetrics()
	var values []string
	for i, m := range metrics {
		ok, reason, message, current := Status(h, m.HPAName)
		if i == 0 || (r.OK && !ok) {
			r.OK, r.Reason, r.Message = ok, reason, message
		}
		if current == "" {
			continue
		}
		value := fmt.Sprintf("current %s / target %s", current, render.Quantity(m.Target))
		if len(metrics) > 1 {
			value = m.Key + " " + value
		}
		values = append(values, value)
	}
	if len(values) > 0 {
		r.Message = strings.Join(values, ", ") + "; " + r.Message
	}
	return r, false
}

// Status judges an HPA: AbleToScale True and ScalingActive True with
// ValidMetricFound. It also returns the current value of the metric.
func Status(h *autoscalingv2.HorizontalPodAutoscaler, metric string) (ok bool, reason, message, current string) {
	for _, m := range h.Status.CurrentMetrics {
		if m.Type == autoscalingv2.PodsMetricSourceType && m.Pods != nil && m.Pods.Metric.Name == metric && m.Pods.Current.AverageValue != nil {
			current = m.Pods.Current.AverageValue.String()
		}
	}
	conds := map[autoscalingv2.HorizontalPodAutoscalerConditionType]autoscalingv2.HorizontalPodAutoscalerCondition{}
	for _, c := range h.Status.Conditions {
		conds[c.Type] = c
	}
	able, hasAble := conds[autoscalingv2.AbleToScale]
	active, hasActive := conds[autoscalingv2.ScalingActive]
	switch {
	case !hasAble && !hasActive:
		return false, "NoConditions", "the HPA controller has not evaluated the HPA yet", current
	case hasAble && able.Status != corev1.ConditionTrue:
		return false, able.Reason, explainHPA(able.Reason, able.Message), current
	case !hasActive || active.Status != corev1.ConditionTrue || active.Reason != "ValidMetricFound":
		return false, active.Reason, explainHPA(active.Reason, active.Message), current
	case current == "":
		// The conditions may be of the metric the HPA named before (a
		// move between backends): only a value of this metric proves the
		// controller read it.
		// (Or, in a combined strategy, the controller scales on the
		// metrics it can read and leaves this one blank.)
		hint := HintAdapter
		if _, _, native := nativemetrics.ParseMetricName(metric); native {
			hint = HintNative
		}
		return false, "MetricNotRead", "the HPA controller shows no current value of " + metric + ": it has not read it yet (its status may be of an earlier spec) or cannot read it (" + hint + ")", current
	}
	return true, "ValidMetricFound", active.Message, current
}

// hpaHints say what an HPA condition reason means for this stack.
var hpaHints = map[string]string{
	"FailedGetPodsMetric":          HintAdapter,
	"FailedGetScale":               "the HPA cannot read its target's scale: does the vLLM Deployment exist?",
	"InvalidMetricSourceType":      "the HPA's metric spec is not valid for the controller",
	"InvalidSelector":              "the target's label selector is invalid",
	"ScalingDisabled":              "the target has 0 replicas, so autoscaling is off",
	"FailedComputeMetricsReplicas": "the controller could not compute a replica count from the metric",
}

// HintAdapter: the Stackdriver adapter served no value. It answers one 404
// for every failure to read the metric (its identity, a grant, the API,
// or no samples yet), so no message tells the cause: vllm-hpa's evidence
// does.
const HintAdapter = "the adapter answers so for any failure to read the metric from Cloud Monitoring, and for a metric with no samples yet; vllm-hpa verify names the cause"

// HintNative: GKE does not serve the native metric to the HPA.
const HintNative = "GKE serves autoscaling.gke.io metrics when the cluster has the performance HPA profile and the AutoscalingMetric's pods serve the gauge; check with vllm-hpa verify (monitor, autoscalingmetric)"

func explainHPA(reason, message string) string {
	if reason == "FailedGetPodsMetric" && strings.Contains(message, "autoscaling.gke.io|") {
		return message + " (" + HintNative + ")"
	}
	if hint, ok := hpaHints[reason]; ok {
		return message + " (" + hint + ")"
	}
	return message
}
