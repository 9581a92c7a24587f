// Package session is one command's run against a cluster and a project:
// it connects once, settles the route the HPA reads (the backend), checks
// the preconditions and runs the steps. Commands parse, validate and
// print; up, cleanup, verify, status and tune all open a Session.
package session

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/vllm-hpa/vllm-hpa/internal/cmdutil"
	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/output"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/hpa"
	"github.com/vllm-hpa/vllm-hpa/internal/tune"
)

// Purpose is what a command opens a session for; it decides what is
// connected and how the backend is settled.
type Purpose int

const (
	// Apply: a step's command, or up (Options.Whole).
	Apply Purpose = iota
	// Delete: cleanup, on the route the stack has.
	Delete
	// PlanDelete: cleanup --dry-run; reads only.
	PlanDelete
	// Read: verify and status, on the route the stack has unless
	// hpa.backend is given.
	Read
	// Tune: tune, which reaches the server through the cluster and,
	// with --apply, sets the HPA's targets (ApplyHPA settles the backend
	// then).
	Tune
)

// Options open a session.
type Options struct {
	Purpose Purpose
	// Steps are the steps the command runs, in its order.
	Steps []string
	// Whole: up, which keeps the live route and retires the other one.
	Whole bool
	// Progress is nil for a command that prints only its result.
	Progress *output.Progress
	// ChecksOnly: preflight, which changes nothing and reports Google
	// APIs it cannot reach as a check of its own rather than refusing.
	ChecksOnly bool
	// NoWait: cleanup --wait=false (step.Deps.NoWait).
	NoWait bool
}

// Session is a command connected to its cluster and project, with
// hpa.backend settled.
type Session struct {
	Config *config.Config
	Deps   step.Deps
	Stack  *steps.Stack
	opts   Options
}

// Open connects for opts.Purpose and settles the backend: a plain up,
// cleanup, verify or status keeps the route the live HPA reads; up,
// verify, status and tune then decide auto (and check native). A step
// that needs the Google APIs without them is refused here, before any
// change.
func Open(ctx context.Context, f *cmdutil.Factory, cfg *config.Config, opts Options) (*Session, error) {
	s := &Session{Config: cfg, opts: opts}
	deps, err := f.Connect(ctx, cfg, need(cfg, opts), opts.Progress)
	if _, off := gcp.As[*gcp.ServiceDisabledError](err); off && deps.GCP != nil && opts.Purpose != Read {
		// The cluster read through the container API found an API off:
		// name every API the run needs that is, in one list.
		if serr := steps.CheckServices(ctx, cfg, deps, opts.Steps); serr != nil {
			err = serr
		}
	}
	if err != nil {
		return nil, s.identityHint(err)
	}
	s.Deps = deps
	s.Deps.NoWait = opts.NoWait
	if opts.Purpose == Delete && !opts.NoWait {
		s.Deps.Namespaces = &step.NamespaceWaits{}
	}
	if opts.Purpose != Tune {
		if err := s.settleBackend(ctx); err != nil {
			return nil, err
		}
	}
	if opts.Purpose != Read && opts.Purpose != Tune && !opts.ChecksOnly && !cfg.Native() && s.needsGoogle() && s.Deps.GCP == nil && s.Deps.GCPError != nil {
		// The adapter route's identity needs the Google APIs: said
		// before anything changes.
		return nil, s.identityHint(exitcode.With(exitcode.Precondition, s.Deps.GCPError))
	}
	s.Stack = steps.New(cfg, s.Deps)
	return s, nil
}

// settleBackend keeps the live route (a plain up, cleanup, verify or
// status) and decides auto or checks native (all but cleanup): up says so
// as a phase of its own.
func (s *Session) settleBackend(ctx context.Context) error {
	cfg := s.Config
	if s.opts.Whole || s.opts.Purpose != Apply {
		if err := steps.InferBackend(ctx, cfg, s.Deps); err != nil {
			return err
		}
	}
	if s.opts.Purpose == Delete || s.opts.Purpose == PlanDelete || cfg.HPA.Backend == config.BackendAdapter {
		return nil
	}
	resolve := func() error { return steps.ResolveBackend(ctx, cfg, &s.Deps) }
	if s.opts.Purpose == Apply {
		return s.phase("backend", resolve)
	}
	return resolve()
}

