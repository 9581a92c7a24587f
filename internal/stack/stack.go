// Package stack assembles the walkthrough's steps from one configuration and
// the clients they act through.
package stack

import (
	"context"
	"fmt"

	container "google.golang.org/api/container/v1"
	"strings"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
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
	// GCP are the Google API clients; nil for render and dry runs, or when
	// they could not be opened (GCPError says why).
	GCP      *gcp.Clients
	GCPError error
	// Cluster is the GKE cluster as the container API described it, when
	// already read (to connect); Preconditions reads it otherwise.
	Cluster *container.Cluster
	// ForceConflicts takes over fields and APIServices owned by others.
	ForceConflicts bool
	// Adopt takes over existing objects (and the Google service account)
	// vllm-hpa did not create, marking them as adopted.
	Adopt bool
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
		&identityStep{cfg: cfg, deps: deps},
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

// Preconditions checks the cluster through the container API before
// anything changes. It needs the cluster's name and location and the GCP
// clients; without a cluster it checks nothing and says so.
func (s *Stack) Preconditions(ctx context.Context, deps Deps) ([]step.Result, error) {
	cfg := s.cfg
	if cfg.Cluster == "" {
		deps.Report.Action("preconditions", "cluster preconditions not checked: no --cluster/--location given")
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
		deps.Report.Result(r)
		results = append(results, r)
	}
	if len(failed) > 0 {
		return results, exitcode.With(exitcode.Precondition, fmt.Errorf("cluster %s is not ready for the stack (nothing was changed):\n  %s", cfg.Cluster, strings.Join(failed, "\n  ")))
	}
	return results, nil
}
