// Package cmd holds vllm-hpa's Cobra commands. They are thin: each parses
// its flags into an options struct, then Complete (load the configuration),
// Validate (every input, before any client exists) and Run (through the
// clients a cmdutil.Factory opens). Tests replace Run with a runF seam to
// exercise parsing and validation with no API at all.
package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	"github.com/vllm-hpa/vllm-hpa/internal/cmdutil"
	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/environ"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/iostreams"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/output"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
)

// globalOptions are the flags every command has, and what the run has
// printed so far.
type globalOptions struct {
	f       *cmdutil.Factory
	streams *iostreams.IOStreams
	output  string
	noColor bool
	verbose int
	// command is the running command's path without the root, e.g.
	// "cleanup" or "config view".
	command string
	// printedDoc: the one --output json/yaml document is on stdout.
	printedDoc bool
}

// Output formats of --output.
const (
	outputText = "text"
	outputJSON = "json"
	outputYAML = "yaml"
)

// Main runs the CLI with the process's arguments, streams and environment,
// and returns the exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// client-go logs through klog (a watch that ended, a retry); the CLI
	// reports what matters itself, so keep klog off the user's stderr.
	klog.SetLogger(logr.Discard())
	return Run(ctx, cmdutil.New(iostreams.System(), environ.System()), args)
}

// Run runs the CLI on f's streams and environment; tests call it directly,
// many at once.
func Run(ctx context.Context, f *cmdutil.Factory, args []string) int {
	defer f.Close()
	g := &globalOptions{f: f, streams: f.IOStreams, output: outputText}
	root := newRootCmd(g)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitcode.OK
	}
	code := exitcode.Of(err)
	if code == exitcode.Failure && isUsageError(err) {
		code = exitcode.BadInput
	}
	if g.command == "" && cmd != nil {
		g.command = commandName(cmd)
	}
	g.printError(err, code, args)
	return code
}

// printError writes each line of err to stderr prefixed "error: ", so that a
// joined validation error reads as one line per bad field; with --output
// json or yaml, and no document printed yet, stdout gets one that says so.
func (g *globalOptions) printError(err error, code int, args []string) {
	msg := oneLineSuggestion(err.Error())
	for _, line := range strings.Split(msg, "\n") {
		if strings.TrimSpace(line) != "" {
			fmt.Fprintln(g.streams.ErrOut, g.streams.Red("error: ")+strings.TrimRight(line, " \t"))
		}
	}
	if g.printedDoc {
		return
	}
	if g.output != outputJSON && g.output != outputYAML {
		// The flags may not have been parsed (an unknown flag): look.
		g.output = outputFromArgs(args)
	}
	if g.output == outputJSON || g.output == outputYAML {
		_, _ = g.printDoc(result{Command: g.command, OK: false, ExitCode: code, Error: msg})
	}
}

// oneLineSuggestion turns Cobra's "unknown command" message, which spreads
// its suggestion over three lines, into one.
func oneLineSuggestion(msg string) string {
	head, rest, ok := strings.Cut(msg, "\n\nDid you mean this?\n")
	if !ok {
		return msg
	}
	var names []string
	for _, l := range strings.Split(rest, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			names = append(names, l)
		}
	}
	return head + "; did you mean " + strings.Join(names, " or ") + "?"
}

// result starts every command's --output json/yaml document: the command,
// whether it succeeded, its exit code and its error. Alone, it is the
// document of a command that failed before it had a result of its own.
type result struct {
	Command  string `json:"command"`
	OK       bool   `json:"ok"`
	ExitCode int    `json:"exitCode"`
	Error    string `json:"error,omitempty"`
}

// resultOf is command's result for its error (nil: success).
func resultOf(command string, err error) result {
	r := result{Command: command, OK: err == nil, ExitCode: exitcode.Of(err)}
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

// outputFromArgs finds --output/-o in args that Cobra could not parse.
func outputFromArgs(args []string) string {
	for i, a := range args {
		if a == "--" {
			break
		}
		for _, p := range []string{"--output=", "-o="} {
			if v, ok := strings.CutPrefix(a, p); ok {
				return v
			}
		}
		if (a == "--output" || a == "-o") && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, "-o"); ok && v != "" && !strings.HasPrefix(a, "--") {
			return v
		}
	}
	return outputText
}

