package cmd

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// globalFlagsHint replaces the inherited flags in every command's help, as
// kubectl does: they are the same everywhere, and `vllm-hpa options` lists
// them.
// Where a command reaches a project and a cluster, the flags that say
// which are shown too: a first run needs --project.
const globalFlagsHint = `{{if .HasAvailableInheritedFlags}}{{with reachFlags .}}

Project and cluster (of the flags every command takes):
{{. | trimTrailingWhitespaces}}{{end}}

Use "vllm-hpa options" for the flags every command takes (--project, --cluster, --location, --kubeconfig, --context, --output, -v, --no-color, --config...).{{end}}`

// reachFlagNames are the global flags that say which project and cluster
// a command reaches.
var reachFlagNames = []string{"project", "cluster", "location", "kubeconfig", "context"}

// reachFlags is the usage of c's reachFlagNames, "" for a command that
// reaches neither (version, sim, options).
func reachFlags(c *cobra.Command) string {
	if c.Annotations[localOnly] != "" {
		return ""
	}
	fs := pflag.NewFlagSet("reach", pflag.ContinueOnError)
	for _, name := range reachFlagNames {
		if f := c.InheritedFlags().Lookup(name); f != nil {
			fs.AddFlag(f)
		}
	}
	return fs.FlagUsages()
}

func init() { cobra.AddTemplateFunc("reachFlags", reachFlags) }

// newOptionsCmd lists the flags every command takes.
func newOptionsCmd(g *globalOptions) *cobra.Command {
	c := &cobra.Command{
		Annotations: map[string]string{localOnly: "true"},
		Use:         "options",
		Short:       "List the flags every command takes",
		Args:        noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprintln(g.streams.Out, "The following flags can be given to any command:")
			fmt.Fprintln(g.streams.Out)
			fmt.Fprint(g.streams.Out, cmd.Root().PersistentFlags().FlagUsages())
			return nil
		},
	}
	return c
}

// withGlobalFlagsHint is Cobra's usage template with the inherited flags
// replaced by the hint.
func withGlobalFlagsHint(tmpl string) string {
	const inherited = `{{if .HasAvailableInheritedFlags}}

Global Flags:
{{.InheritedFlags.FlagUsages | trimTrailingWhitespaces}}{{end}}`
	if !strings.Contains(tmpl, inherited) {
		return tmpl
	}
	return strings.Replace(tmpl, inherited, globalFlagsHint, 1)
}

// plainBool is a bool flag's value without pflag's IsBoolFlag, so that help
// shows `--dry-run`, not `--dry-run[=true|false]`; `--dry-run` alone still
// means true (its NoOptDefVal).
type plainBool struct{ pflag.Value }

// plainBools makes every bool flag of c and its subcommands a plainBool.
func plainBools(c *cobra.Command) {
	fix := func(f *pflag.Flag) {
		if _, done := f.Value.(plainBool); !done && f.Value.Type() == "bool" {
			f.Value = plainBool{f.Value}
			f.NoOptDefVal = "true"
		}
	}
	c.InitDefaultHelpFlag()
	c.Flags().VisitAll(fix)
	c.PersistentFlags().VisitAll(fix)
	for _, sub := range c.Commands() {
		plainBools(sub)
	}
}
