package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/load"
	"github.com/vllm-hpa/vllm-hpa/internal/output"
	"github.com/vllm-hpa/vllm-hpa/internal/reach"
	"github.com/vllm-hpa/vllm-hpa/internal/stack"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/timeline"
	"github.com/vllm-hpa/vllm-hpa/internal/verify"
)

// loadFlags are the load's shape, shared by `load` and `verify --load`.
type loadFlags struct {
	endpoint       string
	rate           float64
	concurrency    int
	duration       time.Duration
	prompt         string
	maxTokens      int
	requestTimeout time.Duration
	rateSet        bool // --rate was given
}

// complete records what only the command knows.
func (l *loadFlags) complete(cmd *cobra.Command) { l.rateSet = cmd.Flags().Changed("rate") }

func (l *loadFlags) add(c *cobra.Command, defaultDuration time.Duration) {
	f := c.Flags()
	f.StringVar(&l.endpoint, "endpoint", "", "base URL of the vLLM server (default: a port-forward to a Ready pod behind the Service)")
	f.Float64Var(&l.rate, "rate", 1, "requests started per second, whether or not earlier ones answered (open loop, like the walkthrough's loop)")
	f.IntVar(&l.concurrency, "concurrency", 0, "instead of --rate: keep this many requests in flight (closed loop)")
	f.DurationVar(&l.duration, "duration", defaultDuration, "how long to send (0: until stopped)")
	f.StringVar(&l.prompt, "prompt", load.DefaultPrompt, "the user message of each request")
	f.IntVar(&l.maxTokens, "max-tokens", 0, "max_tokens of each request (0: the server's default)")
	f.DurationVar(&l.requestTimeout, "request-timeout", 2*time.Minute, "how long one request may take")
}

// options checks the flags (call complete first) and shapes the load.
func (l *loadFlags) options(model, url string) (load.Options, error) {
	o := load.Options{URL: url, Model: model, Prompt: l.prompt, MaxTokens: l.maxTokens, Duration: l.duration, Timeout: l.requestTimeout}
	if l.concurrency > 0 {
		if l.rateSet {
			return o, exitcode.With(exitcode.BadInput, errors.New("give --rate or --concurrency, not both"))
		}
		o.Concurrency = l.concurrency
	} else {
		o.Rate = l.rate
	}
	if l.rate <= 0 || l.concurrency < 0 || l.duration < 0 || l.maxTokens < 0 || l.requestTimeout <= 0 {
		return o, exitcode.With(exitcode.BadInput, fmt.Errorf("invalid load: --rate must be > 0, --concurrency, --duration and --max-tokens >= 0, --request-timeout > 0"))
	}
	return o, nil
}

// serverURL returns the vLLM server's base URL: --endpoint, or a tunnel to
// a Ready pod behind the Service (closed by the returned func).
func (l *loadFlags) serverURL(ctx context.Context, o *runOptions, k *kube.Client, onMove func(from, to string, why error)) (string, func(), error) {
	if l.endpoint != "" {
		return l.endpoint, func() {}, nil
	}
	if k == nil {
		return "", nil, errors.New("no Kubernetes connection for a port-forward; give --endpoint")
	}
	t, err := reach.Open(ctx, k.Typed, k.Config, o.cfg.Workload.Namespace, o.cfg.Service.Name, o.cfg.Service.Port)
	if err != nil {
		return "", nil, fmt.Errorf("port-forward to service %s/%s: %w", o.cfg.Workload.Namespace, o.cfg.Service.Name, err)
	}
	t.OnMove = onMove
	return t.URL(), t.Close, nil
}

type verifyOptions struct {
	runOptions
	loadFlags
	withLoad       bool
	expectReplicas int32
	scaleDown      bool
	waitTimeout    time.Duration
	report         string
}

// verifyJSON is verify's --output json: the run, and with --load the load
// summary and the timeline.
type verifyJSON struct {
	runJSON
	Load     *load.Summary      `json:"load,omitempty"`
	Timeline *timeline.Timeline `json:"timeline,omitempty"`
}

