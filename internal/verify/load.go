package verify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vllm-hpa/vllm-hpa/internal/behavior"
	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/load"
	"github.com/vllm-hpa/vllm-hpa/internal/output"
	"github.com/vllm-hpa/vllm-hpa/internal/stages"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/timeline"
	"github.com/vllm-hpa/vllm-hpa/internal/units"
)

// LoadTest is verify --load: send load while recording the HPA's
// reaction, then (optionally) wait for a scale-up and a scale-down.
type LoadTest struct {
	// Load is what to send (its URL the server's).
	Load load.Options
	// ExpectReplicas, if > 0, fails the test (exit 4) unless that many
	// replicas are Ready within WaitTimeout.
	ExpectReplicas int32
	// ScaleDown then stops the load and waits for the HPA's minimum.
	ScaleDown   bool
	WaitTimeout time.Duration
	// Report, if set, is a file the timeline and load summary go to.
	Report string
	// Scrub, if set, cleans what goes to Report of secrets.
	Scrub func(string) string
	// Settle is TooLight's settle (0: DefaultSettle).
	Settle time.Duration
	// Tail, with ScaleDown, is a lighter load kept on from the scale-up's
	// proof until the scale-down's last pod is gone, sent through the
	// Service (reach.ServiceProxy) so that every pod has its share: a pod
	// stopped with requests in hand shows as the tail's failures. Nil: the
	// load stops before the scale-down.
	Tail *load.Options
	// MaxScaleDownFailures: more of the tail's requests failing fails the
	// test (exit 3).
	MaxScaleDownFailures int
	// ImageAdvice, if set, says what cuts the image pull on this
	// cluster's GPU nodes, in place of the generic advice when the pull
	// was the biggest stage.
	ImageAdvice func(context.Context) string
}

// LoadResult is what a load test saw: the load's summary and the HPA's
// timeline.
type LoadResult struct {
	Load     *load.Summary      `json:"load,omitempty"`
	Timeline *timeline.Timeline `json:"timeline,omitempty"`
	// Stages explain the first scale-up (with --expect-replicas).
	Stages *stages.Report `json:"stages,omitempty"`
	// ScaleDown is the tail's summary: the requests sent through the
	// Service while the HPA scaled down (with --scale-down).
	ScaleDown *load.Summary `json:"scaleDown,omitempty"`
	// Behavior is the HPA behaviour the measured cold start asks for
	// (with --expect-replicas; tune --from-report applies it).
	Behavior *behavior.Recommendation `json:"behavior,omitempty"`
}

