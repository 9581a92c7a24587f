package stack

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"cloud.google.com/go/iam/admin/apiv1/adminpb"
	"cloud.google.com/go/iam/apiv1/iampb"
	"cloud.google.com/go/resourcemanager/apiv3/resourcemanagerpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// Roles the identity step grants.
const (
	RoleMonitoringViewer = "roles/monitoring.viewer"
	RoleWorkloadIdentity = "roles/iam.workloadIdentityUser"
	// WorkloadIdentityAnnotation names the Google service account a KSA acts as.
	WorkloadIdentityAnnotation = "iam.gke.io/gcp-service-account"
)

// gsaMarker starts the description of every Google service account
// vllm-hpa creates: cleanup deletes an account only if it carries it.
const gsaMarker = "Created by vllm-hpa"

// identityStep gives the adapter Workload Identity: Google IAM through the
// GCP clients, and the KSA annotation through Kubernetes.
type identityStep struct {
	cfg  *config.Config
	deps Deps
}

func (s *identityStep) Name() string { return "identity" }

func (s *identityStep) Plan(ctx context.Context) (*step.Plan, error) {
	p := &step.Plan{Step: s.Name(), GCPCalls: IdentityCalls(s.cfg, "")}
	ksa, err := s.renderedKSA()
	if err != nil {
		return nil, err
	}
	p.Objects = []*unstructured.Unstructured{ksa}
	return p, nil
}

// renderedKSA is the adapter's ServiceAccount as the adapter step renders
// it (annotated in gsa mode), so both steps apply the same object.
func (s *identityStep) renderedKSA() (*unstructured.Unstructured, error) {
	objs, err := render.Objects(s.cfg, "adapter")
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		if o.GetKind() == "ServiceAccount" {
			return o, nil
		}
	}
	return nil, errors.New("render: the adapter has no ServiceAccount")
}

func (s *identityStep) clients() (*gcp.Clients, *kube.Client, error) {
	if s.deps.GCP == nil {
		if s.deps.GCPError != nil {
			return nil, nil, fmt.Errorf("Google APIs unreachable: %w", s.deps.GCPError)
		}
		return nil, nil, errors.New("no Google API clients")
	}
	if s.deps.Kube == nil {
		return nil, nil, errors.New("no Kubernetes connection")
	}
	return s.deps.GCP, s.deps.Kube, nil
}

func (s *identityStep) report(msg string) { s.deps.Report.Action(s.Name(), msg) }

func (s *identityStep) Apply(ctx context.Context) error {
	g, k, err := s.clients()
	if err != nil {
		return err
	}
	cfg := s.cfg
	// The KSA must exist before anything is granted to it.
	ksa, err := s.renderedKSA()
	if err != nil {
		return err
	}
	live, err := k.Get(ctx, ksa)
	if err != nil {
		return err
	}
	if live == nil {
		return exitcode.With(exitcode.Precondition, fmt.Errorf("ServiceAccount %s/%s does not exist: run vllm-hpa adapter first", cfg.Adapter.Namespace, cfg.Adapter.ServiceAccount))
	}
	project := gcp.ProjectPolicy(g.Projects, cfg.Project)
	if cfg.Identity.Mode == "direct" {
		member, err := s.principal(ctx)
		if err != nil {
			return err
		}
		if err := s.setMember(ctx, project, RoleMonitoringViewer, member, true); err != nil {
			return err
		}
	} else {
		created, err := s.ensureAccount(ctx)
		if err != nil {
			return err
		}
		if err := s.setMember(ctx, project, RoleMonitoringViewer, cfg.GSAMember(), true); err != nil {
			return err
		}
		account := gcp.AccountPolicy(g.IAM, cfg.Project, cfg.GSAEmail())
		if created {
			// A new account can take a moment to be visible to IAM.
			account = retryNotFound{account}
		}
		if err := s.setMember(ctx, account, RoleWorkloadIdentity, cfg.KSAMember(), true); err != nil {
			return err
		}
	}
	return s.annotate(ctx, k, ksa, live)
}

