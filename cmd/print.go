package cmd

import (
	"context"
	"fmt"
	"strings"

	"github.com/vllm-hpa/vllm-hpa/internal/owner"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/session"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
)

// planJSON is the --output json form of a dry run.
type planJSON struct {
	Command string         `json:"command"`
	OK      bool           `json:"ok"`
	DryRun  bool           `json:"dryRun"`
	Steps   []stepPlanJSON `json:"steps"`
	Notes   []string       `json:"notes,omitempty"`
}

type stepPlanJSON struct {
	Step     string         `json:"step"`
	Objects  []objectJSON   `json:"objects"`
	GCPCalls []step.GCPCall `json:"gcpCalls"`
	Removals []step.Removal `json:"removals,omitempty"`
}

type objectJSON struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
	Manifest   any    `json:"manifest"`
}

// printPlans prints what the steps would do. Text: a summary per step;
// json and yaml: planJSON (render prints the objects to apply). The token
// Secret never appears with data: a placeholder applied by someone else
// would overwrite the real token.
func (o *stackOptions) printPlans(ctx context.Context, s *steps.Stack, names []string) error {
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
	var notes []string
	for _, p := range plans {
		for _, n := range p.Notes {
			notes = append(notes, p.Step+": "+n)
		}
		for _, obj := range p.Objects {
			if render.IsTokenSecret(o.cfg, obj) {
				notes = append(notes, render.TokenSecretNote(o.cfg))
			}
		}
	}
	switch o.output {
	case outputJSON, outputYAML: // one document, in either form
		doc := planJSON{Command: o.command, OK: true, DryRun: true, Steps: []stepPlanJSON{}, Notes: notes}
		for _, p := range plans {
			sp := stepPlanJSON{Step: p.Step, Objects: []objectJSON{}, GCPCalls: p.GCPCalls}
			if sp.GCPCalls == nil {
				sp.GCPCalls = []step.GCPCall{}
			}
			for _, obj := range p.Objects {
				if render.IsTokenSecret(o.cfg, obj) {
					obj = render.WithoutToken(obj)
				}
				sp.Objects = append(sp.Objects, objectJSON{obj.GetAPIVersion(), obj.GetKind(), obj.GetNamespace(), obj.GetName(), obj.Object})
			}
			doc.Steps = append(doc.Steps, sp)
		}
		_, err := o.printDoc(doc)
		return err
	}
	fmt.Fprintln(o.streams.ErrOut, "dry run: nothing is changed")
	for _, p := range plans {
		fmt.Fprintf(out, "%s:\n", p.Step)
		for _, n := range p.Notes {
			fmt.Fprintf(out, "  %s\n", n)
		}
		if len(p.Objects) > 0 {
			fmt.Fprintf(out, "  server-side apply (field manager vllm-hpa, label %s=%s):\n", owner.ManagedByLabel, owner.ManagedByValue)
			for _, obj := range p.Objects {
				line := objectRef(obj.GetKind(), obj.GetNamespace(), obj.GetName())
				if render.IsTokenSecret(o.cfg, obj) {
					line += " (the Hugging Face token from " + tokenSource(o) + "; never shown)"
				}
				fmt.Fprintf(out, "    %s\n", line)
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

func tokenSource(o *stackOptions) string {
	if o.cfg.HFToken.File != "" {
		return o.cfg.HFToken.File
	}
	return "HF_TOKEN"
}

// printDeletePlans is cleanup --dry-run: it reads the cluster (and the
// project, for identity) and prints, per step in cleanup's order, what
// would be deleted, released (adopted objects), left to other instances,
// or kept.
func (o *stackOptions) printDeletePlans(ctx context.Context) error {
	s, err := session.Open(ctx, o.f, o.cfg, session.Options{Purpose: session.PlanDelete, Steps: o.steps})
	if err != nil {
		return err
	}
	plans, err := s.DeletePlans(ctx)
	if err != nil {
		return err
	}
	if o.output != outputText {
		doc := planJSON{Command: o.command, OK: true, DryRun: true, Steps: []stepPlanJSON{}}
		for _, p := range plans {
			rm := p.Removals
			if rm == nil {
				rm = []step.Removal{}
			}
			doc.Steps = append(doc.Steps, stepPlanJSON{Step: p.Step, Objects: []objectJSON{}, GCPCalls: []step.GCPCall{}, Removals: rm})
		}
		_, err := o.printDoc(doc)
		return err
	}
	fmt.Fprintln(o.streams.ErrOut, "dry run: nothing is changed")
	words := map[string]string{step.RemoveDelete: "delete", step.RemoveRelease: "release", step.RemoveUnuse: "leave (still used)", step.RemoveKeep: "keep", step.RemoveAbsent: "absent"}
	for _, p := range plans {
		fmt.Fprintf(o.streams.Out, "%s:\n", p.Step)
		for _, r := range p.Removals {
			line := fmt.Sprintf("  %-18s %s", words[r.Action], r.Object)
			if r.Reason != "" {
				line += ": " + r.Reason
			}
			fmt.Fprintln(o.streams.Out, strings.TrimRight(line, " "))
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
