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
	steps []render.Source
	cfg   *config.Config
}

// renderedNames are the steps with objects of their own.
func renderedNames() []string {
	var out []string
	for _, s := range steps.Rendered() {
		out = append(out, s.Step)
	}
	return out
}

func newRenderCmd(g *globalOptions, runF func(*renderOptions) error) *cobra.Command {
	o := &renderOptions{globalOptions: g}
	c := &cobra.Command{
		Use:   "render [STEP]",
		Short: "Print the stack's Kubernetes objects as YAML (all steps, or one)",
		Long: `Print the rendered objects of every step (or of one: ` + strings.Join(renderedNames(), ", ") + `)
as a multi-document YAML stream that kubectl apply -f - accepts (--output
json: a v1 List). The Secret holding the Hugging Face token is left out,
and stderr says how to create it: applying a copy would overwrite the real
token.`,
		Example:   "  vllm-hpa render --project my-proj\n  vllm-hpa render adapter --project my-proj | kubectl apply -f -",
		ValidArgs: renderedNames(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return exitcode.With(exitcode.BadInput, fmt.Errorf("render takes at most one step, got %q", args))
			}
			var err error
			if o.cfg, err = o.loadConfig(cmd); err != nil {
				return err
			}
			if err := validateConfig(o.cfg, true); err != nil {
				return err
			}
			if note := steps.ResolveOffline(o.cfg); note != "" {
				fmt.Fprintln(o.streams.ErrOut, "note: "+note)
			}
			o.steps = steps.Rendered()
			if len(args) == 0 {
				// The whole stack of the configured backend.
				o.steps = slices.DeleteFunc(o.steps, func(s render.Source) bool {
					d, _ := steps.Lookup(s.Step)
					return !steps.Used(d, o.cfg)
				})
			}
			if len(args) == 1 {
				i := slices.IndexFunc(o.steps, func(s render.Source) bool { return s.Step == args[0] })
				if i < 0 {
					return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid step %q: must be one of %s", args[0], strings.Join(renderedNames(), ", ")))
				}
				o.steps = o.steps[i : i+1]
			}
			if runF != nil {
				return runF(o)
			}
			return o.Run(cmd.Context())
		},
	}
	config.AddStepFlags(c.Flags())
	registerEnumCompletions(c)
	return c
}

// Run prints the objects; the token Secret is never among them.
func (o *renderOptions) Run(ctx context.Context) error {
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