// principal is the KSA's Workload Identity Federation principal, which
// needs the project number.
func (s *identityStep) principal(ctx context.Context) (string, error) {
	var p *resourcemanagerpb.Project
	_, err := gcp.Retry(ctx, gcp.DefaultBackoff, func(ctx context.Context) (err error) {
		p, err = s.deps.GCP.Projects.GetProject(ctx, &resourcemanagerpb.GetProjectRequest{Name: "projects/" + s.cfg.Project})
		return err
	})
	if err != nil {
		return "", gcp.Classify(err, "get project "+s.cfg.Project)
	}
	return s.cfg.PrincipalMember(strings.TrimPrefix(p.Name, "projects/")), nil
}

// ensureAccount creates the Google service account when missing. An
// existing account is used when vllm-hpa created it, or when adopting is
// allowed; otherwise the name is taken and the step stops.
func (s *identityStep) ensureAccount(ctx context.Context) (created bool, err error) {
	cfg := s.cfg
	a, err := s.getAccount(ctx)
	switch {
	case err == nil && strings.HasPrefix(a.Description, gsaMarker):
		s.report("Google service account " + cfg.GSAEmail() + " exists (created by vllm-hpa)")
		return false, nil
	case err == nil && cfg.Identity.AdoptExistingGSA:
		s.report("Google service account " + cfg.GSAEmail() + " exists (not created by vllm-hpa: used, and left in place by cleanup)")
		return false, nil
	case err == nil:
		return false, exitcode.With(exitcode.Conflict, fmt.Errorf("Google service account %s exists and was not created by vllm-hpa: choose another --gsa-name, or use it with --adopt-existing-gsa (cleanup then leaves it)", cfg.GSAEmail()))
	case status.Code(err) != codes.NotFound:
		return false, gcp.Classify(err, "get service account "+cfg.GSAEmail())
	}
	retries, err := gcp.Retry(ctx, gcp.DefaultBackoff, func(ctx context.Context) error {
		_, err := s.deps.GCP.IAM.CreateServiceAccount(ctx, &adminpb.CreateServiceAccountRequest{
			Name:      "projects/" + cfg.Project,
			AccountId: cfg.Identity.GSAName,
			ServiceAccount: &adminpb.ServiceAccount{
				DisplayName: cfg.Identity.GSADisplayName,
				Description: fmt.Sprintf("%s (instance %s) for the Custom Metrics Stackdriver Adapter; deleted by vllm-hpa cleanup", gsaMarker, cfg.Instance),
			},
		})
		return err
	})
	if status.Code(err) == codes.AlreadyExists && retries > 0 {
		// An earlier attempt created it but its answer was lost: ours if
		// it carries the marker.
		if a, gerr := s.getAccount(ctx); gerr == nil && strings.HasPrefix(a.Description, gsaMarker) {
			err = nil
		}
	}
	if err != nil {
		return false, gcp.Classify(err, "create service account "+cfg.GSAEmail())
	}
	s.report("Google service account " + cfg.GSAEmail() + " created")
	return true, nil
}

// getAccount reads the Google service account, retrying transient errors.
func (s *identityStep) getAccount(ctx context.Context) (a *adminpb.ServiceAccount, err error) {
	_, err = gcp.Retry(ctx, gcp.DefaultBackoff, func(ctx context.Context) (err error) {
		a, err = s.deps.GCP.IAM.GetServiceAccount(ctx, &adminpb.GetServiceAccountRequest{Name: "projects/" + s.cfg.Project + "/serviceAccounts/" + s.cfg.GSAEmail()})
		return err
	})
	return a, err
}

// setMember adds or removes one member of one role by an etag-guarded
// read-modify-write, and reports what it did.
func (s *identityStep) setMember(ctx context.Context, p gcp.Policy, role, member string, present bool) error {
	changed, stats, err := gcp.SetMember(ctx, p, role, member, present, gcp.DefaultBackoff)
	if err != nil {
		verb := "add"
		if !present {
			verb = "remove"
		}
		return gcp.Classify(err, fmt.Sprintf("%s %s for %s on %s", verb, role, member, p.Resource()))
	}
	what := fmt.Sprintf("%s: %s for %s", p.Resource(), role, member)
	switch {
	case !changed && present:
		s.report(what + " already granted")
	case !changed:
		s.report(what + " already absent")
	case present:
		s.report(fmt.Sprintf("%s granted (%s)", what, stats))
	default:
		s.report(fmt.Sprintf("%s removed (%s)", what, stats))
	}
	return nil
}

