package cmd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/output"
	"github.com/vllm-hpa/vllm-hpa/internal/session"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/deploy"
	"github.com/vllm-hpa/vllm-hpa/internal/units"
)

// stackOptions are the options of a command that applies, or deletes, steps.
type stackOptions struct {
	*globalOptions
	command      string
	steps        []string
	dryRun       bool
	dryRunServer bool // --dry-run=server: preflight's checks, no plan
	timeout      time.Duration
	skip         []string // up, verify and cleanup: steps left out
	keepWorkload bool     // cleanup
	wait         bool     // cleanup (--wait=false: deletions not waited for)
	checksOnly   bool     // preflight: the steps are checked, not run
	cfg          *config.Config
	flags        *pflag.FlagSet // the command's, for what was given
}

func (o *stackOptions) addFlags(c *cobra.Command, what string) {
	fl := c.Flags().VarPF(&dryRunFlag{o}, "dry-run", "", "print what "+what+" and change nothing; --dry-run=server instead asks the cluster and the project (preflight's checks: permissions, server-side dry runs, settings)")
	fl.NoOptDefVal = "client"
	c.Flags().DurationVar(&o.timeout, "timeout", 0, "how long the whole command may take; each step's wait is bounded by it too (default: no overall limit, each step its timeouts.* setting)")
}

func (o *stackOptions) addSkipFlag(c *cobra.Command) {
	c.Flags().StringSliceVar(&o.skip, "skip", nil, "steps to leave out, e.g. --skip identity to use only Kubernetes (no Google credentials needed)")
	_ = c.RegisterFlagCompletionFunc("skip", fixedCompletion(steps.Names()...))
}

// dryRunFlag is --dry-run: bare (or =client) a plan made offline, =server
// preflight's checks against the cluster and the project, =none off.
type dryRunFlag struct{ o *stackOptions }

func (f *dryRunFlag) String() string {
	switch {
	case f.o == nil || !f.o.dryRun:
		return "none"
	case f.o.dryRunServer:
		return "server"
	}
	return "client"
}

func (f *dryRunFlag) Set(v string) error {
	switch v {
	case "client", "true":
		f.o.dryRun, f.o.dryRunServer = true, false
	case "server":
		f.o.dryRun, f.o.dryRunServer = true, true
	case "none", "false":
		f.o.dryRun, f.o.dryRunServer = false, false
	default:
		return fmt.Errorf("must be client (the default when given bare), server or none")
	}
	return nil
}

func (f *dryRunFlag) Type() string { return "string" }

// applySkip checks --skip and leaves its steps out.
func (o *stackOptions) applySkip() error {
	for _, s := range o.skip {
		if !slices.Contains(steps.Names(), s) {
			return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid --skip %q: must be one of %s", s, strings.Join(steps.Names(), ", ")))
		}
	}
	o.steps = slices.DeleteFunc(o.steps, func(s string) bool { return slices.Contains(o.skip, s) })
	return nil
}

// Complete loads the configuration.
func (o *stackOptions) Complete(cmd *cobra.Command, _ []string) (err error) {
	o.flags = cmd.Flags()
	o.cfg, err = o.loadConfig(cmd)
	return err
}

// Validate checks every input before any client exists: the
// configuration, the flags, the steps, the token deploy needs, and that
// the kubeconfig names a usable context.
func (o *stackOptions) Validate() error {
	if err := validateConfig(o.cfg, true); err != nil {
		return err
	}
	if o.timeout < 0 {
		return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid --timeout %s: must be positive", o.timeout))
	}
	if o.timeout > 0 {
		for _, d := range steps.Ordered {
			o.cfg.SetDuration(d.Timeout(), o.timeout)
		}
		o.cfg.SetDuration("timeouts.cleanup", o.timeout)
	}
	if err := o.applySkip(); err != nil {
		return err
	}
	if o.applies() && steps.Requires(o.cfg, o.steps).Token {
		// Only the commands that write the token Secret judge the token.
		if err := o.cfg.TokenProblem(); err != nil {
			return exitcode.With(exitcode.BadInput, err)
		}
		if !o.dryRun && o.cfg.HFTokenValue() == "" {
			return exitcode.With(exitcode.BadInput, deploy.ErrTokenMissing)
		}
	}
	if o.dryRunServer && o.command == "cleanup" {
		return exitcode.With(exitcode.BadInput, errors.New("invalid --dry-run=server for cleanup: cleanup --dry-run already reads the cluster and the project"))
	}
	if o.dryRun && !o.dryRunServer && o.command != "cleanup" {
		return nil // a plan reads nothing
	}
	return o.f.CheckConnection(o.cfg)
}