// isUsageError recognises Cobra's own argument errors (unknown command,
// wrong number of arguments), which are bad input.
func isUsageError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "accepts ", "requires at least", "invalid argument", "unknown flag", "unknown shorthand", "flag needs an argument"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// flagSuggestions are c's flags near the unknown one err names, as Cobra
// suggests commands: a name within 2 edits, or one the typo starts.
func flagSuggestions(c *cobra.Command, err error) []string {
	typo, ok := strings.CutPrefix(err.Error(), "unknown flag: --")
	if !ok || typo == "" {
		return nil
	}
	typo, _, _ = strings.Cut(typo, "=")
	var near []string
	visit := func(f *pflag.Flag) {
		if !f.Hidden && (editDistance(typo, f.Name) <= 2 || (len(typo) >= 3 && strings.HasPrefix(f.Name, typo))) {
			near = append(near, "--"+f.Name)
		}
	}
	c.LocalFlags().VisitAll(visit)
	c.InheritedFlags().VisitAll(visit)
	if len(near) > 3 {
		near = near[:3]
	}
	return near
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

func commandName(c *cobra.Command) string {
	return strings.TrimSpace(strings.TrimPrefix(c.CommandPath(), c.Root().Name()))
}

// NewRootCmd builds the command tree on streams and the process's
// environment (for documentation and completion).
func NewRootCmd(streams *iostreams.IOStreams) *cobra.Command {
	return newRootCmd(&globalOptions{f: cmdutil.New(streams, environ.System()), streams: streams, output: outputText})
}

func newRootCmd(g *globalOptions) *cobra.Command {
	streams := g.streams
	root := &cobra.Command{
		Use:   "vllm-hpa",
		Short: "Autoscale a vLLM inference server on GKE on its own metrics",
		Long: `vllm-hpa stands up, checks and tears down the stack that autoscales a vLLM
inference server on Google Kubernetes Engine on the server's own metrics:
the vLLM Deployment and Service, a Managed Prometheus PodMonitoring, the
Custom Metrics Stackdriver Adapter, its Workload Identity, and an HPA on
prometheus.googleapis.com|vllm:num_requests_running|gauge.

Every step is idempotent and checks its own conditions. Progress goes to
stderr, results to stdout (--output json for CI).

First time on a real project (the APIs, the roles you need, a cluster
with a GPU pool, the model's licence): docs/getting-started.md, at
https://github.com/vllm-hpa/vllm-hpa/blob/main/docs/getting-started.md

Configuration: flags > environment (VLLM_HPA_...) > config file
(--config, else ./vllm-hpa.yaml) > defaults; the project, when not given,
from gcloud's configuration or the kube context. The Hugging Face token
comes from HF_TOKEN or --hf-token-file, never from a flag value.

Exit codes:
` + exitCodeHelp(),
		Example: `  export HF_TOKEN=hf_...
  vllm-hpa up --project my-proj --dry-run     # the plan: objects and IAM calls
  vllm-hpa preflight --project my-proj        # every permission and setting, nothing changed
  vllm-hpa up --project my-proj
  vllm-hpa verify --project my-proj
  vllm-hpa cleanup --project my-proj`,
		Version:           buildVersion().Version,
		SilenceUsage:      true,
		SilenceErrors:     true,
		DisableAutoGenTag: true, // docs/commands stays stable between runs
		// With no command: help for a person; for a program that asked
		// for a document (-o json), bad input and the document.
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if near := cmd.SuggestionsFor(args[0]); len(near) > 0 {
				msg += "; did you mean " + strings.Join(near, " or ") + "?"
			}
			return exitcode.With(exitcode.BadInput, errors.New(msg))
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.output == outputJSON || g.output == outputYAML {
				return exitcode.With(exitcode.BadInput, errors.New("no command given: `vllm-hpa --help` lists them"))
			}
			return cmd.Help()
		},
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			g.command = commandName(cmd)
			if _, ok := g.f.Env.Lookup("NO_COLOR"); ok || g.noColor || g.f.Env.Get("TERM") == "dumb" {
				streams.DisableColor()
			}
			switch g.output {
			case outputText, outputJSON, outputYAML:
			default:
				bad := g.output
				g.output = outputText
				return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid --output %q: must be one of text, json, yaml", bad))
			}
			if g.verbose >= 2 {
				g.f.Trace = func(rc *rest.Config) { rc.Wrap(output.TraceTransport(streams.ErrOut)) }
			}
			return rejectUnusedGlobals(cmd)
		},
	}
	root.SetVersionTemplate("vllm-hpa {{.Version}}\n")
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		g.command = commandName(c)
		if near := flagSuggestions(c, err); len(near) > 0 {
			return exitcode.With(exitcode.BadInput, fmt.Errorf("%w; did you mean %s? (see %s --help)", err, strings.Join(near, " or "), c.CommandPath()))
		}
		return exitcode.With(exitcode.BadInput, fmt.Errorf("%w (see %s --help)", err, c.CommandPath()))
	})
	// A mistyped command: one clear line with the suggestion.
	root.SuggestionsMinimumDistance = 2

	pf := root.PersistentFlags()
	pf.StringVarP(&g.output, "output", "o", outputText, "output format: text, json or yaml (results on stdout, progress on stderr)")
	pf.BoolVar(&g.noColor, "no-color", false, "no colour in progress output (also NO_COLOR)")
	pf.CountVarP(&g.verbose, "verbose", "v", "more detail on stderr: -v the effective configuration, -vv each API call")
	config.AddGlobalFlags(pf)
	_ = root.RegisterFlagCompletionFunc("output", fixedCompletion(outputText, outputJSON, outputYAML))
	_ = root.RegisterFlagCompletionFunc("endpoint-type", fixedCompletion(config.EndpointTypes...))
	_ = root.RegisterFlagCompletionFunc("context", g.contextCompletion)

	root.AddGroup(&cobra.Group{ID: "steps", Title: "Walkthrough steps (in order):"},
		&cobra.Group{ID: "stack", Title: "Whole stack:"})
	for _, c := range newStepCmds(g) {
		c.GroupID = "steps"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newPreflightCmd(g, nil), newUpCmd(g, nil), newVerifyCmd(g, nil), newStatusCmd(g), newLoadCmd(g), newTuneCmd(g), newCleanupCmd(g, nil), newRenderCmd(g)} {
		c.GroupID = "stack"
		root.AddCommand(c)
	}
	root.AddCommand(newConfigCmd(g), newVersionCmd(g), newSimCmd(g), newOptionsCmd(g))
	// Cobra lists a group's commands alphabetically; the walkthrough's
	// steps read best in their order.
	root.InitDefaultVersionFlag()
	plainBools(root)
	root.SetUsageTemplate(withGlobalFlagsHint(strings.Replace(root.UsageTemplate(), `{{range $cmds}}{{if (and (eq .GroupID $group.ID) (or .IsAvailableCommand (eq .Name "help")))}}`,
		`{{range (ordered $cmds)}}{{if (and (eq .GroupID $group.ID) (or .IsAvailableCommand (eq .Name "help")))}}`, 1)))
	return root
}