// Run sends the load and watches; rec gets a "load" step.
func (o LoadTest) Run(ctx context.Context, cfg *config.Config, k *kube.Client, rec *output.Progress) (*LoadResult, error) {
	lo, url := o.Load, o.Load.URL
	rec.StepStarted("load")
	start := time.Now()
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	tl := timeline.Start(wctx, k, cfg.Workload.Namespace, cfg.HPA.Name, cfg.Workload.Deployment, cfg.HPAMetricNames(), start, func(s timeline.Sample, rs *timeline.Rescale) {
		if rs != nil {
			rec.Action("load", fmt.Sprintf("%s SuccessfulRescale: %s", rs.At, rs.Message))
		}
	})
	// New pods' first answers, probed from their start.
	prober := stages.StartProber(wctx, k, cfg.Workload.Namespace, "app="+cfg.Workload.AppLabel, int(cfg.Workload.Port), cfg.Workload.Model, start)
	loadCtx, stopLoad := context.WithCancelCause(ctx)
	defer stopLoad(load.ErrStopped)
	type result struct {
		sum *load.Summary
		err error
	}
	live := &load.Live{}
	loadDone := make(chan result, 1)
	go func() {
		sum, err := load.Run(loadCtx, lo, live)
		loadDone <- result{sum, err}
	}()
	rec.Action("load", fmt.Sprintf("sending to %s: %s", url, Describe(lo)))
	stopStatus := ShowLive(rec, live, tl)

	var waitErr error
	if o.ExpectReplicas > 0 {
		waitErr = o.waitScaleUp(ctx, tl, cfg.ScaledMetrics(), start, rec)
	}
	var report *stages.Report
	var scaleDown *load.Summary
	if waitErr == nil && o.ExpectReplicas > 0 {
		// The new pods' stages, read while they exist (the load still on).
		report = o.readStages(ctx, cfg, tl, prober)
	}
	if o.ExpectReplicas > 0 || o.ScaleDown {
		stopLoad(load.ErrStopped) // the scale-up is proven (or failed): stop sending
	}
	var tail *tailLoad
	var scaledUp map[types.UID]bool // the pods a scale-down may remove
	if waitErr == nil && o.ScaleDown && o.Tail != nil {
		scaledUp = podUIDs(ctx, k, cfg.Workload.Namespace, "app="+cfg.Workload.AppLabel)
		tail = startTail(ctx, *o.Tail)
		defer tail.stop()
		rec.Action("load", "through the scale-down: "+Describe(*o.Tail)+" through the Service (the API server's service proxy), spread over its pods")
	}
	res := <-loadDone
	stopStatus()
	switch {
	case waitErr != nil:
	case res.err != nil:
		waitErr = res.err
	case ctx.Err() != nil:
		waitErr = ctx.Err()
	default:
		waitErr = exitcode.With(exitcode.CheckFailed, res.sum.Verdict())
	}
	if res.sum != nil {
		for _, l := range res.sum.Lines() {
			rec.Action("load", l)
		}
		if advice, short := DrainAdvice(cfg.Workload.Drain, time.Duration(res.sum.MaxSeconds)); short {
			rec.Action("load", advice)
		}
	}
	var advised *behavior.Recommendation
	if report != nil {
		// Their first answers are probed directly: no load needed.
		o.awaitFirstAnswers(ctx, prober, report, rec)
		if r, err := behavior.Recommend(report, cfg.HPA); err == nil {
			advised = r
			o.sayBehavior(r, rec)
		}
	}
	if waitErr == nil && o.ScaleDown {
		w, cancel := context.WithTimeout(ctx, o.WaitTimeout)
		err := tl.WaitFor(w, func(s timeline.Sample) bool {
			return s.Ready <= cfg.HPA.MinReplicas && s.Replicas <= cfg.HPA.MinReplicas
		})
		switch {
		case ctx.Err() != nil:
			waitErr = ctx.Err()
		case err != nil && tail != nil:
			waitErr = exitcode.With(exitcode.Timeout, fmt.Errorf("no scale-down to %d replicas within %s (the tail of %g requests/s may hold the HPA up: a lower --tail-rate): %w", cfg.HPA.MinReplicas, o.WaitTimeout, o.Tail.Rate, err))
		case err != nil:
			waitErr = exitcode.With(exitcode.Timeout, fmt.Errorf("no scale-down to %d replicas within %s: %w", cfg.HPA.MinReplicas, o.WaitTimeout, err))
		default:
			rec.Result(step.Result{Step: "load", Check: fmt.Sprintf("scaled down to %d", cfg.HPA.MinReplicas), OK: true, Message: "after " + timeline.Seconds(time.Since(start)).String()})
		}
		if tail != nil && waitErr == nil {
			// The tail lasts until the removed pods are gone: their
			// requests are at stake until their processes stop.
			rec.Status("waiting for the removed pods to drain and stop")
			if err := waitTerminated(w, k, cfg.Workload.Namespace, "app="+cfg.Workload.AppLabel, scaledUp); err != nil && ctx.Err() == nil {
				waitErr = exitcode.With(exitcode.Timeout, fmt.Errorf("the removed pods had not stopped within --wait-timeout %s of the scale-down's start: %w", o.WaitTimeout, err))
			}
			rec.Status("")
		}
		cancel()
	}
	if tail != nil {
		var tailErr error
		scaleDown, tailErr = tail.stop()
		if scaleDown != nil {
			for _, l := range scaleDown.Lines() {
				rec.Action("load", "scale-down: "+l)
			}
		}
		switch {
		case waitErr != nil || ctx.Err() != nil:
		case tailErr != nil:
			waitErr = fmt.Errorf("the load through the scale-down: %w", tailErr)
		default:
			waitErr = ScaleDownVerdict(scaleDown, o.MaxScaleDownFailures, cfg.Workload.Drain)
		}
	}
	stopWatch()
	t := tl.Timeline()
	if t.FirstScaleUp != nil {
		rec.Action("load", "load start -> first scale-up: "+t.FirstScaleUp.String())
	}
	if t.ScaledUpReady != nil {
		rec.Action("load", "load start -> scaled-up pods Ready: "+t.ScaledUpReady.String())
	}
	for _, line := range timeline.Chart(t, 60) {
		rec.Action("load", line)
	}
	if o.Report != "" {
		b, _ := json.MarshalIndent(map[string]any{"load": res.sum, "timeline": t, "stages": report, "scaleDown": scaleDown, "behavior": advised}, "", "  ")
		if o.Scrub != nil {
			b = []byte(o.Scrub(string(b)))
		}
		if err := os.WriteFile(o.Report, append(b, '\n'), 0o644); err != nil && waitErr == nil {
			waitErr = fmt.Errorf("write --report: %w", err)
		}
	}
	rec.StepDone("load", waitErr)
	return &LoadResult{Load: res.sum, Timeline: &t, Stages: report, ScaleDown: scaleDown, Behavior: advised}, waitErr
}