// unchecked says what a plan did not check and the real run needs: a
// plan reads nothing, so `preflight` is named as the check.
func (o *stackOptions) unchecked() []string {
	var out []string
	if steps.Requires(o.cfg, o.steps).Token && o.cfg.HFTokenValue() == "" {
		out = append(out, "no Hugging Face token: the real "+o.command+" stops at once (exit 2) without "+config.TokenEnv+" or --hf-token-file")
	}
	if google := steps.GoogleSteps(o.cfg, o.steps); len(google) > 0 && o.f.Env.Get("GOOGLE_APPLICATION_CREDENTIALS") == "" && o.cfg.Endpoints.IAM == "" {
		out = append(out, "Google credentials not looked at: the "+strings.Join(google, " and ")+" step(s) need Application Default Credentials (gcloud auth application-default login)")
	}
	return append(out, "this plan checked nothing against the cluster or the project: `vllm-hpa preflight` proves the token, every permission (Kubernetes and IAM), the cluster's settings and each object (a server-side dry run), changing nothing")
}

// errOverallTimeout is the cause of a context --timeout ended.
var errOverallTimeout = errors.New("the command's --timeout passed")

// applies reports whether the command applies steps (up, or a step's
// command): only those write the token Secret.
func (o *stackOptions) applies() bool {
	return o.command == "up" || slices.Contains(steps.Names(), o.command)
}

// Run applies (or, for cleanup, deletes) the steps in order, within
// --timeout when given.
func (o *stackOptions) Run(ctx context.Context) error {
	ctx, cancel := o.withOverallTimeout(ctx)
	defer cancel()
	if o.dryRunServer {
		p := &preflightOptions{*o}
		p.checksOnly = true
		return p.Run(ctx)
	}
	if o.dryRun && o.command != "cleanup" {
		if note := steps.ResolveOffline(o.cfg); note != "" {
			fmt.Fprintln(o.streams.ErrOut, "note: "+note)
		}
		for _, note := range o.unchecked() {
			fmt.Fprintln(o.streams.ErrOut, "note: "+note)
		}
		return o.printPlans(ctx, steps.New(o.cfg, step.Deps{}), o.steps)
	}
	if o.dryRun {
		return o.printDeletePlans(ctx)
	}
	rec := output.NewProgress(o.streams)
	defer rec.Close()
	start := time.Now()
	purpose := session.Apply
	if o.command == "cleanup" {
		purpose = session.Delete
	}
	s, err := session.Open(ctx, o.f, o.cfg, session.Options{Purpose: purpose, Steps: o.steps, Whole: o.command == "up", Progress: rec, NoWait: o.command == "cleanup" && !o.wait})
	if err == nil {
		err = s.Run(ctx)
	}
	return o.printRun(rec, start, o.timedOut(ctx, err))
}

// withOverallTimeout bounds ctx by --timeout, when given: a step that
// would wait longer, or a server that never answers, ends the command
// with exit 4, not a hang.
func (o *stackOptions) withOverallTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if o.timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeoutCause(ctx, o.timeout, errOverallTimeout)
}

// timedOut says, of an error that --timeout caused, that it did (exit 4).
func (o *stackOptions) timedOut(ctx context.Context, err error) error {
	if err != nil && errors.Is(context.Cause(ctx), errOverallTimeout) {
		return exitcode.With(exitcode.Timeout, fmt.Errorf("--timeout %s reached (what is done stays done; run again to go on): %w", o.timeout, err))
	}
	return err
}

// runJSON is the --output json/yaml document of a run.
type runJSON struct {
	result
	Seconds units.Seconds        `json:"seconds"`
	Steps   []*output.StepRecord `json:"steps"`
}

func (o *stackOptions) runDoc(rec *output.Progress, start time.Time, runErr error) runJSON {
	doc := runJSON{resultOf(o.command, runErr), units.Seconds(time.Since(start)), rec.Steps()}
	done := map[string]bool{}
	for _, s := range doc.Steps {
		done[s.Step] = true
	}
	for _, name := range o.steps {
		if !done[name] && !o.checksOnly {
			doc.Steps = append(doc.Steps, &output.StepRecord{Step: name, Actions: []string{}, Checks: []step.Result{}, Status: "not-run"})
		}
	}
	return doc
}

func (o *stackOptions) printRun(rec *output.Progress, start time.Time, runErr error) error {
	doc := o.runDoc(rec, start, runErr)
	if done, err := o.printDocOf(doc, runErr); done {
		return err
	}
	rec.Close() // no live line under the result
	status := "done"
	if runErr != nil {
		status = "failed"
		if exitcode.Of(runErr) == exitcode.Interrupted {
			status = "interrupted"
		}
	}
	var left []string
	for _, s := range doc.Steps {
		if s.Status == "not-run" {
			left = append(left, s.Step)
		}
	}
	fmt.Fprintf(o.streams.Out, "%s %s in %.1fs", o.command, status, doc.Seconds.Float())
	if len(left) > 0 {
		fmt.Fprintf(o.streams.Out, "; not run: %s", strings.Join(left, ", "))
	}
	fmt.Fprintln(o.streams.Out)
	return runErr
}

func newStepCmds(g *globalOptions) []*cobra.Command {
	var cmds []*cobra.Command
	for _, d := range steps.Ordered {
		cmds = append(cmds, newStepCmd(g, d, nil))
	}
	return cmds
}

