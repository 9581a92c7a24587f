// Package identity is the walkthrough's fourth step: Workload Identity for
// the adapter, so that it may read Cloud Monitoring. gsa mode (the
// walkthrough's): a Google service account with roles/monitoring.viewer on
// the project, which the adapter's KSA may impersonate
// (roles/iam.workloadIdentityUser), named in the KSA's annotation. direct
// mode: roles/monitoring.viewer straight to the KSA's principal. It has no
// template: its objects are the adapter's, and its state is in Google IAM.
package identity

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"cloud.google.com/go/iam/admin/apiv1/adminpb"
	"cloud.google.com/go/iam/apiv1/iampb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/owner"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/rollout"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/adapter"
)

// Name is the step's name and command.
const Name = "identity"

// Roles the identity step grants.
const (
	RoleMonitoringViewer = "roles/monitoring.viewer"
	RoleWorkloadIdentity = "roles/iam.workloadIdentityUser"
)

// The annotations are the adapter's.
const (
	WorkloadIdentityAnnotation = adapter.WorkloadIdentityAnnotation
	PodIdentityAnnotation      = adapter.PodIdentityAnnotation
)

// Definition is the identity step in the registry.
type Definition struct{}

func (Definition) Name() string { return Name }

// UsedWith: GKE's native custom metrics need no adapter and no IAM.
func (Definition) UsedWith(cfg *config.Config) bool { return !cfg.Native() }

func (Definition) Help() step.Help {
	return step.Help{
		Short: "Give the adapter Workload Identity to read Cloud Monitoring",
		Long: `Give the adapter's Kubernetes service account Workload Identity.

gsa mode (the walkthrough's route, the default): create the Google service
account if missing, grant it roles/monitoring.viewer on the project, let the
adapter's KSA impersonate it (roles/iam.workloadIdentityUser) and annotate
the KSA. direct mode: grant roles/monitoring.viewer straight to the KSA's
Workload Identity Federation principal. Every IAM change adds only this
stack's member, by an etag-guarded read-modify-write. A changed identity
restarts the adapter's pods.`,
	}
}

// Requires the Google APIs.
func (Definition) Requires() step.Requirements { return step.Requirements{GoogleAPIs: true} }

func (Definition) New(cfg *config.Config, deps step.Deps) step.Step {
	return &Step{cfg: cfg, deps: deps, report: deps.Reporter()}
}

// The description of every Google service account vllm-hpa creates starts
// with gsaMarker and ends with the clusters that use it: the account is
// shared by every cluster of the project whose adapter acts as it, and is
// deleted only when the last one leaves. (Within a cluster, the instances
// that use the adapter are counted on the adapter's objects.)
const (
	gsaMarker      = "Created by vllm-hpa"
	gsaDescription = gsaMarker + " for the Custom Metrics Stackdriver Adapter; deleted by vllm-hpa cleanup when no cluster uses it. Clusters:"
)

