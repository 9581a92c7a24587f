package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vllm-hpa/vllm-hpa/internal/behavior"
	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/output"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/session"
	"github.com/vllm-hpa/vllm-hpa/internal/stages"
	"github.com/vllm-hpa/vllm-hpa/internal/tune"
	"github.com/vllm-hpa/vllm-hpa/internal/verify"
)

type tuneOptions struct {
	*globalOptions
	requestFlags
	cfg            *config.Config
	slo            tune.SLO
	maxConcurrency int
	step, warmup   time.Duration
	headroom       float64
	apply          bool
	// fromReport: derive the HPA's behaviour from a verify --report's
	// measured scale-up instead of ramping a load.
	fromReport string
	measured   *stages.Report
	flags      *pflag.FlagSet
}

// maxReportSize bounds a verify --report file read back (a long load's
// timeline is a few megabytes).
const maxReportSize = 64 << 20

// tuneJSON is tune's --output json document.
type tuneJSON struct {
	result
	*tune.Result
	// Snippet is the configuration that applies the recommendation.
	Snippet string `json:"snippet,omitempty"`
	// Applied: --apply updated the HPA.
	Applied bool `json:"applied"`
	// Behavior is --from-report's recommendation.
	Behavior *behavior.Recommendation `json:"behavior,omitempty"`
}

func newTuneCmd(g *globalOptions) *cobra.Command {
	o := &tuneOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "tune",
		Short: "Find the load one vLLM server carries within a latency objective, and the HPA target for it",
		Long: `Ramp the load on one vLLM server (doubling the requests in flight until the
objective breaks, then bisecting), each level held --warmup plus
--step-duration: measure time to first token and time per output token from
streamed answers (90th percentiles) and read the server's own gauges. The
knee is the most requests in flight that meet --slo-ttft, --slo-tpot and
--slo-latency (0: not checked). tune recommends the HPA target for hpa.metric
(--metric): its reading at the knee times --headroom, so that pods are added
before the objective breaks; it prints the levels, a chart, the reasoning and
the configuration to use, and --apply sets it on the HPA (the hpa step).
Without --endpoint it port-forwards to a Ready pod behind the Service, as
load does. Exits 3 when even one request at a time misses the objective.

--from-report FILE instead reads a scale-up that verify --load
--expect-replicas N --report FILE measured and derives the HPA's behaviour
from its cold start (the HPA's decision to the slowest new pod's first
answer): no scale-up stabilization and at least doubling per period, since
a scale-up is already that late; a scale-down stabilization window of at
least the cold start, so that a dip never throws away a pod that took that
long to serve. It prints the reasoning and the configuration; --apply sets
it on the HPA.`,
		Example: "  vllm-hpa tune --project my-proj --slo-tpot 100ms --max-concurrency 16 --step-duration 5s --warmup 1s",
		Args:    noArgs,
		RunE:    runCommand(o, nil),
	}
	o.requestFlags.add(c)
	f := c.Flags()
	f.DurationVar(&o.slo.TTFT, "slo-ttft", 2*time.Second, "objective: time to first token, 90th percentile (0: not checked)")
	f.DurationVar(&o.slo.TPOT, "slo-tpot", 100*time.Millisecond, "objective: time per output token after the first, 90th percentile (0: not checked)")
	f.DurationVar(&o.slo.Latency, "slo-latency", 0, "objective: whole answer, 90th percentile (0: not checked)")
	f.IntVar(&o.maxConcurrency, "max-concurrency", 64, "the most requests in flight tried")
	f.DurationVar(&o.step, "step-duration", 20*time.Second, "how long each level is measured")
	f.DurationVar(&o.warmup, "warmup", 5*time.Second, "how long each level runs before it is measured")
	f.Float64Var(&o.headroom, "headroom", 0.8, "the target as a fraction of the metric at the knee")
	f.BoolVar(&o.apply, "apply", false, "set the recommended target (or, with --from-report, behaviour) on the HPA (the hpa step)")
	f.StringVar(&o.fromReport, "from-report", "", "derive the HPA's behaviour from the scale-up measured in this verify --report file, instead of ramping a load")
	config.AddFlagsFor(f, []string{"instance", "workload.namespace", "workload.model", "service.name", "hpa.metric", "hpa.backend"})
	registerEnumCompletions(c, g)
	return c
}

// Complete loads the configuration.
func (o *tuneOptions) Complete(cmd *cobra.Command, _ []string) (err error) {
	o.flags = cmd.Flags()
	o.cfg, err = o.loadConfig(cmd)
	return err
}

// rampFlags are the flags of the load ramp, which --from-report does not
// run.
var rampFlags = []string{"slo-ttft", "slo-tpot", "slo-latency", "max-concurrency", "step-duration", "warmup", "headroom", "endpoint", "prompt", "max-tokens", "request-timeout"}

