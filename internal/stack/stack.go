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
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// Order is the walkthrough's order of steps; cleanup runs it backwards.
var Order = []string{"deploy", "monitor", "adapter", "identity", "hpa"}

// Stack is the set of steps for one configuration.
type Stack struct {
	cfg   *config.Config
	steps []step.Step
}

// New assembles the stack's steps.
func New(cfg *config.Config) *Stack {
	s := &Stack{cfg: cfg}
	for _, name := range Order {
		s.steps = append(s.steps, &baseStep{name: name, cfg: cfg})
	}
	return s
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

type baseStep struct {
	name string
	cfg  *config.Config
}

func (b *baseStep) Name() string { return b.name }

func (b *baseStep) Plan(ctx context.Context) (*step.Plan, error) {
	p := &step.Plan{Step: b.name}
	switch b.name {
	case "identity":
		p.GCPCalls = IdentityCalls(b.cfg, "")
		objs, err := render.Objects(b.cfg, "adapter")
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			if o.GetKind() == "ServiceAccount" && b.cfg.Identity.Mode == "gsa" {
				p.Objects = append(p.Objects, o)
			}
		}
	default:
		objs, err := render.Objects(b.cfg, b.name)
		if err != nil {
			return nil, err
		}
		p.Objects = objs
	}
	return p, nil
}

func (b *baseStep) notBuilt(action string) error {
	return fmt.Errorf("%s %s: %w (the Kubernetes and GCP actions come in later releases; use --dry-run or `vllm-hpa render`)", action, b.name, ErrNotBuilt)
}

func (b *baseStep) Apply(ctx context.Context) error { return b.notBuilt("apply") }
func (b *baseStep) Check(ctx context.Context) ([]step.Result, error) {
	return nil, b.notBuilt("check")
}
func (b *baseStep) Delete(ctx context.Context) error { return b.notBuilt("delete") }

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
