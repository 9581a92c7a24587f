package cmd

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/output"
	"github.com/vllm-hpa/vllm-hpa/internal/preflight"
	"github.com/vllm-hpa/vllm-hpa/internal/session"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
)

// preflightOptions: every check up needs, with no write.
type preflightOptions struct {
	stackOptions
}

func newPreflightCmd(g *globalOptions, runF func(*preflightOptions) error) *cobra.Command {
	o := &preflightOptions{stackOptions{globalOptions: g, command: "preflight", steps: slices.Clone(steps.Names()), checksOnly: true}}
	c := &cobra.Command{
		Use:   "preflight",
		Short: "Prove, changing nothing, that up would have everything it needs",
		Long: `Check, with no write anywhere, everything ` + "`up`" + ` needs, one line per check:
the Hugging Face token; every Kubernetes permission the steps use (a
SelfSubjectAccessReview for each verb on each resource, and the reads
verify makes); every object through a server-side dry run (admission,
validation, RBAC escalation: nothing is stored); the caller's IAM
permissions on the project and the service account (testIamPermissions);
the Google APIs; the cluster's settings for the backend (Workload Identity,
Managed Prometheus, GPU nodes, or the native metrics' version and profile).

Exits 0 when up would have all it needs, 6 when a permission is missing
(each named, with the role that grants it), 5 when anything else is not
ready. --skip leaves steps out, as up's does.`,
		Example: "  vllm-hpa preflight --project my-proj\n  vllm-hpa preflight --project my-proj --skip identity -o json",
		Args:    noArgs,
		RunE:    runCommand(o, runF),
	}
	o.addSkipFlag(c)
	c.Flags().DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long the whole check may take (exit 4 past it)")
	// up's settings, --adopt and --force-conflicts included: preflight
	// judges what up would do with them.
	config.AddFlagsFor(c.Flags(), steps.Settings())
	registerEnumCompletions(c, g)
	return c
}

// Validate checks the inputs; a missing token is a check's failure, a
// malformed one bad input.
func (o *preflightOptions) Validate() error {
	if err := validateConfig(o.cfg, true); err != nil {
		return err
	}
	if err := o.applySkip(); err != nil {
		return err
	}
	if o.timeout <= 0 {
		return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid --timeout %s: must be positive", o.timeout))
	}
	if steps.Requires(o.cfg, o.steps).Token {
		if err := o.cfg.TokenProblem(); err != nil {
			return exitcode.With(exitcode.BadInput, err)
		}
	}
	return o.f.CheckConnection(o.cfg)
}

// Run connects as up would, settles the backend, and runs the checks.
func (o *preflightOptions) Run(ctx context.Context) error {
	ctx, cancel := o.withOverallTimeout(ctx)
	defer cancel()
	rec := output.NewProgress(o.streams)
	defer rec.Close()
	if o.output == outputText && !o.streams.OutTTY {
		rec.ResultsTo(o.streams.Out)
	}
	start := time.Now()
	s, err := session.Open(ctx, o.f, o.cfg, session.Options{Purpose: session.Apply, Steps: o.steps, Whole: true, Progress: rec, ChecksOnly: true})
	if err == nil {
		rec.StepStarted(preflight.Step)
		_, err = preflight.Run(ctx, o.cfg, s.Deps, o.steps)
		rec.StepDone(preflight.Step, err)
	}
	return o.printRun(rec, start, o.timedOut(ctx, err))
}
