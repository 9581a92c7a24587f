package cmd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vllm-hpa/vllm-hpa/internal/cmdutil"
	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/output"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/deploy"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/hpa"
	"github.com/vllm-hpa/vllm-hpa/internal/units"
)

// stackOptions are the options of a command that applies, or deletes, steps.
type stackOptions struct {
	*globalOptions
	command      string
	steps        []string
	dryRun       bool
	timeout      time.Duration
	skip         []string // up, verify and cleanup: steps left out
	keepWorkload bool     // cleanup
	cfg          *config.Config
}

func (o *stackOptions) addFlags(c *cobra.Command, what string) {
	c.Flags().BoolVar(&o.dryRun, "dry-run", false, "print what "+what+" and change nothing")
	c.Flags().DurationVar(&o.timeout, "timeout", 0, "how long each step waits for its conditions (default: the step's timeouts.* setting)")
}

func (o *stackOptions) addSkipFlag(c *cobra.Command) {
	c.Flags().StringSliceVar(&o.skip, "skip", nil, "steps to leave out, e.g. --skip identity to use only Kubernetes (no Google credentials needed)")
	_ = c.RegisterFlagCompletionFunc("skip", fixedCompletion(steps.Names()...))
}

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
func (o *stackOptions) Complete(cmd *cobra.Command) (err error) {
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
		t := &o.cfg.Timeouts
		t.Deploy, t.Monitor, t.Adapter, t.Identity, t.HPA, t.Cleanup = o.timeout, o.timeout, o.timeout, o.timeout, o.timeout, o.timeout
	}
	if err := o.applySkip(); err != nil {
		return err
	}
	if o.applies() && !o.dryRun && steps.Requires(o.steps).Token && o.cfg.HFTokenValue() == "" {
		return exitcode.With(exitcode.BadInput, deploy.ErrTokenMissing)
	}
	if o.dryRun && o.command != "cleanup" {
		return nil // a plan reads nothing
	}
	return o.f.CheckConnection(o.cfg)
}

// applies reports whether the command applies steps (up, or a step's
// command): only those write the token Secret.
func (o *stackOptions) applies() bool {
	return o.command == "up" || slices.Contains(steps.Names(), o.command)
}

// need is what the command connects to: the Google APIs when a step
// needs them, or explains with them (the hpa step says why the adapter
// serves no value from IAM and Cloud Monitoring); optional at
// connection, because the backend (native needs no IAM) is known only
// once the cluster is read: Run refuses before any change when the steps
// need them after all.
func (o *stackOptions) need() cmdutil.Need {
	return cmdutil.Need{IAM: steps.Requires(o.steps).GoogleAPIs || slices.Contains(o.steps, hpa.Name), GCPOptional: true}
}