// need is what a purpose connects to. Steps that call Google, and the
// hpa step (which explains a metric the adapter does not serve from IAM
// and Cloud Monitoring), want the Google APIs; optional at connection,
// as the backend (native needs no IAM) is known only once the cluster is
// read: Open refuses before any change when the steps need them after
// all.
func need(cfg *config.Config, o Options) cmdutil.Need {
	switch o.Purpose {
	case Read:
		return cmdutil.Need{GoogleAPIs: true, GCPOptional: true}
	case Tune:
		return cmdutil.Need{GCPOptional: true}
	}
	r := steps.Requires(cfg, o.Steps)
	return cmdutil.Need{GoogleAPIs: r.GoogleAPIs || r.ExplainsWithGoogle, GCPOptional: true}
}

func (s *Session) needsGoogle() bool { return steps.Requires(s.Config, s.opts.Steps).GoogleAPIs }

// identityHint adds, to a failure to reach the Google APIs, that the
// Kubernetes-only steps run without them.
func (s *Session) identityHint(err error) error { return IdentityHint(s.Config, s.opts.Steps, err) }

// IdentityHint adds, to a failure to reach the Google APIs of a command
// that runs the named steps, that the Kubernetes-only steps run without
// them (unless the cluster itself is reached through the Google APIs).
func IdentityHint(cfg *config.Config, names []string, err error) error {
	if cmdutil.ViaGKE(cfg) || !errors.As(err, new(*gcp.NoCredentialsError)) {
		return err
	}
	switch google := steps.GoogleSteps(cfg, names); {
	case slices.Equal(google, []string{"identity"}):
		return exitcode.With(exitcode.Precondition, fmt.Errorf("%w; the identity step needs Google credentials: give them, or leave it out with --skip identity", err))
	case len(google) > 0:
		return exitcode.With(exitcode.Precondition, fmt.Errorf("%w; the %s step(s) call Google APIs (%s): give them credentials", err, strings.Join(google, ", "), strings.Join(steps.RequiredServices(cfg, google), ", ")))
	}
	return err
}

