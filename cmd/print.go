package cmd

import (
	"context"
	"fmt"
	"strings"

	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/stack"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"sigs.k8s.io/yaml"
)

// planJSON is the --output json form of a dry run.
type planJSON struct {
	DryRun bool           `json:"dryRun"`
	Steps  []stepPlanJSON `json:"steps"`
}

type stepPlanJSON struct {
	Step     string         `json:"step"`
	Objects  []objectJSON   `json:"objects"`
	GCPCalls []step.GCPCall `json:"gcpCalls"`
}

type objectJSON struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
	Manifest   any    `json:"manifest"`
}

// printPlans prints what the steps would do. Text: a summary per step;
// yaml: the objects as one apply-able stream; json: planJSON.
func (o *runOptions) printPlans(ctx context.Context, s *stack.Stack, names []string) error {
	var plans []*step.Plan
	for _, name := range names {
		st, err := s.Step(name)
		if err != nil {
			return err
		}
		p, err := st.Plan(ctx)
		if err != nil {
			return err
		}
		plans = append(plans, p)
	}
	out := o.streams.Out
	switch o.output {
	case outputJSON:
		doc := planJSON{DryRun: true, Steps: []stepPlanJSON{}}
		for _, p := range plans {
			sp := stepPlanJSON{Step: p.Step, Objects: []objectJSON{}, GCPCalls: p.GCPCalls}
			if sp.GCPCalls == nil {
				sp.GCPCalls = []step.GCPCall{}
			}
			for _, obj := range p.Objects {
				sp.Objects = append(sp.Objects, objectJSON{obj.GetAPIVersion(), obj.GetKind(), obj.GetNamespace(), obj.GetName(), obj.Object})
			}
			doc.Steps = append(doc.Steps, sp)
		}
		_, err := o.printDoc(doc)
		return err
	case outputYAML:
		for _, p := range plans {
			for _, obj := range p.Objects {
				y, err := yaml.Marshal(obj.Object)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "---\n# Source: vllm-hpa %s\n%s", p.Step, y)
			}
		}
		return nil
	}
	fmt.Fprintln(o.streams.ErrOut, "dry run: nothing is changed")
	for _, p := range plans {
		fmt.Fprintf(out, "%s:\n", p.Step)
		if len(p.Objects) > 0 {
			fmt.Fprintf(out, "  server-side apply (field manager vllm-hpa, label %s=%s):\n", render.ManagedByLabel, render.ManagedByValue)
			for _, obj := range p.Objects {
				fmt.Fprintf(out, "    %s\n", objectRef(obj.GetKind(), obj.GetNamespace(), obj.GetName()))
			}
		}
		if len(p.GCPCalls) > 0 {
			fmt.Fprintln(out, "  Google API calls:")
			for _, c := range p.GCPCalls {
				fmt.Fprintf(out, "    %s %s %s\n", c.API, c.Method, c.Resource)
				if c.Role != "" {
					fmt.Fprintf(out, "      role:   %s\n", c.Role)
				}
				if c.Member != "" {
					fmt.Fprintf(out, "      member: %s\n", c.Member)
				}
				if c.Note != "" {
					fmt.Fprintf(out, "      (%s)\n", c.Note)
				}
			}
		}
	}
	return nil
}

// objectRef names an object as kubectl does: Kind namespace/name.
func objectRef(kind, namespace, name string) string {
	if namespace == "" {
		return kind + " " + name
	}
	return kind + " " + namespace + "/" + name
}

func splitLines(s string) []string {
	return strings.Split(strings.TrimRight(s, "\n"), "\n")
}