func newVerifyCmd(g *globalOptions) *cobra.Command {
	o := &verifyOptions{runOptions: runOptions{globalOptions: g, command: "verify", steps: stack.Order}}
	c := &cobra.Command{
		Use:   "verify",
		Short: "Check everything that makes autoscaling work, one line per check; --load proves it scales",
		Long: `Check, in the walkthrough's order: the vLLM Deployment and Service; the
server's /metrics carrying vllm:num_requests_running and
vllm:num_requests_waiting (through a port-forward, or --endpoint); the
PodMonitoring; the adapter and its APIServices; the HPA's metric through
custom.metrics.k8s.io for every pod; the HPA's conditions and current value;
the identity bindings. Exits 0 only when every check passes (3 otherwise).

With --load it then sends the walkthrough's requests (--rate, default 1/s)
and records a timeline of the metric, desired and ready replicas and each
SuccessfulRescale, with the time from load start to the first scale-up and to
the new pods being Ready. --expect-replicas N fails (exit 4) if N replicas
are not Ready within --wait-timeout; --scale-down then stops the load and
waits for the HPA to scale back to its minimum.`,
		Example: "  vllm-hpa verify --project my-proj\n  vllm-hpa verify --project my-proj --load --rate 2 --expect-replicas 3 --report timeline.json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(cmd); err != nil {
				return err
			}
			return o.run(cmd)
		},
	}
	o.loadFlags.add(c, 0)
	c.Flags().BoolVar(&o.withLoad, "load", false, "after the checks pass, send load and record how the HPA scales")
	c.Flags().Int32Var(&o.expectReplicas, "expect-replicas", 0, "with --load: fail unless this many replicas are Ready within --wait-timeout")
	c.Flags().BoolVar(&o.scaleDown, "scale-down", false, "with --load: after scaling up, stop the load and wait for the scale-down to the HPA's minimum")
	c.Flags().DurationVar(&o.waitTimeout, "wait-timeout", 10*time.Minute, "with --load: how long to wait for --expect-replicas and --scale-down")
	c.Flags().StringVar(&o.report, "report", "", "with --load: write the timeline and load summary as JSON to this file")
	return c
}

func (o *verifyOptions) run(cmd *cobra.Command) error {
	ctx := cmd.Context()
	o.loadFlags.complete(cmd)
	if _, err := o.loadFlags.options(o.cfg.Workload.Model, "-"); err != nil {
		return err
	}
	if (o.expectReplicas != 0 || o.scaleDown || o.report != "") && !o.withLoad {
		return exitcode.With(exitcode.BadInput, errors.New("--expect-replicas, --scale-down and --report need --load"))
	}
	rec := output.NewRecorder(o.streams)
	defer rec.Close()
	start := time.Now()
	deps, closeDeps, err := o.dependenciesGCP(ctx, rec, o.steps, true)
	if err != nil {
		return err
	}
	defer closeDeps()
	s := stack.New(o.cfg, deps)

	var tunnelClose func()
	defer func() {
		if tunnelClose != nil {
			tunnelClose()
		}
	}()
	serverURL := func(ctx context.Context) (string, error) {
		u, closer, err := o.loadFlags.serverURL(ctx, &o.runOptions, deps.Kube, func(from, to string, why error) {
			rec.Action("metrics", fmt.Sprintf("port-forward moved from pod %s to %s (%v)", from, to, why))
		})
		if err == nil {
			tunnelClose = closer
		}
		return u, err
	}

	var failed []step.Result
	var runErr error
	var url string
	for _, sec := range verify.Sections(o.cfg, s, deps.Kube, func(ctx context.Context) (string, error) {
		var err error
		url, err = serverURL(ctx)
		return url, err
	}) {
		rec.StepStarted(sec.Name)
		results, err := sec.Check(ctx)
		var secFailed []step.Result
		for _, r := range results {
			rec.Result(r)
			if !r.OK {
				secFailed = append(secFailed, r)
			}
		}
		failed = append(failed, secFailed...)
		if err == nil && len(secFailed) > 0 {
			err = &step.Failed{Results: secFailed}
		}
		rec.StepDone(sec.Name, err)
		if err != nil && runErr == nil && len(secFailed) == 0 {
			runErr = fmt.Errorf("%s: %w", sec.Name, err) // an error, not a failed check
		}
	}
	if runErr == nil && len(failed) > 0 {
		runErr = &step.Failed{Results: failed}
	}
	doc := verifyJSON{}
	if runErr == nil && o.withLoad {
		doc.Load, doc.Timeline, runErr = o.loadAndWatch(ctx, rec, deps.Kube, url)
	}
	return o.printVerify(rec, start, runErr, doc)
}

