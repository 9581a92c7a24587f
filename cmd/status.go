package cmd

import (
	"context"
	"fmt"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/stack"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// statusObject is one object of a step and whether it is there.
type statusObject struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// State: present (vllm-hpa's), foreign (exists, not vllm-hpa's), absent.
	State string `json:"state"`
}

type statusStep struct {
	Step    string         `json:"step"`
	Objects []statusObject `json:"objects"`
	Checks  []step.Result  `json:"checks"`
	Error   string         `json:"error,omitempty"`
}

func newStatusCmd(g *globalOptions) *cobra.Command {
	o := &runOptions{globalOptions: g, command: "status", steps: stack.Order}
	return &cobra.Command{
		Use:   "status",
		Short: "Show every step's objects and conditions in one table (read-only)",
		Long: `Read, in parallel and without changing anything, every object of every step
(present, absent, or existing but not vllm-hpa's) and every step's checks,
and print them as one table (or --output json/yaml).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Complete(cmd); err != nil {
				return err
			}
			ctx := cmd.Context()
			deps, closeDeps, err := o.dependenciesGCP(ctx, nil, o.steps, true)
			if err != nil {
				return err
			}
			defer closeDeps()
			steps := readStatus(ctx, o, stack.New(o.cfg, deps), deps.Kube)
			return printStatus(o, steps)
		},
	}
}

// readStatus reads every step's objects and checks concurrently.
func readStatus(ctx context.Context, o *runOptions, s *stack.Stack, k *kube.Client) []statusStep {
	out := make([]statusStep, len(stack.Order))
	owner := kube.Owner{render.ManagedByLabel: render.ManagedByValue, render.InstanceLabel: o.cfg.Instance}
	var wg sync.WaitGroup
	for i, name := range stack.Order {
		out[i] = statusStep{Step: name, Objects: []statusObject{}, Checks: []step.Result{}}
		st, _ := s.Step(name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			results, err := st.Check(ctx)
			out[i].Checks = append(out[i].Checks, results...)
			if err != nil {
				out[i].Error = err.Error()
			}
		}()
		plan, err := st.Plan(ctx)
		if err != nil {
			out[i].Error = err.Error()
			continue
		}
		out[i].Objects = make([]statusObject, len(plan.Objects))
		for j, obj := range plan.Objects {
			out[i].Objects[j] = statusObject{Kind: obj.GetKind(), Namespace: obj.GetNamespace(), Name: obj.GetName()}
			wg.Add(1)
			go func() {
				defer wg.Done()
				live, err := k.Get(ctx, obj)
				so := &out[i].Objects[j]
				switch {
				case err != nil:
					so.State = "unknown: " + err.Error()
				case live == nil:
					so.State = "absent"
				case owner.Owns(live):
					so.State = "present"
				default:
					so.State = "foreign"
				}
			}()
		}
	}
	wg.Wait()
	return out
}

func printStatus(o *runOptions, steps []statusStep) error {
	if done, err := o.printDoc(map[string]any{"steps": steps}); done {
		return err
	}
	w := tabwriter.NewWriter(o.streams.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "STEP\tOBJECT OR CHECK\tSTATE\tDETAIL")
	for _, s := range steps {
		for _, obj := range s.Objects {
			fmt.Fprintf(w, "%s\t%s\t%s\t\n", s.Step, objectRef(obj.Kind, obj.Namespace, obj.Name), obj.State)
		}
		for _, c := range s.Checks {
			state := "ok"
			if !c.OK {
				state = "not ok: " + c.Reason
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.Step, "check: "+c.Check, state, c.Message)
		}
		if s.Error != "" {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.Step, "(error)", "unknown", s.Error)
		}
	}
	return w.Flush()
}