// Validate checks every flag before anything is sent.
func (o *tuneOptions) Validate() error {
	if o.fromReport != "" {
		return o.validateFromReport()
	}
	if err := validateConfig(o.cfg, o.endpoint == "" || o.apply); err != nil {
		return err
	}
	bad := func(flag, value, allowed string) error {
		return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid --%s %q: must be %s", flag, value, allowed))
	}
	switch {
	case o.slo.TTFT < 0 || o.slo.TPOT < 0 || o.slo.Latency < 0:
		return bad("slo-*", fmt.Sprint(o.slo), "0 (not checked) or a positive duration")
	case o.slo.TTFT == 0 && o.slo.TPOT == 0 && o.slo.Latency == 0:
		return exitcode.With(exitcode.BadInput, fmt.Errorf("no objective: give --slo-ttft, --slo-tpot or --slo-latency"))
	case o.maxConcurrency < 1 || o.maxConcurrency > maxConcurrency:
		return bad("max-concurrency", fmt.Sprint(o.maxConcurrency), fmt.Sprintf("between 1 and %d", maxConcurrency))
	case o.step < time.Second:
		return bad("step-duration", o.step.String(), "at least 1s, long enough for several answers")
	case o.warmup < 0:
		return bad("warmup", o.warmup.String(), "0 or a positive duration")
	case !(o.headroom > 0 && o.headroom <= 1):
		return bad("headroom", fmt.Sprint(o.headroom), "a fraction above 0 and at most 1, such as 0.8")
	}
	if err := o.requestFlags.validate(); err != nil {
		return err
	}
	if o.endpoint == "" || o.apply {
		return o.f.CheckConnection(o.cfg)
	}
	return nil
}

// validateFromReport checks --from-report's flags and reads its file:
// a file that does not hold a measured scale-up is bad input.
func (o *tuneOptions) validateFromReport() error {
	if err := validateConfig(o.cfg, o.apply); err != nil {
		return err
	}
	for _, f := range rampFlags {
		if o.flags.Changed(f) {
			return exitcode.With(exitcode.BadInput, fmt.Errorf("--%s with --from-report: the report's scale-up is read, no load is sent", f))
		}
	}
	path := o.f.Env.Path(o.fromReport)
	var doc struct {
		Stages *stages.Report `json:"stages"`
	}
	b, err := config.ReadSmallFile(path, maxReportSize)
	if err == nil {
		err = json.Unmarshal(b, &doc)
	}
	if err == nil {
		_, err = behavior.Recommend(doc.Stages, o.cfg.HPA)
	}
	if err != nil {
		return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid --from-report %q: %w", o.fromReport, err))
	}
	o.measured = doc.Stages
	if o.apply {
		return o.f.CheckConnection(o.cfg)
	}
	return nil
}

// runFromReport prints the behaviour the report's cold start asks for,
// and with --apply sets it on the HPA.
func (o *tuneOptions) runFromReport(ctx context.Context, rec *output.Progress) error {
	r, err := behavior.Recommend(o.measured, o.cfg.HPA)
	if err == nil && o.apply && len(r.Changes) > 0 {
		var sess *session.Session
		if sess, err = session.Open(ctx, o.f, o.cfg, session.Options{Purpose: session.Tune, Progress: rec}); err == nil {
			r.Apply(&o.cfg.HPA)
			err = sess.ApplyHPA(ctx)
		}
	}
	rec.Close()
	doc := tuneJSON{result: resultOf("tune", err), Behavior: r, Applied: err == nil && o.apply && r != nil && len(r.Changes) > 0}
	if r != nil && len(r.Changes) > 0 {
		doc.Snippet = "hpa:\n"
		for _, k := range slices.Sorted(maps.Keys(r.Changes)) {
			doc.Snippet += fmt.Sprintf("  %s: %s\n", strings.TrimPrefix(k, "hpa."), r.Changes[k])
		}
	}
	if done, perr := o.printDocOf(doc, err); done {
		return perr
	}
	if r == nil {
		return err
	}
	w := o.streams.Out
	for _, line := range r.Reasoning {
		fmt.Fprintln(w, line)
	}
	switch {
	case doc.Snippet == "":
		fmt.Fprintln(w, "\nthe HPA's behaviour already fits this cold start: nothing to change")
	case doc.Applied:
		fmt.Fprintf(w, "\napplied to the HPA:\n%s", doc.Snippet)
	default:
		fmt.Fprintf(w, "\nconfiguration (vllm-hpa.yaml; --apply sets it on the HPA):\n%s", doc.Snippet)
	}
	return err
}