// retryNotFound retries reads of a just-created account's policy that IAM
// does not see yet.
type retryNotFound struct{ gcp.Policy }

func (r retryNotFound) Get(ctx context.Context) (*iampb.Policy, error) {
	for i := 0; ; i++ {
		p, err := r.Policy.Get(ctx)
		if status.Code(err) != codes.NotFound || i == 5 {
			return p, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(200<<i) * time.Millisecond):
		}
	}
}

// annotate applies the KSA (annotated in gsa mode, not in direct mode) and
// restarts the adapter's pods when the annotation changed: pods pick up a
// changed annotation reliably only when they start.
func (s *identityStep) annotate(ctx context.Context, k *kube.Client, ksa, live *unstructured.Unstructured) error {
	before := live.GetAnnotations()[WorkloadIdentityAnnotation]
	after := ksa.GetAnnotations()[WorkloadIdentityAnnotation]
	_, action, err := k.Apply(ctx, ksa, live, s.deps.ForceConflicts)
	if err != nil {
		return err
	}
	s.report(kube.Ref(ksa) + " " + string(action))
	if before == after {
		return nil
	}
	pods := k.Typed.CoreV1().Pods(s.cfg.Adapter.Namespace)
	sel := labels.Set{"k8s-app": adapterName}.String()
	if err := pods.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: sel}); err != nil {
		return fmt.Errorf("restart the adapter pods: %w", err)
	}
	s.report(fmt.Sprintf("annotation %s changed (%q -> %q): adapter pods restarted", WorkloadIdentityAnnotation, before, after))
	wctx, cancel := context.WithTimeout(ctx, s.cfg.Timeouts.Adapter)
	defer cancel()
	return waitRollout(wctx, k, s.deps.Report, s.Name(), s.cfg.Adapter.Namespace, adapterName, sel, nil)
}

func (s *identityStep) Check(ctx context.Context) ([]step.Result, error) {
	g, k, err := s.clients()
	if err != nil {
		return nil, err
	}
	cfg := s.cfg
	var results []step.Result
	result := func(check string, ok bool, reason, msg string) {
		results = append(results, step.Result{Step: s.Name(), Check: check, OK: ok, Reason: reason, Message: msg})
	}
	binding := func(p gcp.Policy, role, member string) error {
		var pol *iampb.Policy
		_, err := gcp.Retry(ctx, gcp.DefaultBackoff, func(ctx context.Context) (err error) {
			pol, err = p.Get(ctx)
			return err
		})
		if status.Code(err) == codes.NotFound {
			result(role+" binding", false, "NotFound", p.Resource()+" does not exist")
			return nil
		}
		if err != nil {
			return gcp.Classify(err, "read the IAM policy of "+p.Resource())
		}
		if gcp.HasMember(pol, role, member) {
			result(role+" binding", true, "", member+" on "+p.Resource())
		} else {
			result(role+" binding", false, "MemberMissing", member+" does not hold "+role+" on "+p.Resource()+": run vllm-hpa identity")
		}
		return nil
	}
	project := gcp.ProjectPolicy(g.Projects, cfg.Project)
	if cfg.Identity.Mode == "direct" {
		member, err := s.principal(ctx)
		if err != nil {
			return nil, err
		}
		if err := binding(project, RoleMonitoringViewer, member); err != nil {
			return nil, err
		}
	} else {
		_, err := s.getAccount(ctx)
		switch {
		case status.Code(err) == codes.NotFound:
			result("google service account exists", false, "NotFound", cfg.GSAEmail()+" does not exist: run vllm-hpa identity")
		case err != nil:
			return nil, gcp.Classify(err, "get service account "+cfg.GSAEmail())
		default:
			result("google service account exists", true, "", cfg.GSAEmail())
		}
		if err := binding(project, RoleMonitoringViewer, cfg.GSAMember()); err != nil {
			return nil, err
		}
		if err := binding(gcp.AccountPolicy(g.IAM, cfg.Project, cfg.GSAEmail()), RoleWorkloadIdentity, cfg.KSAMember()); err != nil {
			return nil, err
		}
	}
	ksa, err := s.renderedKSA()
	if err != nil {
		return nil, err
	}
	live, err := k.Get(ctx, ksa)
	if err != nil {
		return nil, err
	}
	want := ksa.GetAnnotations()[WorkloadIdentityAnnotation]
	switch {
	case live == nil:
		result("ksa annotation", false, "NotFound", kube.Ref(ksa)+" does not exist: run vllm-hpa adapter")
	case live.GetAnnotations()[WorkloadIdentityAnnotation] != want:
		result("ksa annotation", false, "Mismatch", fmt.Sprintf("%s is %q, want %q", WorkloadIdentityAnnotation, live.GetAnnotations()[WorkloadIdentityAnnotation], want))
	default:
		result("ksa annotation", true, "", fmt.Sprintf("%s=%q", WorkloadIdentityAnnotation, want))
	}
	return results, nil
}

