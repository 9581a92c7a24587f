package steps

import (
	"context"

	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/adapter"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/identity"
)

// unused is a step the configured backend does not use: applying it does
// nothing and says so, checking it passes with why, and cleanup still
// removes what an earlier run built.
type unused struct {
	step.Step
	report step.Reporter
	why    string
	// mayPass, if set, says whether Delete may pass over the step without
	// its clients (the identity without Google credentials, when this
	// instance never used the adapter route).
	mayPass func(ctx context.Context) (bool, error)
}

// PlanDelete is the step's own, unless mayPass lets it pass over it.
func (u *unused) PlanDelete(ctx context.Context, pending step.Pending) (*step.Plan, error) {
	if u.mayPass != nil {
		pass, err := u.mayPass(ctx)
		if err != nil {
			return nil, err
		}
		if pass {
			return &step.Plan{Step: u.Name(), Notes: []string{"nothing to delete: the instance did not use the adapter route"}}, nil
		}
	}
	return u.Step.PlanDelete(ctx, pending)
}

// Delete is the step's own, unless mayPass lets it pass over a step that
// holds nothing of this instance and could not even be read.
func (u *unused) Delete(ctx context.Context) error {
	if u.mayPass != nil {
		pass, err := u.mayPass(ctx)
		if err != nil {
			return err
		}
		if pass {
			u.report.Action(u.Name(), "nothing to delete: instance did not use the adapter route (its Google parts were not read: no Google credentials)")
			return nil
		}
	}
	return u.Step.Delete(ctx)
}

func (u *unused) Plan(ctx context.Context) (*step.Plan, error) {
	return &step.Plan{Step: u.Name(), Notes: []string{u.why}}, nil
}

func (u *unused) Apply(ctx context.Context) error {
	u.report.Action(u.Name(), u.why)
	return nil
}

func (u *unused) Check(ctx context.Context) ([]step.Result, error) {
	return []step.Result{{Step: u.Name(), Check: u.Name() + " not used", OK: true, Reason: "NotUsed", Message: u.why}}, nil
}

// Retire runs once up applied every step and the HPA reads its metric
// from the configured backend: it removes what this instance built for
// the other backend, by cleanup's rules (shared parts only when no other
// instance uses them), so that the HPA never waits on a route being taken
// down. Native: the identity and the adapter, when this instance used
// the adapter (its mark is on the adapter's objects); the identity's
// Google parts need Google credentials, and without them are left with a
// word. Every backend: the monitor step's objects of the other route.
func (s *Stack) Retire(ctx context.Context) error {
	report := s.deps.Reporter()
	if s.cfg.Native() {
		ad, err := s.Step(adapter.Name)
		if err != nil {
			return err
		}
		inner := ad.(*unused).Step
		used, err := s.usesAdapter(ctx)
		if err != nil {
			return err
		}
		if used {
			report.Action(adapter.Name, "instance "+s.cfg.Instance+" used the adapter route: retiring its identity and adapter parts now that the HPA reads the native metric (shared parts stay while other instances use them)")
			id, err := s.Step(identity.Name)
			if err != nil {
				return err
			}
			if s.deps.GCP == nil {
				report.Action(identity.Name, "the Google service account and its bindings left in place: no Google credentials (with them, `vllm-hpa cleanup identity` removes them)")
			} else if err := id.(*unused).Step.Delete(ctx); err != nil {
				return err
			}
			if err := inner.Delete(ctx); err != nil {
				return err
			}
		}
	}
	for _, st := range s.steps {
		if r, ok := st.(step.Retirer); ok {
			if err := r.Retire(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// usesAdapter reports whether this instance uses the adapter route: a
// cleanup of the adapter step would remove or release something of it.
func (s *Stack) usesAdapter(ctx context.Context) (bool, error) {
	ad, err := s.Step(adapter.Name)
	if err != nil {
		return false, err
	}
	if u, ok := ad.(*unused); ok {
		ad = u.Step
	}
	plan, err := ad.PlanDelete(ctx, step.Pending{})
	if err != nil {
		return false, err
	}
	return usedByThisInstance(plan), nil
}

// usedByThisInstance reports whether a cleanup plan would remove or
// release anything: the instance uses what the step built.
func usedByThisInstance(p *step.Plan) bool {
	for _, r := range p.Removals {
		switch r.Action {
		case step.RemoveDelete, step.RemoveUnuse, step.RemoveRelease:
			return true
		}
	}
	return false
}