// sayBehavior says the behaviour the cold start asks for, and how to
// apply it.
func (o LoadTest) sayBehavior(r *behavior.Recommendation, rec *output.Progress) {
	for _, line := range r.Reasoning {
		rec.Action("load", "behavior: "+line)
	}
	switch {
	case len(r.Changes) == 0:
		rec.Action("load", "behavior: the HPA's behaviour already fits this cold start")
	case o.Report != "":
		rec.Action("load", "behavior: vllm-hpa tune --from-report "+o.Report+" --apply sets it on the HPA")
	default:
		rec.Action("load", "behavior: with --report FILE, vllm-hpa tune --from-report FILE --apply sets it on the HPA")
	}
}

// tailLoad is the load kept on through a scale-down.
type tailLoad struct {
	cancel context.CancelCauseFunc
	done   chan struct{}
	sum    *load.Summary
	err    error
}

func startTail(ctx context.Context, o load.Options) *tailLoad {
	tctx, cancel := context.WithCancelCause(ctx)
	t := &tailLoad{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		t.sum, t.err = load.Run(tctx, o, nil)
	}()
	return t
}

// stop ends the tail, waits for its answers in flight and gives its
// summary, or why it could not run; it may be called again.
func (t *tailLoad) stop() (*load.Summary, error) {
	t.cancel(load.ErrStopped)
	<-t.done
	return t.sum, t.err
}

// podUIDs are the UIDs of the pods matching selector now (none if they
// cannot be read: then no pod is waited for).
func podUIDs(ctx context.Context, k *kube.Client, namespace, selector string) map[types.UID]bool {
	uids := map[types.UID]bool{}
	if pods, err := k.Typed.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector}); err == nil {
		for _, p := range pods.Items {
			uids[p.UID] = true
		}
	}
	return uids
}

// waitTerminated waits until none of the pods with uids (matching
// selector) is being deleted: a pod stuck terminating from before is not
// this scale-down's.
func waitTerminated(ctx context.Context, k *kube.Client, namespace, selector string, uids map[types.UID]bool) error {
	for {
		pods, err := k.Typed.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err == nil && !slices.ContainsFunc(pods.Items, func(p corev1.Pod) bool { return p.DeletionTimestamp != nil && uids[p.UID] }) {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return err
		case <-time.After(time.Second):
		}
	}
}

// EndpointRemoval is what a drain allows for a removed pod's endpoint to
// leave the Service's routing: kube-proxy reprograms the nodes within a
// few seconds (a load balancer's network endpoint group takes longer).
const EndpointRemoval = 5 * time.Second

// DrainAdvice says, when drain (workload.drain) is shorter than the
// endpoint's removal plus the longest request the load saw, that a
// scale-down would cut such requests and which drain would not.
func DrainAdvice(drain, longest time.Duration) (string, bool) {
	need := (EndpointRemoval + longest).Round(time.Second)
	if need < EndpointRemoval+longest {
		need += time.Second
	}
	if drain >= need {
		return "", false
	}
	return fmt.Sprintf("workload.drain %s is shorter than the endpoint's removal (%s) plus the longest answer (%s): a scale-down would cut such requests; set workload.drain (--drain of up and deploy) to %s or more",
		drain, EndpointRemoval, units.Seconds(longest), need), true
}

