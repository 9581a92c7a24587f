package cmd

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/iostreams"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/load"
	"github.com/vllm-hpa/vllm-hpa/internal/output"
	"github.com/vllm-hpa/vllm-hpa/internal/reach"
	"github.com/vllm-hpa/vllm-hpa/internal/session"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
	"github.com/vllm-hpa/vllm-hpa/internal/verify"
)

// requestFlags are how each request is sent, and to which server: shared
// by load, verify --load and tune.
type requestFlags struct {
	endpoint       string
	prompt         string
	maxTokens      int
	requestTimeout time.Duration
}

func (r *requestFlags) add(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&r.endpoint, "endpoint", "", "base URL of the vLLM server, e.g. http://127.0.0.1:8081 (default: a port-forward to a Ready pod behind the Service)")
	f.StringVar(&r.prompt, "prompt", load.DefaultPrompt, "the user message of each request")
	f.IntVar(&r.maxTokens, "max-tokens", 0, "max_tokens of each request (0: the server's default)")
	f.DurationVar(&r.requestTimeout, "request-timeout", 2*time.Minute, "how long one request may take")
}

// validate checks the request flags before anything is sent.
func (r *requestFlags) validate() error {
	bad := func(flag, value, allowed string) error {
		return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid --%s %q: must be %s", flag, value, allowed))
	}
	switch {
	case r.maxTokens < 0 || r.maxTokens > maxMaxTokens:
		return bad("max-tokens", fmt.Sprint(r.maxTokens), fmt.Sprintf("between 0 (the server's default) and %d", maxMaxTokens))
	case r.requestTimeout <= 0:
		return bad("request-timeout", r.requestTimeout.String(), "a positive duration such as 2m")
	case strings.TrimSpace(r.prompt) == "":
		return bad("prompt", r.prompt, "a non-empty message")
	}
	if err := validEndpoint(r.endpoint); err != nil {
		return err
	}
	// OpenAI clients take the base URL with /v1; the server's /metrics
	// and /v1/chat/completions hang off the root.
	r.endpoint = strings.TrimSuffix(strings.TrimSuffix(r.endpoint, "/"), "/v1")
	return nil
}

// loadFlags are the load's shape, shared by `load` and `verify --load`.
type loadFlags struct {
	requestFlags
	rate        float64
	concurrency int
	duration    time.Duration
	rateSet     bool // --rate was given
}

// Bounds of a load: beyond them the generator would spend its memory on
// its own bookkeeping rather than on requests.
const (
	maxRate        = 100000
	maxConcurrency = 10000
	maxMaxTokens   = 1 << 20
)

func (l *loadFlags) add(c *cobra.Command, defaultDuration time.Duration) {
	l.requestFlags.add(c)
	f := c.Flags()
	f.Float64Var(&l.rate, "rate", 1, "requests started per second, whether or not earlier ones answered (open loop, like the walkthrough's loop)")
	f.IntVar(&l.concurrency, "concurrency", 0, "instead of --rate: keep this many requests in flight (closed loop)")
	f.DurationVar(&l.duration, "duration", defaultDuration, "how long to send (0: until stopped)")
}

// validate checks every load flag before anything is sent; cmd says which
// were given.
func (l *loadFlags) validate(flags *pflag.FlagSet) error {
	l.rateSet = flags.Changed("rate")
	bad := func(flag, value, allowed string) error {
		return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid --%s %q: must be %s", flag, value, allowed))
	}
	switch {
	case l.concurrency > 0 && l.rateSet:
		return exitcode.With(exitcode.BadInput, errors.New("invalid --rate with --concurrency: give one of them, not both"))
	case math.IsNaN(l.rate) || math.IsInf(l.rate, 0) || l.rate < load.MinRate || l.rate > maxRate:
		return bad("rate", fmt.Sprint(l.rate), fmt.Sprintf("a number of requests per second from %g to %d", load.MinRate, maxRate))
	case l.concurrency < 0 || l.concurrency > maxConcurrency:
		return bad("concurrency", fmt.Sprint(l.concurrency), fmt.Sprintf("between 0 (use --rate) and %d", maxConcurrency))
	case l.duration < 0:
		return bad("duration", l.duration.String(), "0 (until stopped) or a positive duration such as 5m")
	}
	return l.requestFlags.validate()
}

// validEndpoint checks --endpoint ("" is the port-forward).
func validEndpoint(endpoint string) error {
	if endpoint == "" {
		return nil
	}
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid --endpoint %q: must be an http:// or https:// URL of the server, such as http://127.0.0.1:8081", endpoint))
	}
	return nil
}