func init() {
	cobra.AddTemplateFunc("ordered", func(cmds []*cobra.Command) []*cobra.Command {
		rank := map[string]int{}
		for i, s := range steps.Names() {
			rank[s] = i + 1
		}
		out := append([]*cobra.Command(nil), cmds...)
		// Steps first, in the walkthrough's order; the rest as Cobra had them.
		for i := 1; i < len(out); i++ {
			for j := i; j > 0 && rank[out[j].Name()] != 0 && (rank[out[j-1].Name()] == 0 || rank[out[j].Name()] < rank[out[j-1].Name()]); j-- {
				out[j], out[j-1] = out[j-1], out[j]
			}
		}
		return out
	})
}

func exitCodeHelp() string {
	var b strings.Builder
	for _, e := range exitcode.Table {
		fmt.Fprintf(&b, "  %3d  %s\n", e.Code, e.Meaning)
	}
	return b.String()
}

// fixedCompletion completes a flag from a fixed list.
func fixedCompletion(values ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}

// contextCompletion completes --context from the kubeconfig's contexts.
func (g *globalOptions) contextCompletion(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	cfg, err := config.Load(cmd.Flags(), g.f.Env, nil)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return kube.Contexts(g.f.KubeconfigOptions(cfg)), cobra.ShellCompDirectiveNoFileComp
}