// Run applies (or, for cleanup, deletes) the steps in order.
func (o *stackOptions) Run(ctx context.Context) error {
	if o.dryRun && o.command != "cleanup" {
		if note := steps.ResolveOffline(o.cfg); note != "" {
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
	deps, err := o.f.Connect(ctx, o.cfg, o.need(), rec)
	if _, off := gcp.As[*gcp.ServiceDisabledError](err); off && deps.GCP != nil {
		// The cluster read through the container API found it off: name
		// every API the run needs that is, in one list.
		if serr := steps.CheckServices(ctx, o.cfg, deps, o.steps); serr != nil {
			err = serr
		}
	}
	if err != nil {
		return o.printRun(rec, start, o.withIdentityHint(err))
	}
	if o.command == "up" || o.command == "cleanup" {
		// A plain up keeps, and a plain cleanup finds, the route the
		// stack has (one read).
		if err := steps.InferBackend(ctx, o.cfg, deps); err != nil {
			return o.printRun(rec, start, err)
		}
	}
	if o.command != "cleanup" && o.cfg.HPA.Backend != config.BackendAdapter {
		rec.StepStarted("backend")
		err := steps.ResolveBackend(ctx, o.cfg, &deps)
		rec.StepDone("backend", err)
		if err != nil {
			return o.printRun(rec, start, err)
		}
	}
	if !o.cfg.Native() && steps.Requires(o.steps).GoogleAPIs && deps.GCP == nil && deps.GCPError != nil {
		// The adapter route's identity needs the Google APIs: say so
		// before anything changes.
		return o.printRun(rec, start, o.withIdentityHint(exitcode.With(exitcode.Precondition, deps.GCPError)))
	}
	s := steps.New(o.cfg, deps)
	if o.command == "cleanup" && steps.Requires(o.steps).GoogleAPIs && deps.GCP != nil {
		// Cleanup writes IAM too: the APIs it calls, before the first
		// deletion.
		rec.StepStarted("preconditions")
		err := steps.CheckServices(ctx, o.cfg, deps, o.steps)
		rec.StepDone("preconditions", err)
		if err != nil {
			return o.printRun(rec, start, err)
		}
	}
	if o.command != "cleanup" && (o.cfg.Cluster != "" || deps.ClusterName != "" || steps.Requires(o.steps).GoogleAPIs) {
		// The cluster's and the project's preconditions, before anything
		// changes.
		rec.StepStarted("preconditions")
		_, err := steps.Preconditions(ctx, o.cfg, deps, o.steps)
		rec.StepDone("preconditions", err)
		if err != nil {
			return o.printRun(rec, start, err)
		}
	}
	var runErr error
	for _, name := range o.steps {
		st, err := s.Step(name)
		if err != nil {
			return err
		}
		rec.StepStarted(name)
		if o.command == "cleanup" {
			err = st.Delete(ctx)
		} else {
			err = st.Apply(ctx)
		}
		rec.StepDone(name, err)
		if err != nil {
			runErr = fmt.Errorf("%s: %w", name, err)
			break
		}
	}
	if runErr == nil && o.command == "up" && slices.Contains(o.steps, hpa.Name) {
		// The HPA reads its metric from the configured backend (the hpa
		// step waited for a value of it): what this instance built for
		// the other one can go. Not when hpa was skipped: the HPA may
		// still read the old route.
		// Each step says what it removes, in its own record.
		if err := s.Retire(ctx); err != nil {
			runErr = fmt.Errorf("retiring the other backend's parts: %w", err)
		}
	}
	return o.printRun(rec, start, runErr)
}

// withIdentityHint adds, to a failure to reach the Google APIs, that the
// Kubernetes-only steps run without them (unless the cluster itself is
// reached through the Google APIs).
func (o *stackOptions) withIdentityHint(err error) error {
	if !cmdutil.ViaGKE(o.cfg) && steps.Requires(o.steps).GoogleAPIs && errors.As(err, new(*gcp.NoCredentialsError)) {
		return exitcode.With(exitcode.Precondition, fmt.Errorf("%w; the identity step needs Google credentials: give them, or leave it out with --skip identity", err))
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
		if !done[name] {
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

// runStack is the RunE of a command built on stackOptions: Complete,
// Validate, then runF (tests) or Run.
func runStack(o *stackOptions, runF func(*stackOptions) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := o.Complete(cmd); err != nil {
			return err
		}
		if err := o.Validate(); err != nil {
			return err
		}
		if runF != nil {
			return runF(o)
		}
		return o.Run(cmd.Context())
	}
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
		Use:   d.Name(),
		Short: help.Short,
		Long:  help.Long,
		Args:  noArgs,
		RunE:  runStack(o, runF),
	}
	o.addFlags(c, "this step would create or change (objects and Google API calls)")
	config.AddStepFlags(c.Flags(), d.Name())
	registerEnumCompletions(c)
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
		RunE:    runStack(o, runF),
	}
	o.addFlags(c, "every step would create or change (objects and Google API calls)")
	o.addSkipFlag(c)
	config.AddStepFlags(c.Flags())
	registerEnumCompletions(c)
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
until the object is gone. Objects vllm-hpa did not create, and another
instance's, are left in place; an object adopted with --adopt keeps
everything but vllm-hpa's labels and fields. The adapter and the Google
service account are shared by every instance that uses them: this instance
leaves them, and the last one deletes them. A namespace is deleted only if
vllm-hpa created it and a scan of every resource type finds nothing else in
it. IAM changes remove only this stack's members. --dry-run reads what is
there and prints what would be deleted, released or kept. A second run
changes nothing.`,
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
			return runStack(o, runF)(cmd, nil)
		},
	}
	o.addFlags(c, "would be deleted, released or kept (it reads the cluster and the project)")
	o.addSkipFlag(c)
	c.Flags().BoolVar(&o.keepWorkload, "keep-workload", false, "keep the vLLM Deployment, Service and Secret")
	config.AddStepFlags(c.Flags())
	registerEnumCompletions(c)
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
func registerEnumCompletions(c *cobra.Command) {
	for flag, values := range map[string][]string{
		"metric":        config.MetricNames(),
		"identity-mode": {"gsa", "direct"},
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