// options shapes the load for url (validate first).
func (l *loadFlags) options(model, url string) load.Options {
	o := load.Options{URL: url, Model: model, Prompt: l.prompt, MaxTokens: l.maxTokens, Duration: l.duration, Timeout: l.requestTimeout}
	if l.concurrency > 0 {
		o.Concurrency = l.concurrency
	} else {
		o.Rate = l.rate
	}
	return o
}

type verifyOptions struct {
	stackOptions
	loadFlags
	withLoad       bool
	expectReplicas int32
	scaleDown      bool
	waitTimeout    time.Duration
	report         string
	wait           bool
	// tailRate is the load kept on through the scale-down (0: none);
	// maxScaleDownFailures how many of its requests may fail.
	tailRate             float64
	maxScaleDownFailures int
}

// verifyJSON is verify's --output json: the run, and with --load the load
// summary and the timeline.
type verifyJSON struct {
	runJSON
	*verify.LoadResult
}

func newVerifyCmd(g *globalOptions, runF func(*verifyOptions) error) *cobra.Command {
	o := &verifyOptions{stackOptions: stackOptions{globalOptions: g, command: "verify", steps: steps.Names()}}
	c := &cobra.Command{
		Use:   "verify",
		Short: "Check everything that makes autoscaling work, one line per check; --load proves it scales",
		Long: `Check, in the walkthrough's order: the vLLM Deployment, its token Secret and
Service; the server's /metrics carrying vllm:num_requests_running and
vllm:num_requests_waiting (through a port-forward, or --endpoint); the
PodMonitoring; the adapter and its APIServices; the HPA's metric through
custom.metrics.k8s.io for every pod; the HPA's conditions and current value;
the identity bindings. Exits 0 only when every check passes (3 otherwise).

With --load it then sends the walkthrough's requests (--rate, default 1/s)
and records a timeline of the metric, desired and ready replicas and each
SuccessfulRescale, with the time from load start to the first scale-up and to
the new pods being Ready. --expect-replicas N fails (exit 4) if N replicas
are not Ready within --wait-timeout; --scale-down then lowers the load to
--tail-rate (a quarter of --rate by default) through the Service, spread
over its pods, waits for the HPA to scale back to its minimum and for the
removed pods to stop, and fails (exit 3) when more than
--max-scale-down-failures of those requests failed: pods stopped with
requests in hand (workload.drain too short).

With --wait it polls the checks every 10 s until all hold (exit 0) or
--timeout passes (exit 4, with the last state): a gate for a CI pipeline
that has just run up, or a deploy that is still rolling out.`,
		Example: "  vllm-hpa verify --project my-proj\n  vllm-hpa verify --project my-proj --wait --timeout 2m\n  vllm-hpa verify --project my-proj --load --rate 10 --expect-replicas 3 --report timeline.json",
		Args:    noArgs,
		RunE:    runCommand(o, runF),
	}
	o.loadFlags.add(c, 0)
	c.Flags().BoolVar(&o.withLoad, "load", false, "after the checks pass, send load and record how the HPA scales")
	c.Flags().Int32Var(&o.expectReplicas, "expect-replicas", 0, "with --load: fail unless this many replicas are Ready within --wait-timeout")
	c.Flags().BoolVar(&o.scaleDown, "scale-down", false, "with --load: after scaling up, stop the load and wait for the scale-down to the HPA's minimum")
	c.Flags().Float64Var(&o.tailRate, "tail-rate", 0, "with --scale-down: requests per second kept on through the scale-down, through the Service so every pod has its share, until the removed pods stop (default a quarter of --rate; 0: none)")
	c.Flags().IntVar(&o.maxScaleDownFailures, "max-scale-down-failures", 0, "with --scale-down: fail (exit 3) when more of the tail's requests fail: pods stopped with requests in hand")
	c.Flags().DurationVar(&o.waitTimeout, "wait-timeout", 10*time.Minute, "with --load: how long to wait for --expect-replicas and --scale-down")
	c.Flags().StringVar(&o.report, "report", "", "with --load: write the timeline and load summary as JSON to this file")
	c.Flags().BoolVar(&o.wait, "wait", false, "poll the checks every 10 s until all hold or --timeout passes (then exit 4 with the last state): a CI gate")
	c.Flags().DurationVar(&o.timeout, "timeout", 10*time.Minute, "with --wait: how long to poll")
	o.addSkipFlag(c)
	config.AddFlagsFor(c.Flags(), steps.ReadSettings())
	registerEnumCompletions(c, g)
	return c
}

