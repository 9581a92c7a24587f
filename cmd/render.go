package cmd

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/deploy"
)

type renderOptions struct {
	*globalOptions
	listSteps bool
	only      string // the step named, or "" for all
	steps     []render.Source
	cfg       *config.Config
}

// renderedNames are the steps with objects of their own.
func renderedNames() []string {
	var out []string
	for _, s := range steps.Rendered() {
		out = append(out, s.Step)
	}
	return out
}

func newRenderCmd(g *globalOptions) *cobra.Command {
	o := &renderOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "render [STEP]",
		Short: "Print the stack's Kubernetes objects as YAML (all steps, or one)",
		Long: `Print the rendered objects of every step (or of one: ` + strings.Join(renderedNames(), ", ") + `)
as a multi-document YAML stream that kubectl apply -f - accepts (--output
json: a v1 List). The Secret holding the Hugging Face token is left out,
and stderr says how to create it: applying a copy would overwrite the real
token.`,
		Example:   "  vllm-hpa render --project my-proj\n  vllm-hpa render adapter --project my-proj | kubectl apply -f -\n  vllm-hpa render --list-steps",
		ValidArgs: renderedNames(),
		RunE:      runCommand(o, nil),
	}
	c.Flags().BoolVar(&o.listSteps, "list-steps", false, "print the steps that render objects, in the walkthrough's order, one a line (scripts read them here), and nothing else")
	config.AddFlagsFor(c.Flags(), steps.ReadSettings())
	registerEnumCompletions(c, g)
	return c
}

// stepListJSON is render --list-steps' --output json document.
type stepListJSON struct {
	result
	Steps []string `json:"steps"`
}

// Complete loads the configuration and chooses the steps: the whole
// stack of the configured backend, or the one named.
func (o *renderOptions) Complete(cmd *cobra.Command, args []string) (err error) {
	if len(args) > 1 || (o.listSteps && len(args) > 0) {
		return exitcode.With(exitcode.BadInput, fmt.Errorf("render takes at most one step, and none with --list-steps, got %q", args))
	}
	if o.listSteps {
		return nil // reads no configuration
	}
	if o.cfg, err = o.loadConfig(cmd); err != nil {
		return err
	}
	o.only = ""
	if len(args) == 1 {
		o.only = args[0]
	}
	return nil
}

// Validate checks the configuration and the step named.
func (o *renderOptions) Validate() error {
	if o.listSteps {
		return nil
	}
	if err := validateConfig(o.cfg, true); err != nil {
		return err
	}
	if o.only == "" {
		return nil
	}
	if !slices.Contains(renderedNames(), o.only) {
		return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid step %q: must be one of %s", o.only, strings.Join(renderedNames(), ", ")))
	}
	return nil
}

// Run prints the objects; the token Secret is never among them.
func (o *renderOptions) Run(ctx context.Context) error {
	if o.listSteps {
		if done, err := o.printDoc(stepListJSON{resultOf(o.command, nil), renderedNames()}); done {
			return err
		}
		_, err := fmt.Fprintln(o.streams.Out, strings.Join(renderedNames(), "\n"))
		return err
	}
	if note := steps.ResolveOffline(o.cfg); note != "" {
		fmt.Fprintln(o.streams.ErrOut, "note: "+note)
	}
	o.steps = slices.DeleteFunc(steps.Rendered(), func(s render.Source) bool {
		if o.only != "" {
			return s.Step != o.only
		}
		d, _ := steps.Lookup(s.Step) // the whole stack of the configured backend
		return !steps.Used(d, o.cfg)
	})
	if slices.ContainsFunc(o.steps, func(s render.Source) bool { return s.Step == deploy.Name }) {
		fmt.Fprintln(o.streams.ErrOut, "note: "+render.TokenSecretNote(o.cfg))
	}
	if o.output == outputJSON {
		// A v1 List, which kubectl apply -f - also accepts.
		list := map[string]any{"apiVersion": "v1", "kind": "List", "items": []any{}}
		for _, st := range o.steps {
			objs, err := render.Objects(o.cfg, st.Step, st.Shared)
			if err != nil {
				return err
			}
			for _, obj := range objs {
				if !render.IsTokenSecret(o.cfg, obj) {
					list["items"] = append(list["items"].([]any), obj.Object)
				}
			}
		}
		_, err := o.printDoc(list)
		return err
	}
	y, err := render.AllYAML(o.cfg, o.steps...)
	if err != nil {
		return err
	}
	o.printedDoc = true
	_, err = o.streams.Out.Write(y)
	return err
}