// ScaleDownVerdict judges the requests sent through a scale-down: more
// than allowed failures mean pods were stopped with requests in hand. The
// API server's own refusals (401, 403: the caller may not use the
// Service's proxy) are not the pods', and a tail that sent nothing proves
// nothing.
func ScaleDownVerdict(sum *load.Summary, allowed int, drain time.Duration) error {
	if refused := sum.Failed["HTTP 401"] + sum.Failed["HTTP 403"]; refused > 0 {
		return exitcode.With(exitcode.Denied, fmt.Errorf("the API server refused %d of the requests sent through the Service's proxy during the scale-down (HTTP 401/403): the caller needs create on services/proxy in the workload's namespace (roles/container.developer grants it)", refused))
	}
	if sum.Sent == 0 {
		return exitcode.With(exitcode.CheckFailed, errors.New("no request was sent during the scale-down, so it proves nothing: raise --tail-rate"))
	}
	failed, kinds := 0, make([]string, 0, len(sum.Failed))
	for _, kind := range slices.Sorted(maps.Keys(sum.Failed)) {
		failed += sum.Failed[kind]
		kinds = append(kinds, fmt.Sprintf("%s x%d", kind, sum.Failed[kind]))
	}
	if failed <= allowed {
		return nil
	}
	fix := fmt.Sprintf("workload.drain (%s) must cover the endpoint's removal from the Service and the longest request (%s here)", drain, sum.MaxSeconds)
	if drain == 0 {
		fix = fmt.Sprintf("set workload.drain (a preStop pause; --drain of up and deploy) above the endpoint's removal from the Service plus the longest request (%s here)", sum.MaxSeconds)
	}
	return exitcode.With(exitcode.CheckFailed, fmt.Errorf("%d of %d requests failed during the scale-down (%s), more than %d: pods were stopped with requests in hand (vLLM aborts them on SIGTERM); %s",
		failed, sum.Sent, strings.Join(kinds, ", "), allowed, fix))
}

// warmWait bounds the wait for new pods' first answers after the
// scale-up (Google measured pods Ready about 22 s before they served).
const warmWait = 2 * time.Minute

// readStages reads the new pods' stages once the scale-up is proven.
func (o LoadTest) readStages(ctx context.Context, cfg *config.Config, tl *timeline.Watcher, prober *stages.Prober) *stages.Report {
	t := tl.Timeline()
	// The first moment any metric was above its target.
	var above *timeline.Seconds
	for _, m := range cfg.ScaledMetrics() {
		for _, s := range metricSamples(t.Samples, m.HPAName, cfg.HPAMetricName()) {
			if s.Metric != nil && *s.Metric > m.Target && (above == nil || s.At < *above) {
				at := s.At
				above = &at
				break
			}
		}
	}
	report, err := prober.Read(ctx, above, t.FirstScaleUp)
	if err != nil {
		return nil
	}
	return report
}

// awaitFirstAnswers waits until every new Ready pod has answered a probe
// (at most warmWait; pods the HPA removed meanwhile are not waited for),
// then says the stages.
func (o LoadTest) awaitFirstAnswers(ctx context.Context, prober *stages.Prober, report *stages.Report, rec *output.Progress) {
	wctx, cancel := context.WithTimeout(ctx, warmWait)
	defer cancel()
	for prober.Pending(wctx, report) && wctx.Err() == nil {
		rec.Status("waiting for the new pods' first answers")
		select {
		case <-wctx.Done():
		case <-time.After(time.Second):
		}
	}
	rec.Status("")
	prober.Finish(report)
	if report.Biggest != nil && report.Biggest.Name == "image pulled" && o.ImageAdvice != nil {
		if advice := o.ImageAdvice(ctx); advice != "" {
			report.Advice = advice
		}
	}
	for _, line := range report.Lines() {
		rec.Action("load", line)
	}
}

// waitScaleUp waits until ExpectReplicas are Ready, WaitTimeout passes,
// or the samples show the load is too light to get there (see TooLight).
func (o LoadTest) waitScaleUp(ctx context.Context, tl *timeline.Watcher, metrics []config.ScaledMetric, start time.Time, rec *output.Progress) error {
	settle := o.Settle
	if settle == 0 {
		settle = DefaultSettle
	}
	timeout, cancelTimeout := context.WithTimeout(ctx, o.WaitTimeout)
	defer cancelTimeout()
	w, giveUp := context.WithCancelCause(timeout)
	defer giveUp(nil)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-w.Done():
				return
			case <-t.C:
				if why, light := TooLightAll(tl.Timeline().Samples, timeline.Seconds(time.Since(start)), metrics, o.ExpectReplicas, settle); light {
					giveUp(errors.New(why))
					return
				}
			}
		}
	}()
	err := tl.WaitFor(w, func(s timeline.Sample) bool { return s.Ready >= o.ExpectReplicas })
	switch {
	case err == nil:
		rec.Result(step.Result{Step: "load", Check: fmt.Sprintf("%d replicas ready", o.ExpectReplicas), OK: true, Message: "after " + timeline.Seconds(time.Since(start)).String()})
		return nil
	case ctx.Err() != nil:
		return ctx.Err() // interrupted
	case context.Cause(w) != nil && !errors.Is(context.Cause(w), context.DeadlineExceeded) && !errors.Is(context.Cause(w), context.Canceled):
		return exitcode.With(exitcode.Timeout, fmt.Errorf("%d replicas will not be Ready: %w", o.ExpectReplicas, context.Cause(w)))
	}
	return exitcode.With(exitcode.Timeout, fmt.Errorf("%d replicas not Ready within %s (now %d): %w", o.ExpectReplicas, o.WaitTimeout, tl.Current().Ready, err))
}