// Validate checks every flag before anything is read or sent.
func (o *verifyOptions) Validate() error {
	if err := validateConfig(o.cfg, true); err != nil {
		return err
	}
	if err := o.loadFlags.validate(o.flags); err != nil {
		return err
	}
	if err := o.applySkip(); err != nil {
		return err
	}
	if steps.Requires(o.cfg, o.steps).Token {
		// verify compares the Secret with the token given: a token that
		// cannot be one is bad input, not a failed check.
		if err := o.cfg.TokenProblem(); err != nil {
			return exitcode.With(exitcode.BadInput, err)
		}
	}
	bad := func(flag, value, allowed string) error {
		return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid --%s %q: must be %s", flag, value, allowed))
	}
	given := func(flag string) bool { return o.flags.Changed(flag) }
	switch {
	case !o.withLoad && (given("expect-replicas") || given("scale-down") || given("report") || given("rate") || given("concurrency") || given("duration")):
		return exitcode.With(exitcode.BadInput, errors.New("--expect-replicas, --scale-down, --report, --rate, --concurrency and --duration need --load"))
	case !o.scaleDown && (given("tail-rate") || given("max-scale-down-failures")):
		return exitcode.With(exitcode.BadInput, errors.New("--tail-rate and --max-scale-down-failures need --scale-down"))
	case math.IsNaN(o.tailRate) || math.IsInf(o.tailRate, 0) || o.tailRate < 0 || (o.tailRate > 0 && o.tailRate < load.MinRate) || o.tailRate > maxRate:
		return bad("tail-rate", fmt.Sprint(o.tailRate), fmt.Sprintf("a number of requests per second, 0 (none) or from %g to %d", load.MinRate, maxRate))
	case o.maxScaleDownFailures < 0:
		return bad("max-scale-down-failures", fmt.Sprint(o.maxScaleDownFailures), "0 or more")
	case given("expect-replicas") && (o.expectReplicas < 1 || o.expectReplicas > o.cfg.HPA.MaxReplicas):
		return bad("expect-replicas", fmt.Sprint(o.expectReplicas), fmt.Sprintf("between 1 and hpa.max-replicas (%d): the HPA never scales beyond it", o.cfg.HPA.MaxReplicas))
	case given("timeout") && !o.wait:
		return exitcode.With(exitcode.BadInput, errors.New("--timeout needs --wait (--wait-timeout bounds --load's waits)"))
	case o.wait && o.timeout <= 0:
		return bad("timeout", o.timeout.String(), "a positive duration such as 10m")
	case o.waitTimeout <= 0:
		return bad("wait-timeout", o.waitTimeout.String(), "a positive duration such as 10m")
	}
	if o.report != "" {
		o.report = o.f.Env.Path(o.report)
		if err := checkWritable(o.report); err != nil {
			return bad("report", o.report, err.Error())
		}
	}
	return o.f.CheckConnection(o.cfg)
}

// checkWritable says why path cannot be written, without writing it: its
// directory must exist and be writable, and path must not be a directory.
func checkWritable(path string) error {
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return errors.New("a file path, but it is not a regular file")
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case err != nil:
		return fmt.Errorf("a file in an existing directory, but %s does not exist", dir)
	case !fi.IsDir():
		return fmt.Errorf("a file in a directory, but %s is not a directory", dir)
	case unix.Access(dir, unix.W_OK) != nil:
		return fmt.Errorf("a file in a writable directory, but %s is not writable", dir)
	}
	return nil
}

