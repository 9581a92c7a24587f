// Package cmd holds vllm-hpa's Cobra commands. They are thin: each parses
// flags into an options struct (Complete, Validate, Run) and calls the
// library packages under internal/.
package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/iostreams"
)

// globalOptions are the flags every command has.
type globalOptions struct {
	streams *iostreams.IOStreams
	output  string
	noColor bool
	verbose int
}

// Output formats of --output.
const (
	outputText = "text"
	outputJSON = "json"
	outputYAML = "yaml"
)

// Main runs the CLI with args and returns the process exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, iostreams.System(), args)
}

// Run runs the CLI on the given streams; tests call it directly.
func Run(ctx context.Context, streams *iostreams.IOStreams, args []string) int {
	// client-go logs through klog (a watch that ended, a retry); the CLI
	// reports what matters itself, so keep klog off the user's stderr.
	klog.SetLogger(logr.Discard())
	root := NewRootCmd(streams)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitcode.OK
	}
	code := exitcode.Of(err)
	if code == exitcode.Failure && isUsageError(err) {
		code = exitcode.BadInput
	}
	printError(streams, err)
	return code
}

// printError writes each line of err to stderr prefixed "error: ", so that a
// joined validation error reads as one line per bad field.
func printError(streams *iostreams.IOStreams, err error) {
	for _, line := range strings.Split(err.Error(), "\n") {
		if strings.TrimSpace(line) != "" {
			fmt.Fprintln(streams.ErrOut, streams.Red("error: ")+line)
		}
	}
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

// NewRootCmd builds the command tree.
func NewRootCmd(streams *iostreams.IOStreams) *cobra.Command {
	g := &globalOptions{streams: streams}
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

Configuration: flags > environment (VLLM_HPA_...) > config file
(--config, else ./vllm-hpa.yaml) > defaults. The Hugging Face token comes
from HF_TOKEN or --hf-token-file, never from a flag value.

Exit codes:
` + exitCodeHelp(),
		SilenceUsage:      true,
		SilenceErrors:     true,
		DisableAutoGenTag: true, // docs/commands stays stable between runs
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if g.noColor {
				streams.DisableColor()
			}
			switch g.output {
			case outputText, outputJSON, outputYAML:
			default:
				return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid --output %q: must be one of text, json, yaml", g.output))
			}
			return nil
		},
	}
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return exitcode.With(exitcode.BadInput, fmt.Errorf("%w (see %s --help)", err, c.CommandPath()))
	})

	pf := root.PersistentFlags()
	pf.StringVarP(&g.output, "output", "o", outputText, "output format: text, json or yaml (results on stdout, progress on stderr)")
	pf.BoolVar(&g.noColor, "no-color", false, "no colour in progress output (also NO_COLOR)")
	pf.CountVarP(&g.verbose, "verbose", "v", "more detail on stderr: -v the effective configuration, -vv each API call")
	config.AddFlags(pf)

	root.AddGroup(&cobra.Group{ID: "steps", Title: "Walkthrough steps (in order):"},
		&cobra.Group{ID: "stack", Title: "Whole stack:"})
	for _, c := range newStepCmds(g) {
		c.GroupID = "steps"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newUpCmd(g), newVerifyCmd(g), newStatusCmd(g), newLoadCmd(g), newCleanupCmd(g), newRenderCmd(g)} {
		c.GroupID = "stack"
		root.AddCommand(c)
	}
	root.AddCommand(newConfigCmd(g), newVersionCmd(g), newSimCmd(g))
	return root
}

func exitCodeHelp() string {
	var b strings.Builder
	for _, e := range exitcode.Table {
		fmt.Fprintf(&b, "  %3d  %s\n", e.Code, e.Meaning)
	}
	return b.String()
}

// loadConfig loads and validates the configuration from cmd's flags. Every
// command that acts calls it before its first API call, so bad input never
// changes anything. At -v it shows the effective configuration on stderr.
func (g *globalOptions) loadConfig(cmd *cobra.Command) (*config.Config, error) {
	return g.loadConfigFor(cmd, true)
}

// loadConfigFor is loadConfig for commands that may need no project.
func (g *globalOptions) loadConfigFor(cmd *cobra.Command, needProject bool) (*config.Config, error) {
	cfg, err := config.Load(cmd.Flags())
	if err == nil && needProject {
		err = cfg.Validate()
	} else if err == nil {
		err = cfg.ValidateWithoutProject()
	}
	if err != nil {
		return nil, exitcode.With(exitcode.BadInput, err)
	}
	if g.verbose >= 1 {
		fmt.Fprintln(g.streams.ErrOut, "effective configuration:")
		writeConfigText(g.streams.ErrOut, cfg, "  ")
	}
	return cfg, nil
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
	switch g.output {
	case outputJSON:
		enc := json.NewEncoder(g.streams.Out)
		enc.SetIndent("", "  ")
		return true, enc.Encode(v)
	case outputYAML:
		y, err := yaml.Marshal(v)
		if err != nil {
			return true, err
		}
		_, err = g.streams.Out.Write(y)
		return true, err
	}
	return false, nil
}
