// Package stack assembles the walkthrough's steps from one configuration and
// the clients they act through.
package stack

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// Order is the walkthrough's order of steps; cleanup runs it backwards.
var Order = []string{"deploy", "monitor", "adapter", "identity", "hpa"}

// Deps are the clients and settings the steps act through.
type Deps struct {
	// Kube is the Kubernetes connection; nil for render and dry runs.
	Kube *kube.Client
	// Report receives progress; nil discards it.
	Report step.Reporter
	// ForceConflicts takes over fields and APIServices owned by others.
	ForceConflicts bool
}

// Stack is the set of steps for one configuration.
type Stack struct {
	cfg   *config.Config
	steps []step.Step
}

// New assembles the stack's steps.
func New(cfg *config.Config, deps Deps) *Stack {
	if deps.Report == nil {
		deps.Report = step.Discard
	}
	return &Stack{cfg: cfg, steps: []step.Step{
		newDeployStep(cfg, deps),
		newMonitorStep(cfg, deps),
		newAdapterStep(cfg, deps),
		&identityStep{cfg: cfg},
		newHPAStep(cfg, deps),
	}}
}

// Steps returns the steps in the walkthrough's order.
func (s *Stack) Steps() []step.Step { return s.steps }

// Step returns the named step.
func (s *Stack) Step(name string) (step.Step, error) {
	for _, st := range s.steps {
		if st.Name() == name {
			return st, nil
		}
	}
	return nil, exitcode.With(exitcode.BadInput, fmt.Errorf("unknown step %q: one of %s", name, strings.Join(Order, ", ")))
}

// ErrNotBuilt is returned by actions not built yet.
var ErrNotBuilt = errors.New("not built yet")

// identityStep is the Workload Identity step. Its Google API calls come
// with the GCP clients; until then it plans but does not act.
type identityStep struct {
	cfg *config.Config
}

func (s *identityStep) Name() string { return "identity" }

func (s *identityStep) Plan(ctx context.Context) (*step.Plan, error) {
	p := &step.Plan{Step: s.Name(), GCPCalls: IdentityCalls(s.cfg, "")}
	if s.cfg.Identity.Mode == "gsa" {
		objs, err := render.Objects(s.cfg, "adapter")
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			if o.GetKind() == "ServiceAccount" {
				p.Objects = append(p.Objects, o)
			}
		}
	}
	return p, nil
}

func (s *identityStep) notBuilt(action string) error {
	return fmt.Errorf("%s identity: the Google API calls are %w; use --dry-run to see them", action, ErrNotBuilt)
}

func (s *identityStep) Apply(ctx context.Context) error { return s.notBuilt("apply") }
func (s *identityStep) Check(ctx context.Context) ([]step.Result, error) {
	return nil, s.notBuilt("check")
}
func (s *identityStep) Delete(ctx context.Context) error { return s.notBuilt("delete") }

// IdentityCalls lists the Google API calls of the identity step. The
// project number is needed only by the direct route; "" shows a placeholder.
func IdentityCalls(cfg *config.Config, projectNumber string) []step.GCPCall {
	project := "projects/" + cfg.Project
	if cfg.Identity.Mode == "direct" {
		if projectNumber == "" {
			projectNumber = "PROJECT_NUMBER"
		}
		return []step.GCPCall{{
			API: "cloudresourcemanager.googleapis.com", Method: "projects.setIamPolicy", Resource: project,
			Role: "roles/monitoring.viewer", Member: cfg.PrincipalMember(projectNumber),
			Note: "add this member only (etag-guarded read-modify-write)",
		}}
	}
	gsa := project + "/serviceAccounts/" + cfg.GSAEmail()
	return []step.GCPCall{
		{API: "iam.googleapis.com", Method: "projects.serviceAccounts.create", Resource: project,
			Member: cfg.GSAMember(), Note: fmt.Sprintf("account %q, display name %q, if missing", cfg.Identity.GSAName, cfg.Identity.GSADisplayName)},
		{API: "cloudresourcemanager.googleapis.com", Method: "projects.setIamPolicy", Resource: project,
			Role: "roles/monitoring.viewer", Member: cfg.GSAMember(),
			Note: "add this member only (etag-guarded read-modify-write)"},
		{API: "iam.googleapis.com", Method: "projects.serviceAccounts.setIamPolicy", Resource: gsa,
			Role: "roles/iam.workloadIdentityUser", Member: cfg.KSAMember(),
			Note: "add this member only (etag-guarded read-modify-write)"},
	}
}