// Run checks every section, then with --load sends load and watches.
func (o *verifyOptions) Run(ctx context.Context) error {
	rec := output.NewProgress(o.streams)
	defer rec.Close()
	if o.output == outputText && !o.streams.OutTTY {
		rec.ResultsTo(o.streams.Out)
	}
	start := time.Now()
	// The Google APIs also explain a metric the adapter does not serve.
	sess, err := session.Open(ctx, o.f, o.cfg, session.Options{Purpose: session.Read, Steps: o.steps, Progress: rec})
	if err != nil {
		return o.printVerify(rec, start, err, verifyJSON{})
	}
	s, deps := sess.Stack, sess.Deps

	server := &verify.Server{Endpoint: o.endpoint, Config: o.cfg, Kube: deps.Kube, OnMove: func(from, to string, why error) {
		rec.Action("metrics", fmt.Sprintf("port-forward moved from pod %s to %s (%v)", from, to, why))
	}}
	defer server.Close()
	sections := verify.Sections(o.cfg, s, server, o.steps)
	timedOut := false
	if o.wait {
		// The polls, and the last pass for the record, end by --timeout
		// (and a pass's own bounds): a check that stalls cannot hold
		// the gate open.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout+pollInterval)
		defer cancel()
		timedOut = o.waitForChecks(ctx, sections, rec)
	}
	runErr := verify.Checks(ctx, sections, rec)
	if timedOut && exitcode.Of(runErr) == exitcode.CheckFailed {
		runErr = exitcode.With(exitcode.Timeout, fmt.Errorf("not every check held within --timeout %s: %w", o.timeout, runErr))
	}
	if runErr != nil && ctx.Err() == nil {
		runErr = verify.OtherBackendHint(ctx, deps.Kube, o.cfg, runErr)
	}
	doc := verifyJSON{}
	if runErr == nil && o.withLoad {
		url, err := server.URL(ctx)
		if err != nil {
			return o.printVerify(rec, start, err, doc)
		}
		lt := verify.LoadTest{Load: o.loadFlags.options(o.cfg.Workload.Model, url), ExpectReplicas: o.expectReplicas, ScaleDown: o.scaleDown,
			WaitTimeout: o.waitTimeout, Report: o.report, Scrub: o.streams.Secrets.String, MaxScaleDownFailures: o.maxScaleDownFailures,
			ImageAdvice: sess.ImageAdvice}
		if lt.Tail, err = o.tail(deps.Kube); err != nil {
			return o.printVerify(rec, start, err, doc)
		}
		doc.LoadResult, runErr = lt.Run(ctx, o.cfg, deps.Kube, rec)
	}
	if runErr == nil && ctx.Err() != nil {
		runErr = ctx.Err() // interrupted: never a pass
	}
	return o.printVerify(rec, start, runErr, doc)
}

// tail is the load kept on through the scale-down: --tail-rate (by
// default a quarter of --rate) through --endpoint when given, else
// through the API server's service proxy, which spreads it over the
// Service's Ready pods. Nil when there is none.
func (o *verifyOptions) tail(k *kube.Client) (*load.Options, error) {
	rate := o.tailRate
	if !o.flags.Changed("tail-rate") {
		rate = o.rate / 4
	}
	if !o.scaleDown || rate == 0 {
		return nil, nil
	}
	tail := o.loadFlags.options(o.cfg.Workload.Model, o.endpoint)
	tail.Concurrency, tail.Rate, tail.Duration = 0, rate, 0
	if o.endpoint == "" {
		url, rt, err := reach.ServiceProxy(k.Config, o.cfg.Workload.Namespace, o.cfg.Service.Name, o.cfg.Service.Port)
		if err != nil {
			return nil, err
		}
		tail.URL, tail.Transport = url, rt
	}
	return &tail, nil
}

// pollInterval is how often verify --wait checks again.
const pollInterval = 10 * time.Second

// waitForChecks runs the checks quietly every pollInterval until they
// all hold, a check errs otherwise than by failing, or --timeout passes
// (true), saying on rec what does not hold yet; the caller then runs them
// once more for the record.
func (o *verifyOptions) waitForChecks(ctx context.Context, sections []verify.Section, rec *output.Progress) bool {
	deadline := time.Now().Add(o.timeout)
	for {
		quiet, _, _ := iostreams.Test()
		p := output.NewProgress(quiet)
		err := verify.Checks(ctx, sections, p)
		p.Close()
		if exitcode.Of(err) != exitcode.CheckFailed || ctx.Err() != nil {
			return false
		}
		if time.Now().Add(pollInterval).After(deadline) {
			return true
		}
		rec.Waiting("verify", "not every check holds yet ("+firstLineOf(err.Error())+"); checking again in 10 s, until "+deadline.Format("15:04:05"))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(pollInterval):
		}
	}
}

func firstLineOf(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func (o *verifyOptions) printVerify(rec *output.Progress, start time.Time, runErr error, doc verifyJSON) error {
	runErr = session.IdentityHint(o.cfg, o.steps, runErr)
	if o.output == outputText {
		return o.printRun(rec, start, runErr)
	}
	doc.runJSON = o.runDoc(rec, start, runErr)
	if _, err := o.printDoc(doc); err != nil {
		return err
	}
	return runErr
}