// DefaultSettle is how long the HPA's metric must have been read, and
// how long it must have stopped rising, before TooLight judges: on GKE the
// adapter sees a new value about a minute after the pods do.
const DefaultSettle = 2 * time.Minute

// TooLight says, from the samples so far (now after the load's start),
// whether the load cannot bring the HPA to want replicas, and why. The HPA
// wants ceil(total / target) replicas, total being the metric summed over
// the Ready pods; reaching want needs a total above target x (want-1). It
// judges only once the metric has been read for settle and its peak is
// settle/2 old: a metric still rising may yet get there.
func TooLight(samples []timeline.Sample, now timeline.Seconds, target float64, want int32, settle time.Duration) (string, bool) {
	var first, peakAt timeline.Seconds
	read, peak, peakPer := 0, 0.0, 0.0
	for _, s := range samples {
		if s.Desired >= want {
			return "", false // the HPA already asks for them
		}
		if s.Metric == nil {
			continue
		}
		if read == 0 {
			first = s.At
		}
		read++
		if total := *s.Metric * float64(max(s.Ready, 1)); total > peak {
			peak, peakPer, peakAt = total, *s.Metric, s.At
		}
	}
	needed := target * float64(want-1)
	if read < 3 || time.Duration(now-first) < settle || time.Duration(now-peakAt) < settle/2 || peak > needed {
		return "", false
	}
	return fmt.Sprintf("the metric peaked at %.2f per pod (%.2f in all), target %g: %d replicas need more than %g in all; raise --rate (or --concurrency)", peakPer, peak, target, want, needed), true
}

// loadAdvice says how the load moves each gauge, for TooLight's verdict.
var loadAdvice = map[string]string{
	"running":  "each request in flight adds about 1 to vllm:num_requests_running",
	"waiting":  "requests wait only beyond what a server runs at once (max-num-seqs, or a full KV cache)",
	"kv-cache": "each request in flight holds its prompt and answer in the KV cache (longer answers: --max-tokens)",
}

// TooLightAll is TooLight for every metric of a combined strategy: the
// HPA takes the largest count, so the load is too light only when it is
// for each metric.
func TooLightAll(samples []timeline.Sample, now timeline.Seconds, metrics []config.ScaledMetric, want int32, settle time.Duration) (string, bool) {
	var whys []string
	for _, m := range metrics {
		why, light := TooLight(metricSamples(samples, m.HPAName, metrics[0].HPAName), now, m.Target, want, settle)
		if !light {
			return "", false
		}
		why += ": " + loadAdvice[m.Key]
		if len(metrics) > 1 {
			why = m.Key + ": " + why
		}
		whys = append(whys, why)
	}
	return strings.Join(whys, "; "), len(whys) > 0
}

// metricSamples are the samples with Metric the value of the HPA's metric
// name (first is the name of its first metric, which Metric holds).
func metricSamples(samples []timeline.Sample, name, first string) []timeline.Sample {
	if name == first {
		return samples
	}
	out := make([]timeline.Sample, len(samples))
	for i, s := range samples {
		out[i] = s
		out[i].Metric = nil
		if v, ok := s.OtherMetrics[name]; ok {
			out[i].Metric = &v
		}
	}
	return out
}

// Describe says what a load sends, for progress lines.
func Describe(o load.Options) string {
	d := "until stopped"
	if o.Duration > 0 {
		d = "for " + o.Duration.String()
	}
	if o.Concurrency > 0 {
		return fmt.Sprintf("%d requests in flight %s", o.Concurrency, d)
	}
	return fmt.Sprintf("%g requests/s %s", o.Rate, d)
}

// ShowLive keeps rec's live line on a running load's counters, and, when
// tl is set, the HPA's metric and replicas; the returned func stops it.
func ShowLive(rec *output.Progress, live *load.Live, tl *timeline.Watcher) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			st := live.Snapshot()
			line := st.String()
			if secs := time.Since(start).Seconds(); secs >= 1 {
				line += fmt.Sprintf(", %.1f/s", float64(st.Sent)/secs)
			}
			if tl != nil {
				line += "; " + tl.Current().Describe()
			}
			rec.Status(line)
			select {
			case <-done:
				rec.Status("")
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}
