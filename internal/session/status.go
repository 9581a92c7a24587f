package session

import (
	"context"
	"slices"
	"sync"

	"github.com/vllm-hpa/vllm-hpa/internal/owner"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/deploy"
)

// The states an object of the stack can be in, as status reports them.
const (
	StatePresent = "present" // this instance's (or a shared part it uses)
	StateShared  = "shared"  // a shared part other instances use, not this one
	StateAdopted = "adopted" // taken over with --adopt
	StateForeign = "foreign" // exists, not vllm-hpa's
	StateOther   = "other"   // another instance's
	StateAbsent  = "absent"
	StateUnknown = "unknown" // could not be read (see error)
)

// ObjectStatus is one object of a step and whether it is there.
type ObjectStatus struct {
	Kind      string   `json:"kind"`
	Namespace string   `json:"namespace,omitempty"`
	Name      string   `json:"name"`
	State     string   `json:"state"`
	Users     []string `json:"users,omitempty"` // instances using a shared part
	Owner     string   `json:"owner,omitempty"` // who holds a foreign or other object
	Error     string   `json:"error,omitempty"`
}

// StepStatus is one step's objects and checks.
type StepStatus struct {
	Step    string         `json:"step"`
	Objects []ObjectStatus `json:"objects"`
	Checks  []step.Result  `json:"checks"`
	Error   string         `json:"error,omitempty"`
}

// Status reads every step's objects and checks concurrently, changing
// nothing; each goroutine writes only its own entries.
func (s *Session) Status(ctx context.Context) []StepStatus {
	out := make([]StepStatus, len(steps.Ordered))
	var wg sync.WaitGroup
	for i, def := range steps.Ordered {
		name := def.Name()
		out[i] = StepStatus{Step: name, Objects: []ObjectStatus{}, Checks: []step.Result{}}
		st, _ := s.Stack.Step(name)
		plan, err := st.Plan(ctx)
		if err != nil {
			out[i].Error = err.Error()
			continue
		}
		out[i].Objects = make([]ObjectStatus, len(plan.Objects))
		wg.Add(1)
		go func() { // the only writer of out[i].Checks and out[i].Error
			defer wg.Done()
			results, err := st.Check(ctx)
			out[i].Checks = append(out[i].Checks, results...)
			if err != nil {
				out[i].Error = err.Error()
			}
		}()
		shared := steps.Shared(def)
		for j, obj := range plan.Objects {
			out[i].Objects[j] = ObjectStatus{Kind: obj.GetKind(), Namespace: obj.GetNamespace(), Name: obj.GetName()}
			wg.Add(1)
			go func() {
				defer wg.Done()
				so := &out[i].Objects[j]
				live, err := s.Deps.Kube.Get(ctx, obj)
				if err != nil {
					so.State, so.Error = StateUnknown, err.Error()
					return
				}
				so.State, so.Users, so.Owner = objectState(owner.Judge(live, s.Config.Instance, shared))
			}()
		}
	}
	// How the GPU nodes get the image, with the deploy step's checks
	// (advice only; the cluster read as preconditions read it).
	var image step.Result
	imageRead := false
	if slices.Contains(s.opts.Steps, deploy.Name) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p, _, ok := s.imageStart(ctx); ok {
				image, imageRead = step.Result{Step: deploy.Name, Check: p.Check, OK: p.OK, Message: p.Message}, true
			}
		}()
	}
	wg.Wait()
	for i := range out {
		if imageRead && out[i].Step == deploy.Name {
			out[i].Checks = append(out[i].Checks, image)
		}
	}
	return out
}

// objectState names a judgement as status shows it.
func objectState(j owner.Judgement) (state string, users []string, who string) {
	switch j.Verdict {
	case owner.Absent:
		return StateAbsent, nil, ""
	case owner.Foreign:
		return StateForeign, nil, j.Owner
	case owner.Other:
		return StateOther, nil, j.Owner
	case owner.Shared:
		return StateShared, j.Users, ""
	}
	if j.Adopted {
		return StateAdopted, j.Users, ""
	}
	return StatePresent, j.Users, ""
}
