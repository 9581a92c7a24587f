// Package steps is the walkthrough's one ordered list of steps: up applies
// it in order, cleanup deletes it in reverse, verify and status check it,
// and the command line has a command per step. Each step is a package of
// its own (internal/steps/<name>, beside its template in templates/);
// adding one is that package and a line here.
package steps

import (
	"context"
	"fmt"
	"strings"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/adapter"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/deploy"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/hpa"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/identity"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/monitor"
)

// Ordered are the walkthrough's steps, in its order.
var Ordered = []step.Definition{
	deploy.Definition{},
	monitor.Definition{},
	adapter.Definition{},
	identity.Definition{},
	hpa.Definition{},
}

// Names are the steps' names in order.
func Names() []string {
	out := make([]string, len(Ordered))
	for i, d := range Ordered {
		out[i] = d.Name()
	}
	return out
}

// Lookup finds a step by name.
func Lookup(name string) (step.Definition, bool) {
	for _, d := range Ordered {
		if d.Name() == name {
			return d, true
		}
	}
	return nil, false
}

// Requires is what the named steps need, together.
func Requires(names []string) step.Requirements {
	var r step.Requirements
	for _, n := range names {
		d, ok := Lookup(n)
		if !ok {
			continue
		}
		if q, ok := d.(step.Requirer); ok {
			need := q.Requires()
			r.Token = r.Token || need.Token
			r.GoogleAPIs = r.GoogleAPIs || need.GoogleAPIs
		}
	}
	return r
}

// Shared reports whether a step's objects are shared by every instance on
// the cluster (a Definition that says so).
func Shared(d step.Definition) bool {
	s, ok := d.(interface{ Shared() bool })
	return ok && s.Shared()
}

// Rendered are the steps that have objects of their own to render, in
// order.
func Rendered() []render.Source {
	var out []render.Source
	for _, d := range Ordered {
		if render.Has(d.Name()) {
			out = append(out, render.Source{Step: d.Name(), Shared: Shared(d)})
		}
	}
	return out
}

// Stack is every step built for one configuration and its clients.
type Stack struct {
	steps []step.Step
}

// New builds every step.
func New(cfg *config.Config, deps step.Deps) *Stack {
	s := &Stack{}
	for _, d := range Ordered {
		s.steps = append(s.steps, d.New(cfg, deps))
	}
	return s
}

// Step returns the named step.
func (s *Stack) Step(name string) (step.Step, error) {
	for _, st := range s.steps {
		if st.Name() == name {
			return st, nil
		}
	}
	return nil, exitcode.With(exitcode.BadInput, fmt.Errorf("unknown step %q: one of %s", name, strings.Join(Names(), ", ")))
}

// Preconditions checks the cluster through the container API before
// anything changes. It needs the cluster's name and location and the GCP
// clients; without a cluster it checks nothing and says so.
func Preconditions(ctx context.Context, cfg *config.Config, deps step.Deps) ([]step.Result, error) {
	report := deps.Reporter()
	if cfg.Cluster == "" {
		report.Action("preconditions", "cluster preconditions not checked: no --cluster/--location given")
		return nil, nil
	}
	c := deps.Cluster
	if c == nil {
		var err error
		if c, err = deps.GCP.Cluster(ctx, cfg.Project, cfg.Location, cfg.Cluster); err != nil {
			return nil, err
		}
	}
	var results []step.Result
	var failed []string
	for _, p := range gcp.CheckCluster(c, gcp.ClusterWants{Project: cfg.Project, Location: cfg.Location, Cluster: cfg.Cluster, Accelerator: cfg.Workload.Accelerator}) {
		r := step.Result{Step: "preconditions", Check: p.Check, OK: p.OK, Message: p.Message}
		if !p.OK {
			r.Reason = "NotMet"
			r.Message += "; fix: " + p.Fix
			failed = append(failed, p.Message+"; fix: "+p.Fix)
		}
		report.Result(r)
		results = append(results, r)
	}
	if len(failed) > 0 {
		return results, exitcode.With(exitcode.Precondition, fmt.Errorf("cluster %s is not ready for the stack (nothing was changed):\n  %s", cfg.Cluster, strings.Join(failed, "\n  ")))
	}
	return results, nil
}