// newStepCmd is the command of one step, with its help and its flags.
func newStepCmd(g *globalOptions, d step.Definition, runF func(*stackOptions) error) *cobra.Command {
	o := &stackOptions{globalOptions: g, command: d.Name(), steps: []string{d.Name()}}
	help := d.Help()
	c := &cobra.Command{
		Use:     d.Name(),
		Short:   help.Short,
		Long:    help.Long,
		Example: help.Example,
		Args:    noArgs,
		RunE:    runCommand(o, runF),
	}
	o.addFlags(c, "this step would create or change (objects and Google API calls)")
	config.AddFlagsFor(c.Flags(), d.Settings())
	registerEnumCompletions(c, g)
	return c
}

func newUpCmd(g *globalOptions, runF func(*stackOptions) error) *cobra.Command {
	o := &stackOptions{globalOptions: g, command: "up", steps: slices.Clone(steps.Names())}
	c := &cobra.Command{
		Use:   "up",
		Short: "Run every step in the walkthrough's order: " + strings.Join(steps.Names(), ", "),
		Long: `Run every step in the walkthrough's order (` + strings.Join(steps.Names(), ", ") + `).
Each step is idempotent: a re-run changes nothing that is already right.
--skip leaves steps out (--skip identity needs no Google credentials).`,
		Example: "  vllm-hpa up --project my-proj\n  vllm-hpa up --project my-proj --skip identity",
		Args:    noArgs,
		RunE:    runCommand(o, runF),
	}
	o.addFlags(c, "every step would create or change (objects and Google API calls)")
	o.addSkipFlag(c)
	config.AddFlagsFor(c.Flags(), steps.Settings())
	registerEnumCompletions(c, g)
	return c
}

func newCleanupCmd(g *globalOptions, runF func(*stackOptions) error) *cobra.Command {
	o := &stackOptions{globalOptions: g, command: "cleanup"}
	c := &cobra.Command{
		Use:   "cleanup [STEP...]",
		Short: "Delete what vllm-hpa created, in reverse order, and nothing else",
		Long: `Delete the stack in reverse order (` + strings.Join(reversed(steps.Names()), ", ") + `),
or only the named steps (still in reverse order).

Only what this instance created is deleted, and each deletion is waited for
until the object is gone (--wait=false: until the server accepted it; a
namespace's contents then go in the background). Objects vllm-hpa did not
create, and another instance's, are left in place; an object adopted with
--adopt keeps everything but vllm-hpa's labels and fields. The adapter and
the Google service account are shared by every instance that uses them:
this instance leaves them, and the last one deletes them. A namespace is
deleted only if vllm-hpa created it and a scan of every resource type finds
nothing else in it. IAM changes remove only this stack's members. --dry-run
reads what is there and prints what would be deleted, released or kept. A
second run changes nothing.`,
		Example:           "  vllm-hpa cleanup --project my-proj\n  vllm-hpa cleanup --project my-proj --dry-run\n  vllm-hpa cleanup hpa adapter --project my-proj",
		ValidArgsFunction: stepArgCompletion,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, a := range args {
				if !slices.Contains(steps.Names(), a) {
					return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid step %q: must be one of %s", a, strings.Join(steps.Names(), ", ")))
				}
			}
			o.steps = nil
			for _, name := range reversed(steps.Names()) {
				if (len(args) == 0 || slices.Contains(args, name)) && !(o.keepWorkload && name == deploy.Name) {
					o.steps = append(o.steps, name)
				}
			}
			return runCommand(o, runF)(cmd, nil)
		},
	}
	o.addFlags(c, "would be deleted, released or kept (it reads the cluster and the project)")
	o.addSkipFlag(c)
	c.Flags().BoolVar(&o.keepWorkload, "keep-workload", false, "keep the vLLM Deployment, Service and Secret")
	c.Flags().BoolVar(&o.wait, "wait", true, "wait until each deleted object is gone; --wait=false returns once the server accepted every deletion (a namespace's contents go in the background, and a later up or cleanup waits for it)")
	config.AddFlagsFor(c.Flags(), steps.Settings())
	registerEnumCompletions(c, g)
	return c
}

// stepArgCompletion completes step names not given yet.
func stepArgCompletion(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	var out []string
	for _, s := range steps.Names() {
		if !slices.Contains(args, s) && strings.HasPrefix(s, toComplete) {
			out = append(out, s)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// registerEnumCompletions completes the flags whose values are a fixed set.
func registerEnumCompletions(c *cobra.Command, g *globalOptions) {
	if c.Flags().Lookup("namespace") != nil {
		_ = c.RegisterFlagCompletionFunc("namespace", g.namespaceCompletion)
	}
	for flag, values := range map[string][]string{
		"metric":        config.MetricNames(),
		"identity-mode": {"gsa", "direct"},
		"backend":       {config.BackendAdapter, config.BackendNative, config.BackendAuto},
	} {
		if c.Flags().Lookup(flag) != nil {
			_ = c.RegisterFlagCompletionFunc(flag, fixedCompletion(values...))
		}
	}
}

func reversed(in []string) []string {
	out := slices.Clone(in)
	slices.Reverse(out)
	return out
}