// Delete removes this stack's members from both policies, deletes the
// Google service account only if vllm-hpa created it, and removes the
// KSA annotation.
func (s *identityStep) Delete(ctx context.Context) error {
	g, k, err := s.clients()
	if err != nil {
		return err
	}
	cfg := s.cfg
	project := gcp.ProjectPolicy(g.Projects, cfg.Project)
	if cfg.Identity.Mode == "direct" {
		member, err := s.principal(ctx)
		if err != nil {
			return err
		}
		if err := s.setMember(ctx, project, RoleMonitoringViewer, member, false); err != nil {
			return err
		}
	} else {
		if err := s.setMember(ctx, project, RoleMonitoringViewer, cfg.GSAMember(), false); err != nil {
			return err
		}
		name := "projects/" + cfg.Project + "/serviceAccounts/" + cfg.GSAEmail()
		a, err := s.getAccount(ctx)
		switch {
		case status.Code(err) == codes.NotFound:
			s.report("Google service account " + cfg.GSAEmail() + " already absent")
		case err != nil:
			return gcp.Classify(err, "get service account "+cfg.GSAEmail())
		default:
			if err := s.setMember(ctx, gcp.AccountPolicy(g.IAM, cfg.Project, cfg.GSAEmail()), RoleWorkloadIdentity, cfg.KSAMember(), false); err != nil {
				return err
			}
			if !strings.HasPrefix(a.Description, gsaMarker) {
				s.report("Google service account " + cfg.GSAEmail() + " not created by vllm-hpa: left in place")
				break
			}
			_, err := gcp.Retry(ctx, gcp.DefaultBackoff, func(ctx context.Context) error {
				return g.IAM.DeleteServiceAccount(ctx, &adminpb.DeleteServiceAccountRequest{Name: name})
			})
			if err != nil && status.Code(err) != codes.NotFound {
				return gcp.Classify(err, "delete service account "+cfg.GSAEmail())
			}
			s.report("Google service account " + cfg.GSAEmail() + " deleted")
		}
	}
	return s.removeAnnotation(ctx, k)
}

// removeAnnotation re-applies the KSA without the Workload Identity
// annotation, if the KSA exists and is vllm-hpa's.
func (s *identityStep) removeAnnotation(ctx context.Context, k *kube.Client) error {
	ksa, err := s.renderedKSA()
	if err != nil {
		return err
	}
	live, err := k.Get(ctx, ksa)
	if err != nil || live == nil {
		return err
	}
	if _, ok := live.GetAnnotations()[WorkloadIdentityAnnotation]; !ok {
		return nil
	}
	if !owner(s.cfg).Owns(live) {
		s.report(kube.Ref(ksa) + " not created by vllm-hpa: annotation left in place")
		return nil
	}
	ann := ksa.GetAnnotations()
	delete(ann, WorkloadIdentityAnnotation)
	ksa.SetAnnotations(ann)
	if _, _, err := k.Apply(ctx, ksa, live, s.deps.ForceConflicts); err != nil {
		return err
	}
	s.report(kube.Ref(ksa) + ": annotation " + WorkloadIdentityAnnotation + " removed")
	return nil
}