// accountClusters returns the clusters recorded in a vllm-hpa account's
// description (none for an account of an earlier version, which recorded
// only the instance that created it).
func accountClusters(description string) []string {
	_, list, ok := strings.Cut(description, "Clusters:")
	if !ok {
		return nil
	}
	var out []string
	for _, c := range strings.Split(list, ",") {
		if c = strings.TrimSpace(c); c != "" {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return slices.Compact(out)
}

func describeClusters(clusters []string) string {
	sort.Strings(clusters)
	return gsaDescription + " " + strings.Join(slices.Compact(clusters), ",")
}

func ourAccount(a *adminpb.ServiceAccount) bool { return strings.HasPrefix(a.Description, gsaMarker) }

// Step gives the adapter Workload Identity: Google IAM through the GCP
// clients, and the KSA annotation through Kubernetes. Like the adapter it
// serves, it is shared by every instance on the cluster.
type Step struct {
	cfg    *config.Config
	deps   step.Deps
	report step.Reporter
}

func (s *Step) Name() string { return Name }

func (s *Step) Plan(ctx context.Context) (*step.Plan, error) {
	p := &step.Plan{Step: s.Name(), GCPCalls: Calls(s.cfg, "")}
	ksa, err := s.renderedKSA()
	if err != nil {
		return nil, err
	}
	p.Objects = []*unstructured.Unstructured{ksa}
	return p, nil
}

// renderedKSA is the adapter's ServiceAccount as the identity step wants
// it: as the adapter step renders it, annotated in gsa mode.
func (s *Step) renderedKSA() (*unstructured.Unstructured, error) {
	objs, err := render.Objects(s.cfg, adapter.Name, adapter.Definition{}.Shared())
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		if o.GetKind() == "ServiceAccount" {
			if s.cfg.Identity.Mode == "gsa" {
				a := o.GetAnnotations()
				if a == nil {
					a = map[string]string{}
				}
				a[WorkloadIdentityAnnotation] = s.cfg.GSAEmail()
				o.SetAnnotations(a)
			}
			return o, nil
		}
	}
	return nil, errors.New("render: the adapter has no ServiceAccount")
}

func (s *Step) clients() (*gcp.Clients, *kube.Client, error) {
	if s.deps.GCP == nil {
		if s.deps.GCPError != nil {
			// Exit 5, as in up: the same missing credentials mean the
			// same thing whichever command meets them.
			return nil, nil, exitcode.With(exitcode.Precondition, fmt.Errorf("cannot reach the Google APIs to check the identity: %w", s.deps.GCPError))
		}
		return nil, nil, errors.New("no Google API clients")
	}
	if s.deps.Kube == nil {
		return nil, nil, errors.New("no Kubernetes connection")
	}
	return s.deps.GCP, s.deps.Kube, nil
}

func (s *Step) say(msg string) { s.report.Action(Name, msg) }

func (s *Step) accounts() gcp.Accounts {
	return gcp.Accounts{Clients: s.deps.GCP, Project: s.cfg.Project}
}

// adapterKSA reads the adapter's ServiceAccount: who uses the adapter on
// this cluster, and which Google service account it acts as now.
type adapterKSA struct {
	live  *unstructured.Unstructured // nil when absent
	users []string
	gsa   string // its Workload Identity annotation
}

func (s *Step) readKSA(ctx context.Context, k *kube.Client) (adapterKSA, error) {
	ksa, err := s.renderedKSA()
	if err != nil {
		return adapterKSA{}, err
	}
	live, err := k.Get(ctx, ksa)
	if err != nil || live == nil {
		return adapterKSA{}, err
	}
	a := adapterKSA{live: live, gsa: live.GetAnnotations()[WorkloadIdentityAnnotation]}
	if j := owner.Judge(live, s.cfg.Instance, true); j.Verdict == owner.Mine || j.Verdict == owner.Shared {
		a.users = j.Users
	}
	return a, nil
}

func (s *Step) Apply(ctx context.Context) error {
	g, k, err := s.clients()
	if err != nil {
		return err
	}
	cfg := s.cfg
	ksa, err := s.readKSA(ctx, k)
	if err != nil {
		return err
	}
	if ksa.live == nil || !slices.Contains(ksa.users, cfg.Instance) {
		return exitcode.With(exitcode.Precondition, fmt.Errorf("the adapter's ServiceAccount %s/%s does not exist or is not used by instance %s: run vllm-hpa adapter first", cfg.Adapter.Namespace, cfg.Adapter.ServiceAccount, cfg.Instance))
	}
	want := ""
	if cfg.Identity.Mode == "gsa" {
		want = cfg.GSAEmail()
	}
	// The adapter, and so its identity, is shared by every instance on
	// the cluster: one instance may not switch it under the others.
	if others := owner.Others(ksa.users, cfg.Instance); ksa.gsa != want && ksa.gsa != "" && len(others) > 0 {
		return exitcode.With(exitcode.Conflict, fmt.Errorf("the adapter on this cluster acts as %s for instance(s) %s; instance %s asks for %s: use the same identity settings (--identity-mode, --gsa-name), or clean the other instances up first",
			ksa.gsa, strings.Join(others, ", "), cfg.Instance, orDefault(want, "direct mode (no Google service account)")))
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
		cluster, err := kube.ClusterID(ctx, k)
		if err != nil {
			return err
		}
		created, err := s.ensureAccount(ctx, cluster)
		if err != nil {
			return err
		}
		newAccount := ""
		if created {
			newAccount = cfg.GSAEmail()
		}
		if err := s.setMemberOfNew(ctx, project, RoleMonitoringViewer, cfg.GSAMember(), newAccount, gcp.MemberNotYetVisible); err != nil {
			return err
		}
		account := gcp.AccountPolicy(g.IAM, cfg.Project, cfg.GSAEmail())
		if err := s.setMemberOfNew(ctx, account, RoleWorkloadIdentity, cfg.KSAMember(), newAccount, gcp.AccountNotYetVisible); err != nil {
			return err
		}
	}
	if err := s.setIdentity(ctx, k, ksa, want); err != nil {
		return err
	}
	// The account the adapter acted as before (another --gsa-name, or
	// the gsa route before direct): this cluster no longer uses it.
	if ksa.gsa != "" && ksa.gsa != want {
		cluster, err := kube.ClusterID(ctx, k)
		if err != nil {
			return err
		}
		return s.releaseAccount(ctx, ksa.gsa, cluster, true)
	}
	return nil
}

// principal is the KSA's Workload Identity Federation principal, which
// needs the project number.
func (s *Step) principal(ctx context.Context) (string, error) {
	p, err := s.deps.GCP.Project(ctx, s.cfg.Project)
	if err != nil {
		return "", err
	}
	return s.cfg.PrincipalMember(strings.TrimPrefix(p.Name, "projects/")), nil
}

// ensureAccount creates the Google service account when missing, with this
// cluster as its first user. An account vllm-hpa created is used, and this
// cluster recorded on it; one it did not create is used only when adopting
// is allowed (and is never changed or deleted).
func (s *Step) ensureAccount(ctx context.Context, cluster string) (created bool, err error) {
	cfg := s.cfg
	email := cfg.GSAEmail()
	a, err := s.accounts().Get(ctx, email)
	switch {
	case err == nil && ourAccount(a):
		return false, s.useAccount(ctx, a, cluster)
	case err == nil && (cfg.Identity.AdoptExistingGSA || s.deps.Adopt):
		if err := checkEnabled(a, cfg.Project); err != nil {
			return false, err
		}
		s.say("Google service account " + email + " exists (not created by vllm-hpa: used as it is, never deleted)")
		return false, nil
	case err == nil:
		return false, exitcode.With(exitcode.Conflict, fmt.Errorf("the Google service account %s exists and was not created by vllm-hpa: choose another --gsa-name, or use it with --adopt (cleanup then leaves it)", email))
	case status.Code(err) != codes.NotFound && status.Code(err) != codes.PermissionDenied:
		return false, gcp.Classify(err, "get service account "+email)
	}
	// NOT_FOUND, or PERMISSION_DENIED, which IAM also answers for an
	// account created in the last minute (by a run that was interrupted
	// right after): the create tells them apart, answering ALREADY_EXISTS
	// for an account that is there and PERMISSION_DENIED again for a
	// caller who may not read it.
	readErr := err
	_, retries, err := s.accounts().Create(ctx, cfg.Identity.GSAName, cfg.Identity.GSADisplayName, describeClusters([]string{cluster}))
	if status.Code(readErr) == codes.PermissionDenied && status.Code(err) == codes.PermissionDenied {
		return false, gcp.Classify(readErr, "get service account "+email)
	}
	if status.Code(err) == codes.AlreadyExists {
		// Another run created it at the same time, or an earlier attempt of
		// ours whose answer was lost: ours if it carries the marker.
		a, gerr := s.readNewAccount(ctx, email)
		if gerr == nil && ourAccount(a) {
			why := "created by vllm-hpa: by another run at the same time, or not yet visible to IAM when read"
			if retries > 0 {
				why = "created by an earlier attempt"
			}
			s.say("Google service account " + email + " exists (" + why + ")")
			return true, s.useAccount(ctx, a, cluster)
		}
		if gerr == nil {
			return false, exitcode.With(exitcode.Conflict, fmt.Errorf("the Google service account %s was just created by someone else: choose another --gsa-name", email))
		}
		// It exists (ALREADY_EXISTS): what failed is reading it.
		return false, gcp.Classify(gerr, "get service account "+email)
	}
	if err != nil {
		return false, gcp.Classify(err, "create service account "+email)
	}
	s.say("Google service account " + email + " created")
	return true, nil
}

// readNewAccount reads an account that was just created: IAM may not see
// it yet (NOT_FOUND) for a while.
func (s *Step) readNewAccount(ctx context.Context, email string) (*adminpb.ServiceAccount, error) {
	var a *adminpb.ServiceAccount
	err := gcp.WhileNew(ctx, func(msg string) { s.report.Waiting(Name, msg) }, "service account "+email, gcp.AccountNotYetVisible, func(ctx context.Context) (err error) {
		a, err = s.accounts().Get(ctx, email)
		return err
	})
	return a, err
}

// useAccount records cluster among the users of vllm-hpa's account a.
func (s *Step) useAccount(ctx context.Context, a *adminpb.ServiceAccount, cluster string) error {
	if err := checkEnabled(a, s.cfg.Project); err != nil {
		return err
	}
	clusters := accountClusters(a.Description)
	if slices.Contains(clusters, cluster) {
		s.say("Google service account " + a.Email + " exists (created by vllm-hpa; used by this cluster)")
		return nil
	}
	desc := describeClusters(append(clusters, cluster))
	if len(desc) > gcp.MaxDescription {
		return exitcode.With(exitcode.Precondition, fmt.Errorf("the Google service account %s is used by %d clusters, the most its description can record: use another --gsa-name on this cluster", a.Email, len(clusters)))
	}
	if err := s.accounts().SetDescription(ctx, a, desc); err != nil {
		return gcp.Classify(err, "record this cluster on service account "+a.Email)
	}
	s.say(fmt.Sprintf("Google service account %s exists (created by vllm-hpa): this cluster recorded as a user (%d in all)", a.Email, len(clusters)+1))
	return nil
}

// releaseAccount removes cluster from the users of account email; the last
// user removes its project role and deletes it, if vllm-hpa created it.
// An account vllm-hpa did not create keeps everything but the members
// vllm-hpa added.
func (s *Step) releaseAccount(ctx context.Context, email, cluster string, recorded bool) error {
	a, err := s.accounts().Get(ctx, email)
	if recorded && (status.Code(err) == codes.NotFound || status.Code(err) == codes.PermissionDenied) {
		// The adapter acts as it, so it existed: IAM may not show a new
		// account yet.
		a, err = s.readNewAccount(ctx, email)
	}
	switch {
	case status.Code(err) == codes.NotFound:
		s.say("Google service account " + email + " already absent")
		return s.removeDeletedMembers(ctx, email)
	case err != nil:
		return gcp.Classify(err, "get service account "+email)
	}
	if ourAccount(a) {
		if rest := owner.Others(accountClusters(a.Description), cluster); len(rest) > 0 {
			if err := s.accounts().SetDescription(ctx, a, describeClusters(rest)); err != nil {
				return gcp.Classify(err, "remove this cluster from service account "+email)
			}
			s.say(fmt.Sprintf("Google service account %s kept: still used by %d other cluster(s)", email, len(rest)))
			return nil
		}
	}
	project := gcp.ProjectPolicy(s.deps.GCP.Projects, s.cfg.Project)
	// The project's member first: deleting a bound account would leave it
	// behind as deleted:serviceAccount:...
	if err := s.setMember(ctx, project, RoleMonitoringViewer, "serviceAccount:"+email, false); err != nil {
		return err
	}
	if err := s.setMember(ctx, gcp.AccountPolicy(s.deps.GCP.IAM, s.cfg.Project, email), RoleWorkloadIdentity, s.cfg.KSAMember(), false); err != nil {
		return err
	}
	if !ourAccount(a) {
		s.say("Google service account " + email + " not created by vllm-hpa: left in place")
		return nil
	}
	if err := s.accounts().Delete(ctx, email); err != nil && status.Code(err) != codes.NotFound {
		return gcp.Classify(err, "delete service account "+email)
	}
	s.say("Google service account " + email + " deleted")
	return s.removeDeletedMembers(ctx, email)
}

// removeDeletedMembers removes what IAM leaves of a deleted account of
// ours in the project's policy: deleted:serviceAccount:EMAIL?uid=N members
// of the role vllm-hpa granted it (when the account was deleted while
// still bound, by an interrupted cleanup or by hand).
func (s *Step) removeDeletedMembers(ctx context.Context, email string) error {
	prefix := "deleted:serviceAccount:" + email + "?uid="
	project := gcp.ProjectPolicy(s.deps.GCP.Projects, s.cfg.Project)
	changed, stats, err := gcp.RemoveMembers(ctx, project, RoleMonitoringViewer, func(m string) bool { return strings.HasPrefix(m, prefix) }, gcp.DefaultBackoff)
	if err != nil {
		return gcp.Classify(err, "remove "+prefix+"... from "+project.Resource())
	}
	if changed {
		s.say(fmt.Sprintf("%s: %s for %s... removed (what IAM left of the deleted account; %s)", project.Resource(), RoleMonitoringViewer, prefix, stats))
	}
	return nil
}

// checkEnabled refuses a disabled account: it exists but cannot
// authenticate, so the adapter could read nothing.
func checkEnabled(a *adminpb.ServiceAccount, project string) error {
	if !a.Disabled {
		return nil
	}
	return exitcode.With(exitcode.Precondition, fmt.Errorf("the Google service account %s is disabled: it exists but cannot authenticate, so the adapter cannot read Cloud Monitoring; enable it with: gcloud iam service-accounts enable %s --project %s", a.Email, a.Email, project))
}

// setMember adds or removes one member of one role by an etag-guarded
// read-modify-write, and reports what it did.
func (s *Step) setMember(ctx context.Context, p gcp.Policy, role, member string, present bool) error {
	return s.changeMember(ctx, p, role, member, present, "", nil)
}

// setMemberOfNew is setMember where newAccount ("" for none) was just
// created: until IAM sees it, a read of its own policy answers NOT_FOUND or
// PERMISSION_DENIED and a policy naming it is refused INVALID_ARGUMENT
// "does not exist". The errors notYetVisible accepts are retried (for up
// to gcp.NewResourceWindow) and counted.
func (s *Step) setMemberOfNew(ctx context.Context, p gcp.Policy, role, member, newAccount string, notYetVisible func(error) bool) error {
	return s.changeMember(ctx, p, role, member, true, newAccount, notYetVisible)
}

func (s *Step) changeMember(ctx context.Context, p gcp.Policy, role, member string, present bool, newAccount string, notYetVisible func(error) bool) error {
	var changed bool
	var stats gcp.RMWStats
	waits := 0
	call := func(ctx context.Context) (err error) {
		changed, stats, err = gcp.SetMember(ctx, p, role, member, present, gcp.DefaultBackoff)
		return err
	}
	var err error
	if newAccount != "" {
		err = gcp.WhileNew(ctx, func(msg string) { waits++; s.report.Waiting(Name, msg) }, "service account "+newAccount, notYetVisible, call)
	} else {
		err = call(ctx)
	}
	if err != nil {
		verb := "add"
		if !present {
			verb = "remove"
		}
		return gcp.Classify(err, fmt.Sprintf("%s %s for %s on %s", verb, role, member, p.Resource()))
	}
	what := fmt.Sprintf("%s: %s for %s", p.Resource(), role, member)
	waited := ""
	if waits > 0 {
		waited = fmt.Sprintf("; %d waits for the new account to propagate", waits)
	}
	switch {
	case !changed && present:
		s.say(what + " already granted" + waited)
	case !changed:
		s.say(what + " already absent")
	case present:
		s.say(fmt.Sprintf("%s granted (%s%s)", what, stats, waited))
	default:
		s.say(fmt.Sprintf("%s removed (%s)", what, stats))
	}
	return nil
}

// setIdentity makes the adapter act as gsa ("" for none): the KSA's
// Workload Identity annotation, and the same on the adapter's pod template,
// whose change rolls the pods (whichever command changed it). Both are
// merge patches, so that the adapter step's own applies leave them alone.
func (s *Step) setIdentity(ctx context.Context, k *kube.Client, ksa adapterKSA, gsa string) error {
	var value any = gsa
	if gsa == "" {
		value = nil
	}
	if ksa.gsa != gsa {
		if _, err := k.PatchMetadata(ctx, ksa.live, nil, map[string]any{WorkloadIdentityAnnotation: value}, ""); err != nil {
			return err
		}
		s.say(fmt.Sprintf("%s: annotation %s %s", kube.Ref(ksa.live), WorkloadIdentityAnnotation, describeChange(ksa.gsa, gsa)))
	} else {
		s.say(fmt.Sprintf("%s: annotation %s unchanged", kube.Ref(ksa.live), WorkloadIdentityAnnotation))
	}
	deploy := adapterDeployment(s.cfg)
	live, err := k.Get(ctx, deploy)
	if err != nil || live == nil {
		return err
	}
	running, _, _ := unstructured.NestedString(live.Object, "spec", "template", "metadata", "annotations", PodIdentityAnnotation)
	if running == gsa {
		return nil
	}
	r, err := k.Resource(deploy)
	if err != nil {
		return err
	}
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{%q:%s}}}}}`, PodIdentityAnnotation, jsonValue(value))
	if _, err := r.Patch(ctx, deploy.GetName(), "application/merge-patch+json", []byte(patch), metav1.PatchOptions{FieldManager: kube.FieldManager}); err != nil {
		return fmt.Errorf("restart the adapter pods: %w", err)
	}
	s.say(fmt.Sprintf("adapter pods restarted to act as %s (were started for %s)", orDefault(gsa, "no Google service account"), orDefault(running, "none")))
	wctx, cancel := context.WithTimeout(ctx, s.cfg.Timeouts.Adapter)
	defer cancel()
	return rollout.Wait(wctx, k, s.report, Name, s.cfg.Adapter.Namespace, adapter.DeploymentName, adapter.Pods, nil)
}

func describeChange(from, to string) string {
	switch {
	case from == "":
		return "set to " + to
	case to == "":
		return "removed (was " + from + ")"
	}
	return from + " -> " + to
}

func jsonValue(v any) string {
	if v == nil {
		return "null"
	}
	return fmt.Sprintf("%q", v)
}

// adapterDeployment is the adapter's Deployment, by name only.
func adapterDeployment(cfg *config.Config) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("apps/v1")
	u.SetKind("Deployment")
	u.SetNamespace(cfg.Adapter.Namespace)
	u.SetName(adapter.DeploymentName)
	return u
}

func (s *Step) Check(ctx context.Context) ([]step.Result, error) {
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
		if err != nil && status.Code(err) != codes.NotFound {
			return gcp.Classify(err, "read the IAM policy of "+p.Resource())
		}
		results = append(results, BindingResult(pol, p.Resource(), role, member))
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
		a, err := s.accounts().Get(ctx, cfg.GSAEmail())
		switch {
		case status.Code(err) == codes.NotFound:
			result("google service account exists", false, "NotFound", cfg.GSAEmail()+" does not exist (or, created in the last minute, IAM does not show it yet): run vllm-hpa identity")
		case status.Code(err) == codes.PermissionDenied:
			// IAM answers so for an account created in the last minute
			// too: a failed check, not the caller's denial (a caller
			// who may read nothing is refused by the policy reads next).
			result("google service account exists", false, "PermissionDenied", "IAM refused to read "+cfg.GSAEmail()+": created in the last minute, IAM may not show it yet (check again shortly); otherwise the caller lacks iam.serviceAccounts.get (roles/iam.serviceAccountViewer)")
		case err != nil:
			return nil, gcp.Classify(err, "get service account "+cfg.GSAEmail())
		case a.Disabled:
			result("google service account exists", false, "Disabled", checkEnabled(a, cfg.Project).Error())
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
	ksa, err := s.readKSA(ctx, k)
	if err != nil {
		return nil, err
	}
	want := ""
	if cfg.Identity.Mode == "gsa" {
		want = cfg.GSAEmail()
	}
	return append(results, AnnotationResult(ksa.live, cfg, want)), nil
}

// BindingResult judges one role binding in a policy read from resource
// (nil: the resource does not exist).
func BindingResult(pol *iampb.Policy, resource, role, member string) step.Result {
	r := step.Result{Step: Name, Check: role + " binding"}
	switch {
	case pol == nil:
		r.Reason, r.Message = "NotFound", resource+" does not exist"
	case gcp.HasMember(pol, role, member):
		r.OK, r.Message = true, member+" on "+resource
	default:
		r.Reason, r.Message = "MemberMissing", member+" does not hold "+role+" on "+resource+": run vllm-hpa identity"
	}
	return r
}

// AnnotationResult judges the adapter's KSA (nil: absent) against the
// Google service account it should act as ("" in direct mode).
func AnnotationResult(ksa *unstructured.Unstructured, cfg *config.Config, want string) step.Result {
	r := step.Result{Step: Name, Check: "ksa annotation"}
	got := ""
	if ksa != nil {
		got = ksa.GetAnnotations()[WorkloadIdentityAnnotation]
	}
	switch {
	case ksa == nil:
		r.Reason, r.Message = "NotFound", fmt.Sprintf("ServiceAccount %s/%s does not exist: run vllm-hpa adapter", cfg.Adapter.Namespace, cfg.Adapter.ServiceAccount)
	case got != want:
		r.Reason, r.Message = "Mismatch", fmt.Sprintf("%s is %q, want %q", WorkloadIdentityAnnotation, got, want)
	default:
		r.OK, r.Message = true, fmt.Sprintf("%s=%q", WorkloadIdentityAnnotation, want)
	}
	return r
}

// identityRemovals decides what cleanup does to the identity: nothing while
// another instance on the cluster uses the adapter; otherwise release the
// Google service account(s) this cluster used (the one annotated on the KSA
// and the configured one), or the direct route's member, and remove the
// annotation.
type identityRemoval struct {
	keepReason string   // non-empty: everything stays, for this reason
	accounts   []string // Google service accounts to release
	direct     bool     // remove the direct route's principal
	ksa        adapterKSA
}

func (s *Step) planIdentityRemoval(ctx context.Context, k *kube.Client) (identityRemoval, error) {
	ksa, err := s.readKSA(ctx, k)
	if err != nil {
		return identityRemoval{}, err
	}
	r := identityRemoval{ksa: ksa}
	if others := owner.Others(ksa.users, s.cfg.Instance); len(others) > 0 {
		r.keepReason = "the adapter on this cluster is still used by instance(s) " + strings.Join(others, ", ")
		return r, nil
	}
	if ksa.gsa != "" {
		r.accounts = append(r.accounts, ksa.gsa)
	}
	if s.cfg.Identity.Mode == "gsa" && s.cfg.GSAEmail() != ksa.gsa {
		r.accounts = append(r.accounts, s.cfg.GSAEmail())
	}
	r.direct = s.cfg.Identity.Mode == "direct"
	return r, nil
}

func (s *Step) PlanDelete(ctx context.Context, pending step.Pending) (*step.Plan, error) {
	_, k, err := s.clients()
	if err != nil {
		return nil, err
	}
	r, err := s.planIdentityRemoval(ctx, k)
	if err != nil {
		return nil, err
	}
	p := &step.Plan{Step: s.Name()}
	if r.keepReason != "" {
		p.Removals = append(p.Removals, step.Removal{Object: "Workload Identity of the adapter", Action: step.RemoveKeep, Reason: r.keepReason})
		return p, nil
	}
	cluster, err := kube.ClusterID(ctx, k)
	if err != nil {
		return nil, err
	}
	for _, email := range r.accounts {
		a, err := s.accounts().Get(ctx, email)
		if email == r.ksa.gsa && (status.Code(err) == codes.NotFound || status.Code(err) == codes.PermissionDenied) {
			// The adapter acts as it, so it existed: IAM may not show a
			// new account yet (as releaseAccount reads it).
			a, err = s.readNewAccount(ctx, email)
		}
		switch {
		case status.Code(err) == codes.NotFound:
			p.Removals = append(p.Removals, step.Removal{Object: "Google service account " + email, Action: step.RemoveAbsent})
			continue
		case err != nil:
			return nil, gcp.Classify(err, "get service account "+email)
		}
		if ourAccount(a) {
			if rest := owner.Others(accountClusters(a.Description), cluster); len(rest) > 0 {
				p.Removals = append(p.Removals, step.Removal{Object: "Google service account " + email, Action: step.RemoveUnuse, Reason: fmt.Sprintf("still used by %d other cluster(s)", len(rest))})
				continue
			}
		}
		p.Removals = append(p.Removals,
			step.Removal{Object: fmt.Sprintf("projects/%s: %s for serviceAccount:%s", s.cfg.Project, RoleMonitoringViewer, email), Action: step.RemoveDelete},
			step.Removal{Object: fmt.Sprintf("%s: %s for %s", gcp.AccountName(s.cfg.Project, email), RoleWorkloadIdentity, s.cfg.KSAMember()), Action: step.RemoveDelete})
		if ourAccount(a) {
			p.Removals = append(p.Removals, step.Removal{Object: "Google service account " + email, Action: step.RemoveDelete})
		} else {
			p.Removals = append(p.Removals, step.Removal{Object: "Google service account " + email, Action: step.RemoveKeep, Reason: "not created by vllm-hpa"})
		}
	}
	if r.direct {
		member, err := s.principal(ctx)
		if err != nil {
			return nil, err
		}
		p.Removals = append(p.Removals, step.Removal{Object: fmt.Sprintf("projects/%s: %s for %s", s.cfg.Project, RoleMonitoringViewer, member), Action: step.RemoveDelete})
	}
	if r.ksa.gsa != "" {
		p.Removals = append(p.Removals, step.Removal{Object: kube.Ref(r.ksa.live) + " annotation " + WorkloadIdentityAnnotation, Action: step.RemoveDelete})
	}
	return p, nil
}

// Delete releases the adapter's identity when no other instance on the
// cluster uses the adapter: this cluster leaves the Google service
// account(s) it used (the last user deletes one vllm-hpa created, after
// removing its project role), or the direct route's member is removed; and
// the KSA annotation goes.
func (s *Step) Delete(ctx context.Context) error {
	_, k, err := s.clients()
	if err != nil {
		return err
	}
	r, err := s.planIdentityRemoval(ctx, k)
	if err != nil {
		return err
	}
	if r.keepReason != "" {
		s.say("Workload Identity kept: " + r.keepReason)
		return nil
	}
	cluster, err := kube.ClusterID(ctx, k)
	if err != nil {
		return err
	}
	for _, email := range r.accounts {
		if err := s.releaseAccount(ctx, email, cluster, email == r.ksa.gsa); err != nil {
			return err
		}
	}
	if r.direct {
		member, err := s.principal(ctx)
		if err != nil {
			return err
		}
		if err := s.setMember(ctx, gcp.ProjectPolicy(s.deps.GCP.Projects, s.cfg.Project), RoleMonitoringViewer, member, false); err != nil {
			return err
		}
	}
	if r.ksa.live != nil && r.ksa.gsa != "" {
		if _, err := k.PatchMetadata(ctx, r.ksa.live, nil, map[string]any{WorkloadIdentityAnnotation: nil}, ""); err != nil {
			return err
		}
		s.say(kube.Ref(r.ksa.live) + ": annotation " + WorkloadIdentityAnnotation + " removed")
	}
	return nil
}

// Calls lists the Google API calls of the identity step. The
// project number is needed only by the direct route; "" shows a placeholder.
func Calls(cfg *config.Config, projectNumber string) []step.GCPCall {
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

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