// namespaceCompletion completes --namespace from the cluster's namespaces
// (bounded: completion must not hang on a cluster that does not answer).
func (g *globalOptions) namespaceCompletion(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
	cfg, err := config.Load(cmd.Flags(), g.f.Env, nil)
	if err != nil || g.f.CheckConnection(cfg) != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Second)
	defer cancel()
	deps, err := g.f.Connect(ctx, cfg, cmdutil.Need{}, nil)
	if err != nil || deps.Kube == nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	list, err := deps.Kube.Typed.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, ns := range list.Items {
		out = append(out, ns.Name)
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// loadConfig loads the configuration from cmd's flags and the command's
// environment (no validation: see validateConfig), registers the token
// with the output's scrubber, and at -v shows the result on stderr.
func (g *globalOptions) loadConfig(cmd *cobra.Command) (*config.Config, error) {
	cfg, err := config.Load(cmd.Flags(), g.f.Env, g.streams.In)
	if err != nil {
		return nil, exitcode.With(exitcode.BadInput, err)
	}
	for _, s := range cfg.Secrets() {
		if len(s) >= config.MinTokenLength {
			g.streams.Secrets.Add(s)
		}
	}
	if err := g.f.KubeContextDefaults(cfg); err != nil {
		return nil, exitcode.With(exitcode.BadInput, err)
	}
	if g.verbose >= 1 {
		fmt.Fprintln(g.streams.ErrOut, "effective configuration ("+configSource(cfg)+"):")
		writeConfigText(g.streams.ErrOut, cfg, "  ")
	}
	return cfg, nil
}

// validateConfig validates cfg, with or without a required project.
func validateConfig(cfg *config.Config, needProject bool) error {
	var err error
	if needProject {
		err = cfg.Validate()
	} else {
		err = cfg.ValidateWithoutProject()
	}
	return exitcode.With(exitcode.BadInput, err)
}

// noArgs is cobra.NoArgs with a bad-input exit code.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return exitcode.With(exitcode.BadInput, fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), args))
	}
	return nil
}

// printDoc writes v as the one document on stdout for --output json or
// yaml and reports whether it did; for text the caller prints its own way.
func (g *globalOptions) printDoc(v any) (bool, error) {
	return g.printDocOf(v, nil)
}

// printDocOf is printDoc of a command's result document: once printed,
// the error to return is the write's, else the command's own (runErr).
func (g *globalOptions) printDocOf(v any, runErr error) (bool, error) {
	done, err := g.marshalDoc(v)
	if done && err == nil {
		err = runErr
	}
	return done, err
}

func (g *globalOptions) marshalDoc(v any) (bool, error) {
	switch g.output {
	case outputJSON:
		g.printedDoc = true
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return true, err
		}
		_, err = g.streams.Out.Write(append(b, '\n'))
		return true, err
	case outputYAML:
		g.printedDoc = true
		y, err := yaml.Marshal(v)
		if err != nil {
			return true, err
		}
		_, err = g.streams.Out.Write(y)
		return true, err
	}
	return false, nil
}

// localOnly marks a command that reaches no project and no cluster
// (version, sim, options): it refuses the global flags that say how to,
// rather than accept them and do nothing.
const localOnly = "vllm-hpa/local-only"

// rejectUnusedGlobals refuses, on a localOnly command, every global flag
// but those of its output (--output, -v, --no-color).
func rejectUnusedGlobals(cmd *cobra.Command) error {
	if cmd.Annotations[localOnly] == "" {
		return nil
	}
	var given []string
	cmd.Root().PersistentFlags().VisitAll(func(f *pflag.Flag) {
		switch f.Name {
		case "output", "verbose", "no-color", "help":
			return
		}
		if f.Changed {
			given = append(given, "--"+f.Name)
		}
	})
	if len(given) == 0 {
		return nil
	}
	return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid flag %s: %s reaches no project and no cluster; leave it out", strings.Join(given, ", "), cmd.CommandPath()))
}
