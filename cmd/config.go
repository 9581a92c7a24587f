package cmd

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

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
environment variables (VLLM_HPA_...), the config file and the defaults give it,
and, in comments, the file read, where a value came from when no flag, variable
or file gave it (the project from gcloud's configuration, the namespace from
the kube context), and whether the Hugging Face token is set (never its value).

The text output is a config file that loads back unchanged:
  vllm-hpa config view --project my-proj > vllm-hpa.yaml
  vllm-hpa config view --project my-proj | vllm-hpa render --config -
--output json (or yaml) prints a result document with the configuration
under "config". A configuration that does not validate is printed all the
same, then reported (exit 2).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := g.loadConfig(cmd)
			if err != nil {
				return err
			}
			// View shows the configuration even when it would not
			// validate, then reports what is wrong with it.
			verr := validateConfig(cfg, true)
			doc := configDoc{result: resultOf(g.command, verr), File: configSource(cfg), Token: tokenState(cfg), Origins: origins(cfg), Config: cfg.Tree()}
			if done, err := g.printDocOf(doc, verr); done {
				return err
			}
			writeConfigFile(g.streams.Out, cfg)
			return verr
		},
	}
	config.AddFlagsFor(view.Flags(), steps.Settings())
	c.AddCommand(view)
	return c
}

// configDoc is config view's --output json/yaml document.
type configDoc struct {
	result
	// File is the config file read, or "none".
	File string `json:"file"`
	// Token says whether the Hugging Face token is set and from where.
	Token string `json:"token"`
	// Origins: where a value came from when no flag, variable or file
	// gave it and it is not the default.
	Origins map[string]string `json:"origins,omitempty"`
	Config  map[string]any    `json:"config"`
}

// configSource names the config file cfg was read from.
func configSource(cfg *config.Config) string {
	switch cfg.File() {
	case "":
		return "none"
	case config.StdinFile:
		return "standard input"
	}
	return cfg.File()
}

// tokenState says whether the token is set and where from, never what it is.
func tokenState(cfg *config.Config) string {
	from := config.TokenEnv
	if cfg.HFToken.File != "" {
		from = cfg.HFToken.File
	}
	switch {
	case cfg.TokenProblem() != nil:
		return "unusable (from " + from + "): " + cfg.TokenProblem().Error()
	case cfg.HFTokenValue() != "":
		return "set (from " + from + ")"
	}
	return "not set (" + config.TokenEnv + " or hf-token.file)"
}

// origins are the keys whose values came from somewhere other than a
// flag, a variable, the file or the defaults.
func origins(cfg *config.Config) map[string]string {
	out := map[string]string{}
	for _, s := range config.Settings {
		if o := cfg.Origin(s.Key); o != "" {
			out[s.Key] = o
		}
	}
	return out
}

// writeConfigFile writes cfg as a config file that loads back unchanged:
// the keys a flag, a variable, the file or another origin set as YAML, the
// defaults as comments (so that loading it back leaves them defaults, as
// they were), and what is not a setting (the file read, the token,
// origins) in comments too.
func writeConfigFile(w io.Writer, cfg *config.Config) {
	fmt.Fprintf(w, "# vllm-hpa configuration (flags > environment > file > defaults; defaults commented out); file read: %s\n", configSource(cfg))
	fmt.Fprintf(w, "# Hugging Face token: %s\n", tokenState(cfg))
	o := origins(cfg)
	for _, k := range slices.Sorted(maps.Keys(o)) {
		fmt.Fprintf(w, "# %s: from %s\n", k, o[k])
	}
	set := func(key string) bool { return cfg.Given(key) || cfg.Origin(key) != "" }
	values := cfg.Values()
	for i := 0; i < len(values); {
		section, _, nested := strings.Cut(values[i].Key, ".")
		if !nested {
			writeSetting(w, commentedUnless(set(values[i].Key), ""), section, settingValue(cfg, values[i].Key))
			i++
			continue
		}
		j := i
		for j < len(values) && strings.HasPrefix(values[j].Key, section+".") {
			j++
		}
		// A section with no key set is commented out whole: an empty
		// section would load as a key of its own.
		open := slices.ContainsFunc(values[i:j], func(kv config.KeyValue) bool { return set(kv.Key) })
		if open {
			fmt.Fprintf(w, "%s:\n", section)
		} else {
			fmt.Fprintf(w, "# %s:\n", section)
		}
		for _, kv := range values[i:j] {
			prefix := "#   "
			if open {
				prefix = commentedUnless(set(kv.Key), "  ")
			}
			writeSetting(w, prefix, strings.TrimPrefix(kv.Key, section+"."), settingValue(cfg, kv.Key))
		}
		i = j
	}
}

// commentedUnless is indent, commented out unless set.
func commentedUnless(set bool, indent string) string {
	if set {
		return indent
	}
	return indent + "# "
}

// writeSetting writes one "name: value" line after prefix.
func writeSetting(w io.Writer, prefix, name string, value any) {
	y, err := yaml.Marshal(value)
	if err != nil {
		y = []byte(fmt.Sprint(value))
	}
	fmt.Fprintln(w, prefix+name+": "+strings.TrimSpace(string(y)))
}

// settingValue is key's typed value as the config file spells it.
func settingValue(cfg *config.Config, key string) any {
	var v any = cfg.Tree()
	for _, part := range strings.Split(key, ".") {
		v = v.(map[string]any)[part]
	}
	return v
}

// writeConfigText writes the configuration's settings as YAML, each line
// prefixed.
func writeConfigText(w io.Writer, cfg *config.Config, prefix string) {
	y, err := yaml.Marshal(cfg.Tree())
	if err != nil {
		fmt.Fprintf(w, "%s(cannot show the configuration: %v)\n", prefix, err)
		return
	}
	for _, line := range splitLines(string(y)) {
		fmt.Fprintln(w, prefix+line)
	}
}