// Run applies the steps (Apply) or deletes them (Delete), in order, after
// the preconditions; up then retires what this instance built for the
// other route.
func (s *Session) Run(ctx context.Context) error {
	switch s.opts.Purpose {
	case Apply:
		if s.Config.Cluster != "" || s.Deps.ClusterName != "" || s.needsGoogle() {
			// The cluster's and the project's preconditions, before
			// anything changes.
			if err := s.phase("preconditions", func() error {
				_, err := steps.Preconditions(ctx, s.Config, s.Deps, s.opts.Steps)
				return err
			}); err != nil {
				return err
			}
		}
	case Delete:
		if s.needsGoogle() && s.Deps.GCP != nil {
			// Cleanup writes IAM too: the APIs it calls, before the
			// first deletion.
			if err := s.phase("preconditions", func() error { return steps.CheckServices(ctx, s.Config, s.Deps, s.opts.Steps) }); err != nil {
				return err
			}
		}
		// A step that could not finish its part stops the cleanup
		// before anything is deleted.
		for _, name := range s.opts.Steps {
			st, err := s.Stack.Step(name)
			if err != nil {
				return err
			}
			if g, ok := st.(step.DeleteGuard); ok {
				if err := g.GuardDelete(ctx); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
		}
	default:
		return fmt.Errorf("session: Run is for Apply and Delete")
	}
	for i, name := range s.opts.Steps {
		st, err := s.Stack.Step(name)
		if err != nil {
			return err
		}
		act := st.Apply
		if s.opts.Purpose == Delete {
			act = st.Delete
			if i == len(s.opts.Steps)-1 && s.Deps.Namespaces != nil {
				// The namespaces every step deleted go together, as part
				// of the last step (step.Deps.Namespaces).
				act = func(ctx context.Context) error {
					if err := st.Delete(ctx); err != nil {
						return err
					}
					return s.Deps.Namespaces.Wait(ctx)
				}
			}
		}
		if err := s.phase(name, func() error { return act(ctx) }); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if s.opts.Whole && s.opts.Purpose == Apply && slices.Contains(s.opts.Steps, hpa.Name) {
		// The HPA reads its metric from the configured backend (the hpa
		// step waited for a value of it): what this instance built for
		// the other one can go. Not when hpa was skipped: the HPA may
		// still read the old route. Each step says what it removes, in
		// its own record.
		if err := s.Stack.Retire(ctx); err != nil {
			return fmt.Errorf("retiring the other backend's parts: %w", err)
		}
	}
	return nil
}

// DeletePlans are cleanup --dry-run's plans: per step in cleanup's order,
// what would be deleted, released, left to other instances, or kept.
func (s *Session) DeletePlans(ctx context.Context) ([]*step.Plan, error) {
	pending := step.Pending{}
	var plans []*step.Plan
	for _, name := range s.opts.Steps {
		st, err := s.Stack.Step(name)
		if err != nil {
			return nil, err
		}
		p, err := st.PlanDelete(ctx, pending)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		plans = append(plans, p)
	}
	return plans, nil
}

// ApplyTargets sets each metric's recommended target (recs[i] is the
// i-th metric of hpa.metric; one without a target keeps its own, and says
// so), then applies the HPA with them: tune --apply. Targets that cannot
// be applied, or none at all, fail the check (exit 3) and change nothing.
func (s *Session) ApplyTargets(ctx context.Context, recs []*tune.Recommendation) error {
	cfg, set := s.Config, 0
	for i, r := range recs {
		key := cfg.MetricKeys()[i]
		if r.Target <= 0 {
			s.Deps.Reporter().Action("tune", fmt.Sprintf("%s keeps its target (%s): %s", key, cfg.TargetKey(key), r.Reasoning))
			continue
		}
		cfg.SetTarget(key, r.Target)
		set++
	}
	if set == 0 {
		why := "no recommendation"
		if len(recs) > 0 {
			why = recs[0].Reasoning
		}
		return exitcode.With(exitcode.CheckFailed, fmt.Errorf("nothing to apply: %s", why))
	}
	if err := cfg.ValidateWithoutProject(); err != nil {
		return exitcode.With(exitcode.CheckFailed, fmt.Errorf("the recommended targets cannot be applied: %w", err))
	}
	return s.ApplyHPA(ctx)
}

// ApplyHPA applies the hpa step alone on the route the HPA reads, unless
// hpa.backend says otherwise (tune --apply, once it has set the targets),
// as its own phase.
func (s *Session) ApplyHPA(ctx context.Context) error {
	return s.phase(hpa.Name, func() error {
		if err := s.settleBackend(ctx); err != nil {
			return err
		}
		s.Stack = steps.New(s.Config, s.Deps)
		st, err := s.Stack.Step(hpa.Name)
		if err != nil {
			return err
		}
		return st.Apply(ctx)
	})
}

// phase runs fn as a phase of the run's progress.
func (s *Session) phase(name string, fn func() error) error {
	s.started(name)
	err := fn()
	s.done(name, err)
	return err
}

func (s *Session) started(name string) {
	if s.opts.Progress != nil {
		s.opts.Progress.StepStarted(name)
	}
}

func (s *Session) done(name string, err error) {
	if s.opts.Progress != nil {
		s.opts.Progress.StepDone(name, err)
	}
}

// ImageAdvice says which of the cluster's GPU node pools pull the vLLM
// image whole and what cuts the pull (gcp.ImageStart), for a scale-up
// whose biggest stage was the image pull; "" when none does or the cluster
// cannot be read: the generic advice stands.
func (s *Session) ImageAdvice(ctx context.Context) string {
	if p, slow, ok := s.imageStart(ctx); ok && slow {
		return p.Message
	}
	return ""
}

// imageStart judges how the cluster's GPU nodes get the vLLM image; false
// when the cluster cannot be read (no Google clients, no GKE cluster
// named, or the container API refuses).
func (s *Session) imageStart(ctx context.Context) (p gcp.Precondition, slow, ok bool) {
	cfg := s.Config
	location, name := steps.NamedCluster(cfg, s.Deps)
	c, err := steps.ReadCluster(ctx, cfg, &s.Deps)
	if c == nil || err != nil {
		return p, false, false
	}
	wants := gcp.ClusterWants{Project: cfg.Project, Location: location, Cluster: name, Accelerator: cfg.Workload.Accelerator}
	p, slow = gcp.ImageStart(c, wants, cfg.Workload.Image)
	return p, slow, true
}