// Run ramps the load, prints the levels and the recommendation, and with
// --apply sets the target on the HPA.
func (o *tuneOptions) Run(ctx context.Context) error {
	rec := output.NewProgress(o.streams)
	defer rec.Close()
	if o.measured != nil {
		return o.runFromReport(ctx, rec)
	}
	var sess *session.Session
	server := &verify.Server{Endpoint: o.endpoint, Config: o.cfg, OnMove: func(from, to string, why error) {
		rec.Action("tune", fmt.Sprintf("port-forward moved from pod %s to %s (%v): the level it cut across is measured again", from, to, why))
	}}
	if o.endpoint == "" || o.apply {
		var err error
		if sess, err = session.Open(ctx, o.f, o.cfg, session.Options{Purpose: session.Tune, Progress: rec}); err != nil {
			return o.printTune(rec, nil, err, false)
		}
		server.Kube = sess.Deps.Kube
	}
	defer server.Close()
	url, err := server.URL(ctx)
	if err != nil {
		return o.printTune(rec, nil, exitcode.With(exitcode.Precondition, err), false)
	}
	var gauges []string
	for _, m := range o.cfg.ScaledMetrics() {
		gauges = append(gauges, m.Gauge)
	}
	rec.StepStarted("tune")
	rec.Action("tune", fmt.Sprintf("ramping load on %s for %s: up to %d requests in flight, each level %s + %s warmup", url, strings.Join(gauges, " and "), o.maxConcurrency, o.step, o.warmup))
	res, err := tune.Run(ctx, tune.Options{
		URL: url, Model: o.cfg.Workload.Model, Prompt: o.prompt, MaxTokens: o.maxTokens, SLO: o.slo, Metric: gauges[0], Also: gauges[1:],
		StepDuration: o.step, Warmup: o.warmup, MaxConcurrency: o.maxConcurrency, Headroom: o.headroom, RequestTimeout: o.requestTimeout,
		Moves: server.Moves,
	}, func(l tune.Level) {
		verdict := "meets the objective"
		if !l.MeetsSLO {
			verdict = "misses: " + l.Why
		}
		rec.Action("tune", fmt.Sprintf("%d in flight: %.1f answers/s, ttft p90 %s, tpot p90 %s; %s", l.Concurrency, l.Rate, secs(l.TTFTP90), secs(l.TPOTP90), verdict))
	})
	if err == tune.ErrNoLevelMeetsSLO {
		err = exitcode.With(exitcode.CheckFailed, fmt.Errorf("%w (%s): loosen the objective, or check the server", err, res.Levels[0].Why))
	}
	rec.StepDone("tune", err)
	if err != nil {
		return o.printTune(rec, res, err, false)
	}
	applied := false
	if o.apply {
		err = sess.ApplyTargets(ctx, res.Recommendations)
		applied = err == nil
	}
	return o.printTune(rec, res, err, applied)
}

func secs(s interface{ Float() float64 }) string { return fmt.Sprintf("%.3gs", s.Float()) }

// snippet is the configuration that applies rs, one target per metric.
// A metric without a recommendation is left out (it keeps its target).
func (o *tuneOptions) snippet(rs []*tune.Recommendation) string {
	out := fmt.Sprintf("hpa:\n  metric: %s\n", o.cfg.HPA.Metric)
	set := 0
	for i, r := range rs {
		if r == nil || r.Target <= 0 {
			continue
		}
		key := strings.TrimPrefix(o.cfg.TargetKey(o.cfg.MetricKeys()[i]), "hpa.")
		out += fmt.Sprintf("  %s: %s\n", key, strconv.FormatFloat(r.Target, 'g', -1, 64))
		set++
	}
	if set == 0 {
		return ""
	}
	return out
}

func (o *tuneOptions) printTune(rec *output.Progress, res *tune.Result, runErr error, applied bool) error {
	rec.Close()
	doc := tuneJSON{result: resultOf("tune", runErr), Result: res, Applied: applied}
	if res != nil {
		doc.Snippet = o.snippet(res.Recommendations)
	}
	if done, err := o.printDocOf(doc, runErr); done {
		return err
	}
	if res == nil || len(res.Levels) == 0 {
		return runErr
	}
	w := o.streams.Out
	fmt.Fprintf(w, "%-9s %9s %9s %9s %9s %8s %8s %8s  %s\n", "in flight", "answers/s", "ttft p50", "ttft p90", "tpot p90", "running", "waiting", "kv cache", "objective")
	for _, l := range res.Levels {
		verdict := "met"
		if !l.MeetsSLO {
			verdict = "missed: " + l.Why
		}
		fmt.Fprintf(w, "%-9d %9.1f %9s %9s %9s %8.1f %8.1f %7.0f%%  %s\n", l.Concurrency, l.Rate, secs(l.TTFTP50), secs(l.TTFTP90), secs(l.TPOTP90), l.Running, l.Waiting, l.KVCache*100, verdict)
	}
	fmt.Fprintln(w)
	fmt.Fprint(w, tune.Chart(res, o.slo))
	if res.Knee != nil {
		fmt.Fprintf(w, "\nknee: %d requests in flight\n", res.Knee.Concurrency)
		for _, r := range res.Recommendations {
			fmt.Fprintln(w, r.Reasoning)
		}
		if s := o.snippet(res.Recommendations); s != "" {
			fmt.Fprintf(w, "\nconfiguration (vllm-hpa.yaml; --apply sets it on the HPA):\n%s", s)
		}
		if applied {
			var targets []string
			for _, r := range res.Recommendations {
				if r.Target > 0 {
					targets = append(targets, r.Metric+" "+render.Quantity(r.Target))
				}
			}
			fmt.Fprintf(w, "applied: the HPA's targets are now %s\n", strings.Join(targets, ", "))
		}
	}
	return runErr
}
