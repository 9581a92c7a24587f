package cmd

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vllm-hpa/vllm-hpa/internal/cmdutil"
	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/load"
	"github.com/vllm-hpa/vllm-hpa/internal/output"
	"github.com/vllm-hpa/vllm-hpa/internal/verify"
)

type loadOptions struct {
	*globalOptions
	loadFlags
	cfg   *config.Config
	flags *pflag.FlagSet
}

func newLoadCmd(g *globalOptions) *cobra.Command {
	o := &loadOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "load",
		Short: "Send the walkthrough's requests: an open-loop rate or a fixed concurrency, with a summary",
		Long: `Send chat completions to the vLLM server, as the walkthrough's request loop
does but measured: --rate requests start each second whether or not earlier
ones answered (open loop; default 1/s like the loop), or --concurrency keeps
that many in flight. Runs for --duration, or until Ctrl+C; then stops
starting requests, waits for those in flight, and prints a summary: sent,
succeeded, failed by status, latency p50/p90/p99 and the achieved rate.
While it runs, a live line (a heartbeat every 30 s when stderr is not a
terminal) shows the counts. Exits 3 when no request was answered; Ctrl+C
ends a load without --duration as it should end (exit 0 when answers came
back) and cuts one with --duration short (exit 130); either way the summary
is printed, and requests the interruption cut are counted apart, not as
failures. A base URL ending in /v1 (as OpenAI clients take it) is accepted.
Without --endpoint it port-forwards to a Ready pod behind the Service (and
needs --project for the configuration).`,
		Example: "  vllm-hpa load --project my-proj --rate 2 --duration 10s\n  vllm-hpa load --project my-proj --concurrency 10 --duration 10s",
		Args:    noArgs,
		RunE:    runCommand(o, nil),
	}
	o.loadFlags.add(c, 0)
	config.AddFlagsFor(c.Flags(), []string{"workload.namespace", "workload.model", "service.name"})
	registerEnumCompletions(c, g)
	return c
}

// Complete loads the configuration.
func (o *loadOptions) Complete(cmd *cobra.Command, _ []string) (err error) {
	o.flags = cmd.Flags()
	o.cfg, err = o.loadConfig(cmd)
	return err
}

// Validate checks the flags, and the configuration and kubeconfig when the
// load goes through a port-forward.
func (o *loadOptions) Validate() error {
	if err := validateConfig(o.cfg, o.endpoint == ""); err != nil {
		return err
	}
	if err := o.loadFlags.validate(o.flags); err != nil {
		return err
	}
	if o.endpoint == "" {
		return o.f.CheckConnection(o.cfg)
	}
	return nil
}

// loadJSON is load's --output json document.
type loadJSON struct {
	result
	*load.Summary
}

// Run sends the load, with a live line (terminal) or a heartbeat
// (elsewhere), and prints the summary. Exit 3 when no request was
// answered, 130 when interrupted (the summary still printed).
func (o *loadOptions) Run(ctx context.Context) error {
	rec := output.NewProgress(o.streams)
	defer rec.Close()
	server := &verify.Server{Endpoint: o.endpoint, Config: o.cfg, OnMove: func(from, to string, why error) {
		rec.Action("load", fmt.Sprintf("port-forward moved from pod %s to %s (%v)", from, to, why))
	}}
	if o.endpoint == "" {
		deps, err := o.f.Connect(ctx, o.cfg, cmdutil.Need{}, nil)
		if err != nil {
			return err
		}
		server.Kube = deps.Kube
	}
	defer server.Close()
	url, err := server.URL(ctx)
	if err != nil {
		return exitcode.With(exitcode.Precondition, err)
	}
	lo := o.options(o.cfg.Workload.Model, url)
	rec.Action("load", fmt.Sprintf("sending to %s: %s (Ctrl+C stops and prints the summary)", url, verify.Describe(lo)))
	live := &load.Live{}
	stopStatus := verify.ShowLive(rec, live, nil)
	sum, err := load.Run(ctx, lo, live)
	stopStatus()
	if err != nil {
		return err
	}
	runErr := loadVerdict(sum, lo)
	rec.Close()
	if done, err := o.printDocOf(loadJSON{resultOf("load", runErr), sum}, runErr); done {
		return err
	}
	for _, line := range sum.Lines() {
		fmt.Fprintln(o.streams.Out, line)
	}
	return runErr
}

// loadVerdict is a finished load's error: nil when the server answered;
// exit 3 when nothing was answered, naming the model when the server said
// it does not serve it; 130 when Ctrl+C cut a load given a --duration
// (without one, Ctrl+C is how the load ends, and the answers judge it).
func loadVerdict(sum *load.Summary, o load.Options) error {
	if sum.EndedBy == "interrupted" && o.Duration > 0 {
		return exitcode.With(exitcode.Interrupted, fmt.Errorf("interrupted after %.0fs of --duration %s: the summary covers what was sent", sum.ElapsedSeconds.Float(), o.Duration))
	}
	err := sum.Verdict()
	if err != nil && sum.Failed["HTTP 404"] > 0 {
		err = fmt.Errorf("%w (the requests named model %q: --model or workload.model must be the model the server serves)", err, o.Model)
	}
	return exitcode.With(exitcode.CheckFailed, err)
}