// loadAndWatch sends load while recording the HPA's reaction.
func (o *verifyOptions) loadAndWatch(ctx context.Context, rec *output.Recorder, k *kube.Client, url string) (*load.Summary, *timeline.Timeline, error) {
	cfg := o.cfg
	lo, err := o.loadFlags.options(cfg.Workload.Model, url)
	if err != nil {
		return nil, nil, err
	}
	rec.StepStarted("load")
	start := time.Now()
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	tl := timeline.Start(wctx, k, cfg.Workload.Namespace, cfg.HPA.Name, cfg.Workload.Deployment, cfg.AdapterMetricName(), start, func(s timeline.Sample, rs *timeline.Rescale) {
		if rs != nil {
			rec.Action("load", fmt.Sprintf("%s SuccessfulRescale: %s", rs.At, rs.Message))
		}
	})
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	type result struct {
		sum *load.Summary
		err error
	}
	loadDone := make(chan result, 1)
	go func() {
		sum, err := load.Run(loadCtx, lo, nil)
		loadDone <- result{sum, err}
	}()
	rec.Action("load", fmt.Sprintf("sending to %s: %s", url, describeLoad(lo)))

	var waitErr error
	if o.expectReplicas > 0 {
		w, cancel := context.WithTimeout(ctx, o.waitTimeout)
		err := tl.WaitFor(w, func(s timeline.Sample) bool { return s.Ready >= o.expectReplicas })
		cancel()
		if err != nil {
			waitErr = fmt.Errorf("%d replicas not Ready within %s (now %d): %w", o.expectReplicas, o.waitTimeout, tl.Current().Ready, err)
			if ctx.Err() == nil {
				waitErr = exitcode.With(exitcode.Timeout, waitErr)
			}
		} else {
			rec.Result(step.Result{Step: "load", Check: fmt.Sprintf("%d replicas ready", o.expectReplicas), OK: true, Message: "after " + timeline.Seconds(time.Since(start)).String()})
		}
	}
	if o.expectReplicas > 0 || o.scaleDown {
		stopLoad() // the scale-up is proven (or failed): stop sending
	}
	res := <-loadDone
	if res.err != nil && waitErr == nil {
		waitErr = res.err
	}
	if res.sum != nil {
		for _, l := range res.sum.Lines() {
			rec.Action("load", l)
		}
	}
	if waitErr == nil && o.scaleDown {
		w, cancel := context.WithTimeout(ctx, o.waitTimeout)
		err := tl.WaitFor(w, func(s timeline.Sample) bool {
			return s.Ready <= cfg.HPA.MinReplicas && s.Replicas <= cfg.HPA.MinReplicas
		})
		cancel()
		if err != nil {
			waitErr = exitcode.With(exitcode.Timeout, fmt.Errorf("no scale-down to %d replicas within %s: %w", cfg.HPA.MinReplicas, o.waitTimeout, err))
		} else {
			rec.Result(step.Result{Step: "load", Check: fmt.Sprintf("scaled down to %d", cfg.HPA.MinReplicas), OK: true, Message: "after " + timeline.Seconds(time.Since(start)).String()})
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
	if o.report != "" {
		b, _ := json.MarshalIndent(map[string]any{"load": res.sum, "timeline": t}, "", "  ")
		if err := os.WriteFile(o.report, append(b, '\n'), 0o644); err != nil && waitErr == nil {
			waitErr = fmt.Errorf("write --report: %w", err)
		}
	}
	rec.StepDone("load", waitErr)
	return res.sum, &t, waitErr
}

func describeLoad(o load.Options) string {
	d := "until stopped"
	if o.Duration > 0 {
		d = "for " + o.Duration.String()
	}
	if o.Concurrency > 0 {
		return fmt.Sprintf("%d requests in flight %s", o.Concurrency, d)
	}
	return fmt.Sprintf("%g requests/s %s", o.Rate, d)
}

func (o *verifyOptions) printVerify(rec *output.Recorder, start time.Time, runErr error, doc verifyJSON) error {
	if o.output == outputText {
		return o.printRun(rec, start, runErr)
	}
	doc.runJSON = runJSON{Command: "verify", OK: runErr == nil, ExitCode: exitcode.Of(runErr),
		Seconds: time.Since(start).Round(time.Millisecond).Seconds(), Steps: rec.Steps()}
	if runErr != nil {
		doc.Error = runErr.Error()
	}
	if _, err := o.printDoc(doc); err != nil {
		return err
	}
	return runErr
}
