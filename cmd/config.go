package cmd

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
)

func newConfigCmd(g *globalOptions) *cobra.Command {
	c := &cobra.Command{
		Use:   "config",
		Short: "Inspect the effective configuration",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	view := &cobra.Command{
		Use:   "view",
		Short: "Print the effective configuration (flags > env > file > defaults), secrets redacted",
		Long: `Print the effective configuration: every key with the value that flags,
environment variables (VLLM_HPA_...), the config file and the defaults give it.
The Hugging Face token is shown only as set or not set. The output is a valid
config file (--output yaml, the default for text) or JSON (--output json).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// View shows the configuration even when it would not validate,
			// then reports what is wrong with it.
			cfg, err := g.loadConfig(cmd)
			if err != nil {
				return err
			}
			if done, err := g.printDoc(cfg.Redacted()); err != nil {
				return err
			} else if !done {
				writeConfigText(g.streams.Out, cfg, "")
			}
			return validateConfig(cfg, true)
		},
	}
	config.AddFlagsFor(view.Flags(), steps.Settings())
	c.AddCommand(view)
	return c
}

// writeConfigText writes the redacted configuration as YAML, each line
// prefixed.
func writeConfigText(w io.Writer, cfg *config.Config, prefix string) {
	y, err := yaml.Marshal(cfg.Redacted())
	if err != nil {
		fmt.Fprintf(w, "%s(cannot show the configuration: %v)\n", prefix, err)
		return
	}
	for _, line := range splitLines(string(y)) {
		fmt.Fprintln(w, prefix+line)
	}
}
