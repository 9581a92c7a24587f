package cmd

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
)

func newRenderCmd(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "render [STEP]",
		Short: "Print the stack's Kubernetes objects as YAML (all steps, or one)",
		Long: `Print the rendered objects of every step (or of one: ` + strings.Join(render.Steps, ", ") + `)
as a multi-document YAML stream that kubectl apply -f - accepts (--output
json: a v1 List). The Hugging Face token is rendered as ` + render.Redacted + `,
never its value.`,
		Example:   "  vllm-hpa render --project my-proj\n  vllm-hpa render adapter --project my-proj | kubectl apply -f -",
		ValidArgs: render.Steps,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return exitcode.With(exitcode.BadInput, fmt.Errorf("render takes at most one step, got %q", args))
			}
			cfg, err := g.loadConfig(cmd)
			if err != nil {
				return err
			}
			steps := render.Steps
			if len(args) == 1 {
				if !contains(render.Steps, args[0]) {
					return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid step %q: must be one of %s", args[0], strings.Join(render.Steps, ", ")))
				}
				steps = args
			}
			if g.output == outputJSON {
				// A v1 List, which kubectl apply -f - also accepts.
				list := map[string]any{"apiVersion": "v1", "kind": "List", "items": []any{}}
				for _, st := range steps {
					objs, err := render.Objects(cfg, st)
					if err != nil {
						return err
					}
					for _, o := range objs {
						list["items"] = append(list["items"].([]any), o.Object)
					}
				}
				_, err := g.printDoc(list)
				return err
			}
			y, err := render.AllYAML(cfg, steps...)
			if err != nil {
				return err
			}
			_, err = g.streams.Out.Write(y)
			return err
		},
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
