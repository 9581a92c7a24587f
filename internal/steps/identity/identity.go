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
	"time"

	"cloud.google.com/go/iam/admin/apiv1/adminpb"
	"cloud.google.com/go/iam/apiv1/iampb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/grants"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/objectstep"
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
	// GrantsAnnotation, on the adapter's KSA, records the IAM grants the
	// adapter's identity relies on (internal/grants).
	GrantsAnnotation      = grants.Annotation
	PodIdentityAnnotation = adapter.PodIdentityAnnotation
)

// Definition is the identity step in the registry.
type Definition struct{}

func (Definition) Name() string { return Name }

// Settings are the keys identity's command takes as flags.
func (Definition) Settings() []string {
	return []string{"instance", "adopt", "kube.force-conflicts", "identity.mode", "identity.gsa-name", "identity.adopt-existing-gsa", "hpa.backend"}
}

// Timeout is the key of how long the step waits.
func (Definition) Timeout() string { return "timeouts.identity" }

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

func (Definition) New(cfg *config.Config, deps step.Deps) step.Step {
	return &Identity{cfg: cfg, deps: deps, report: deps.Reporter()}
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

// Identity gives the adapter Workload Identity: Google IAM through the GCP
// clients, and the KSA annotation through Kubernetes. Like the adapter it
// serves, it is shared by every instance on the cluster.
type Identity struct {
	cfg    *config.Config
	deps   step.Deps
	report step.Reporter
}

func (s *Identity) Name() string { return Name }

func (s *Identity) Plan(ctx context.Context) (*step.Plan, error) {
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
func (s *Identity) renderedKSA() (*unstructured.Unstructured, error) {
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

func (s *Identity) clients() (*gcp.Clients, *kube.Client, error) {
	if s.deps.GCP == nil {
		if s.deps.GCPError != nil {
			// Exit 5, as in up: the same missing credentials mean the
			// same thing whichever command meets them.
			return nil, nil, exitcode.With(exitcode.Precondition, fmt.Errorf("cannot reach the Google APIs to check the identity: %w", s.deps.GCPError))
		}
		return nil, nil, errors.New("no Google API clients")
	}
	if s.deps.GCP.IAM == nil || s.deps.GCP.Projects == nil {
		return nil, nil, errors.New("no IAM clients: the command did not open them")
	}
	if s.deps.Kube == nil {
		return nil, nil, errors.New("no Kubernetes connection")
	}
	return s.deps.GCP, s.deps.Kube, nil
}

func (s *Identity) say(msg string) { s.report.Action(Name, msg) }

func (s *Identity) accounts() gcp.Accounts {
	return gcp.Accounts{Clients: s.deps.GCP, Project: s.cfg.Project}
}

// adapterKSA reads the adapter's ServiceAccount: who uses the adapter on
// this cluster, and which Google service account it acts as now.
type adapterKSA struct {
	live  *unstructured.Unstructured // nil when absent
	users []string
	gsa   string // its Workload Identity annotation
}

func (s *Identity) readKSA(ctx context.Context, k *kube.Client) (adapterKSA, error) {
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

func (s *Identity) Apply(ctx context.Context) error {
	g, k, err := s.clients()
	if err != nil {
		return err
	}
	ctx = s.withNotice(ctx)
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
	// What the adapter's identity relies on, made or found, recorded on
	// its KSA: cleanup removes only what vllm-hpa made.
	record := grants.Read(ksa.live)
	// A grant made is recorded at once, before anything else can fail:
	// a run cut short after it must not leave it to be found, and so
	// kept, by the next.
	note := func(p gcp.Policy, role, member string, changed bool) error {
		record = grants.Note(record, grants.Grant{Resource: p.Resource(), Role: role, Member: member}, changed, time.Now())
		if !changed {
			return nil
		}
		return objectstep.Uninterrupted(ctx, func(ctx context.Context) error {
			_, err := k.PatchMetadata(ctx, ksa.live, nil, map[string]any{GrantsAnnotation: grants.Encode(record)}, "")
			return err
		})
	}
	if cfg.Identity.Mode == "direct" {
		member, err := s.principal(ctx)
		if err != nil {
			return err
		}
		changed, err := s.setMember(ctx, project, RoleMonitoringViewer, member, true)
		if err != nil {
			return err
		}
		if err := note(project, RoleMonitoringViewer, member, changed); err != nil {
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
		changed, err := s.setMemberOfNew(ctx, project, RoleMonitoringViewer, cfg.GSAMember(), newAccount, gcp.MemberNotYetVisible)
		if err != nil {
			return err
		}
		if err := note(project, RoleMonitoringViewer, cfg.GSAMember(), changed); err != nil {
			return err
		}
		account := gcp.AccountPolicy(g.IAM, cfg.Project, cfg.GSAEmail())
		if changed, err = s.setMemberOfNew(ctx, account, RoleWorkloadIdentity, cfg.KSAMember(), newAccount, gcp.AccountNotYetVisible); err != nil {
			return err
		}
		if err := note(account, RoleWorkloadIdentity, cfg.KSAMember(), changed); err != nil {
			return err
		}
	}
	if ksa.gsa != "" && ksa.gsa != want {
		// The account acted as before is released below, with its grants.
		record = slices.DeleteFunc(record, func(g grants.Grant) bool { return mentions(g, ksa.gsa) })
	}
	var oldDirect []grants.Grant // the direct route's grants vllm-hpa made, when moving to gsa
	if cfg.Identity.Mode == "gsa" {
		// The direct route's grant, if an earlier run used it, is no
		// longer what the adapter relies on: one found is forgotten, one
		// made is removed once the adapter serves as the account.
		record = slices.DeleteFunc(record, func(g grants.Grant) bool { return strings.HasPrefix(g.Member, "principal://") && !g.Made })
		for _, g := range record {
			if strings.HasPrefix(g.Member, "principal://") {
				oldDirect = append(oldDirect, g)
			}
		}
	}
	rolled, err := s.setIdentity(ctx, k, ksa, want, record)
	if err != nil {
		return err
	}
	if err := s.waitAdapter(ctx, k, rolled); err != nil {
		return err
	}
	if len(oldDirect) > 0 {
		for _, g := range oldDirect {
			if _, err := s.setMember(ctx, project, g.Role, g.Member, false); err != nil {
				return err
			}
			record = grants.Forget(record, g)
		}
		if _, err := k.PatchMetadata(ctx, ksa.live, nil, map[string]any{GrantsAnnotation: grants.Encode(record)}, ""); err != nil {
			return err
		}
	}
	// The account the adapter acted as before (another --gsa-name, or
	// the gsa route before direct): once the adapter serves as the new
	// one, this cluster no longer uses it.
	if ksa.gsa != "" && ksa.gsa != want {
		cluster, err := kube.ClusterID(ctx, k)
		if err != nil {
			return err
		}
		return s.releaseAccount(ctx, ksa.gsa, cluster, true, grants.Read(ksa.live))
	}
	return nil
}

// waitAdapter waits, the grants made, until the adapter serves: IAM
// applies new grants in about 2 minutes (sometimes 7 or more), and until
// then the adapter exits at start. Unless its pods are being replaced
// (rolled), one that crashed before waits out a back-off of up to 5
// minutes: it is started afresh.
func (s *Identity) waitAdapter(ctx context.Context, k *kube.Client, rolled bool) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeouts.Identity)
	defer cancel()
	if !rolled {
		if err := s.restartCrashing(ctx, k); err != nil {
			return err
		}
	}
	s.report.Waiting(Name, "the adapter reads Cloud Monitoring once IAM applies its grants: typically 2 minutes after they were made, sometimes 7 or more")
	err := adapter.WaitServing(ctx, k, s.report, Name, s.cfg, nil, nil, false)
	if err == nil {
		// A pod started for the old identity serves its grace period
		// out, answering 404 as that identity: the HPA may meet it
		// until it is gone.
		err = kube.Until(ctx, "the adapter's old pods to be gone",
			kube.Watch{Resource: k.Dynamic.Resource(kube.PodsGVR).Namespace(s.cfg.Adapter.Namespace), LabelSelector: adapter.Pods},
			func(pods []*unstructured.Unstructured) (bool, string, error) {
				var leaving []string
				for _, p := range pods {
					if p.GetDeletionTimestamp() != nil {
						leaving = append(leaving, p.GetName())
					}
				}
				return len(leaving) == 0, "adapter pods still terminating, acting as the old identity: " + strings.Join(leaving, ", "), nil
			}, func(r string) { s.report.Waiting(Name, r) })
	}
	if exitcode.Of(err) == exitcode.Timeout {
		return fmt.Errorf("the adapter does not serve %s after its identity was set (timeouts.identity): IAM may take longer than usual, or something else stops it: vllm-hpa verify says why: %w", s.cfg.Timeouts.Identity, err)
	}
	return err
}

// restartCrashing deletes the adapter's pods that exit at start, so that
// their replacements start now rather than after the back-off.
func (s *Identity) restartCrashing(ctx context.Context, k *kube.Client) error {
	pods, err := k.Typed.CoreV1().Pods(s.cfg.Adapter.Namespace).List(ctx, metav1.ListOptions{LabelSelector: adapter.Pods})
	if err != nil {
		return err
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		c, crashing := rollout.CrashLoop(p)
		if !crashing {
			continue
		}
		err := k.Typed.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &p.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("restart adapter pod %s: %w", p.Name, err)
		}
		s.say(fmt.Sprintf("adapter pod %s restarted now that it has its identity (it had exited at start %d times: %s)", p.Name, c.Restarts, c.Message))
	}
	return nil
}

// mentions reports whether a grant is to or on the Google service account
// email.
func mentions(g grants.Grant, email string) bool {
	return g.Member == "serviceAccount:"+email || strings.HasSuffix(g.Resource, "/serviceAccounts/"+email)
}

// withNotice makes the Google calls made with ctx say why they wait before
// a retry, on the step's progress.
func (s *Identity) withNotice(ctx context.Context) context.Context {
	return gcp.WithNotice(ctx, func(msg string) { s.report.Waiting(Name, msg) })
}

// principal is the KSA's Workload Identity Federation principal, which
// needs the project number.
func (s *Identity) principal(ctx context.Context) (string, error) {
	number, err := s.deps.GCP.ProjectNumber(ctx, s.cfg.Project)
	if err != nil {
		return "", err
	}
	return s.cfg.PrincipalMember(number), nil
}

// ensureAccount creates the Google service account when missing, with this
// cluster as its first user. An account vllm-hpa created is used, and this
// cluster recorded on it; one it did not create is used only when adopting
// is allowed (and is never changed or deleted).
func (s *Identity) ensureAccount(ctx context.Context, cluster string) (created bool, err error) {
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
	case !gcp.AccountNotYetVisible(err):
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
func (s *Identity) readNewAccount(ctx context.Context, email string) (*adminpb.ServiceAccount, error) {
	return s.readAccountWhile(ctx, email, gcp.AccountNotYetVisible)
}

// readAccountWhile reads account email again while notYetVisible says its
// answer is IAM not seeing it yet.
func (s *Identity) readAccountWhile(ctx context.Context, email string, notYetVisible func(error) bool) (*adminpb.ServiceAccount, error) {
	var a *adminpb.ServiceAccount
	err := gcp.WhileNew(ctx, func(msg string) { s.report.Waiting(Name, msg) }, "service account "+email, notYetVisible, func(ctx context.Context) (err error) {
		a, err = s.accounts().Get(ctx, email)
		return err
	})
	return a, err
}

// readRecordedAccount reads account email, which the adapter's KSA names:
// IAM may not see a new account yet, so its NOT_FOUND is waited out, but
// only while the KSA still names it. Another cleanup at the same time may
// have deleted the account: it takes the annotation away right after, and
// the account is then gone, not new. (An up at the same time that moves
// the KSA to another account also stops the wait: this account is then
// called absent, and an up or cleanup that sees it later releases it.)
// A KSA that cannot be read keeps the wait, as before the KSA was read.
func (s *Identity) readRecordedAccount(ctx context.Context, email string) (*adminpb.ServiceAccount, error) {
	_, k, err := s.clients()
	if err != nil {
		return nil, err
	}
	return s.readAccountWhile(ctx, email, func(err error) bool {
		if !gcp.AccountNotYetVisible(err) {
			return false
		}
		ksa, kerr := s.readKSA(ctx, k)
		return kerr != nil || ksa.gsa == email // unreadable: still presumed new
	})
}

// useAccount records cluster among the users of vllm-hpa's account a.
func (s *Identity) useAccount(ctx context.Context, a *adminpb.ServiceAccount, cluster string) error {
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
func (s *Identity) releaseAccount(ctx context.Context, email, cluster string, recorded bool, record []grants.Grant) error {
	a, err := s.accounts().Get(ctx, email)
	if recorded && gcp.AccountNotYetVisible(err) {
		// The adapter acts as it, so it existed: IAM may not show a new
		// account yet.
		a, err = s.readRecordedAccount(ctx, email)
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
	account := gcp.AccountPolicy(s.deps.GCP.IAM, s.cfg.Project, email)
	if !ourAccount(a) {
		// Not vllm-hpa's account: only the grants vllm-hpa made go.
		for _, g := range []struct {
			p            gcp.Policy
			role, member string
		}{{project, RoleMonitoringViewer, "serviceAccount:" + email}, {account, RoleWorkloadIdentity, s.cfg.KSAMember()}} {
			if made, _ := madeByUs(record, g.p.Resource(), g.role, g.member, false); !made {
				s.say(fmt.Sprintf("%s: %s for %s left in place (found there, not made by vllm-hpa)", g.p.Resource(), g.role, g.member))
				continue
			}
			if _, err := s.setMember(ctx, g.p, g.role, g.member, false); err != nil {
				return err
			}
		}
		s.say("Google service account " + email + " not created by vllm-hpa: left in place")
		return nil
	}
	// The project's member first: deleting a bound account would leave it
	// behind as deleted:serviceAccount:...
	if _, err := s.setMember(ctx, project, RoleMonitoringViewer, "serviceAccount:"+email, false); err != nil {
		return err
	}
	if _, err := s.setMember(ctx, account, RoleWorkloadIdentity, s.cfg.KSAMember(), false); err != nil {
		return err
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
func (s *Identity) removeDeletedMembers(ctx context.Context, email string) error {
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

// madeByUs reports whether the record says vllm-hpa made a grant; a
// record that does not exist (an earlier version kept none) answers
// unrecorded, which the caller decides.
func madeByUs(record []grants.Grant, resource, role, member string, unrecorded bool) (made, known bool) {
	if record == nil {
		return unrecorded, false
	}
	g, ok := grants.Find(record, resource, role, member)
	return ok && g.Made, ok
}

// setMember adds or removes one member of one role by an etag-guarded
// read-modify-write, and reports what it did and whether it changed the
// policy.
func (s *Identity) setMember(ctx context.Context, p gcp.Policy, role, member string, present bool) (bool, error) {
	return s.changeMember(ctx, p, role, member, present, "", nil)
}

// setMemberOfNew is setMember where newAccount ("" for none) was just
// created: until IAM sees it, a read of its own policy answers NOT_FOUND or
// PERMISSION_DENIED and a policy naming it is refused INVALID_ARGUMENT
// "does not exist". The errors notYetVisible accepts are retried (for up
// to gcp.NewResourceWindow) and counted.
func (s *Identity) setMemberOfNew(ctx context.Context, p gcp.Policy, role, member, newAccount string, notYetVisible func(error) bool) (bool, error) {
	return s.changeMember(ctx, p, role, member, true, newAccount, notYetVisible)
}

func (s *Identity) changeMember(ctx context.Context, p gcp.Policy, role, member string, present bool, newAccount string, notYetVisible func(error) bool) (bool, error) {
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
	if d, ok := gcp.DetailsOf(err); ok && !present && d.Code == codes.NotFound {
		// The policy's resource is gone (a cleanup at the same time
		// deleted the account): so is every member of it.
		s.say(fmt.Sprintf("%s: %s for %s already absent (%s no longer exists)", p.Resource(), role, member, p.Resource()))
		return false, nil
	}
	if err != nil {
		verb := "add"
		if !present {
			verb = "remove"
		}
		what := fmt.Sprintf("%s %s for %s on %s", verb, role, member, p.Resource())
		if d, ok := gcp.DetailsOf(err); ok && present && d.Code == codes.InvalidArgument && exitcode.Of(err) == exitcode.Failure {
			return false, s.refusedMember(what, member, d.Message)
		}
		return false, gcp.Classify(err, what)
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
	return changed, nil
}

// refusedMember explains IAM refusing, as INVALID_ARGUMENT, the one member
// a write added. Google attaches no ErrorInfo: the member says which cause
// it is. A Workload Identity member (the KSA's, of either route) is
// refused until a cluster of the project enables Workload Identity, which
// creates the pool; any other is refused as IAM does not know it. The
// policy's size was checked before the write.
func (s *Identity) refusedMember(what, member, message string) error {
	if member == s.cfg.KSAMember() || strings.HasPrefix(member, "principal://") {
		pool := s.cfg.WorkloadPool()
		return exitcode.With(exitcode.Precondition, fmt.Errorf("%s: IAM refused the member (%s): the Workload Identity pool %s does not exist until a GKE cluster of the project enables Workload Identity: gcloud container clusters update CLUSTER --location LOCATION --workload-pool=%s", what, message, pool, pool))
	}
	return exitcode.With(exitcode.Precondition, fmt.Errorf("%s: IAM refused the member (%s)", what, message))
}

// setIdentity makes the adapter act as gsa ("" for none): the KSA's
// Workload Identity annotation, and the same on the adapter's pod template,
// whose change rolls the pods (whichever command changed it; rolled says
// it did), and the record of grants. All are merge patches, so that the
// adapter step's own applies leave them alone.
func (s *Identity) setIdentity(ctx context.Context, k *kube.Client, ksa adapterKSA, gsa string, record []grants.Grant) (rolled bool, err error) {
	var value any = gsa
	if gsa == "" {
		value = nil
	}
	annotations := map[string]any{}
	if ksa.gsa != gsa {
		annotations[WorkloadIdentityAnnotation] = value
	}
	if enc := grants.Encode(record); ksa.live.GetAnnotations()[GrantsAnnotation] != fmt.Sprint(enc) && !(enc == nil && !hasAnnotation(ksa.live, GrantsAnnotation)) {
		annotations[GrantsAnnotation] = enc
	}
	if len(annotations) > 0 {
		if _, err := k.PatchMetadata(ctx, ksa.live, nil, annotations, ""); err != nil {
			return false, err
		}
	}
	if ksa.gsa != gsa {
		s.say(fmt.Sprintf("%s: annotation %s %s", kube.Ref(ksa.live), WorkloadIdentityAnnotation, describeChange(ksa.gsa, gsa)))
	} else {
		s.say(fmt.Sprintf("%s: annotation %s unchanged", kube.Ref(ksa.live), WorkloadIdentityAnnotation))
	}
	deploy := adapterDeployment(s.cfg)
	live, err := k.Get(ctx, deploy)
	if err != nil || live == nil {
		return false, err
	}
	running, _, _ := unstructured.NestedString(live.Object, "spec", "template", "metadata", "annotations", PodIdentityAnnotation)
	if running == gsa {
		return false, nil
	}
	r, err := k.Resource(deploy)
	if err != nil {
		return false, err
	}
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{%q:%s}}}}}`, PodIdentityAnnotation, jsonValue(value))
	if _, err := r.Patch(ctx, deploy.GetName(), "application/merge-patch+json", []byte(patch), metav1.PatchOptions{FieldManager: kube.FieldManager}); err != nil {
		return false, fmt.Errorf("restart the adapter pods: %w", err)
	}
	s.say(fmt.Sprintf("adapter pods restarted to act as %s (were started for %s)", orDefault(gsa, "no Google service account"), orDefault(running, "none")))
	return true, nil
}

func hasAnnotation(u *unstructured.Unstructured, key string) bool {
	_, ok := u.GetAnnotations()[key]
	return ok
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

func (s *Identity) Check(ctx context.Context) ([]step.Result, error) {
	e, err := s.readEvidence(ctx)
	if err != nil {
		return nil, err
	}
	return e.results(s.cfg), nil
}

// Evidence is what vllm-hpa reads of the adapter's identity: the Google
// service account (gsa mode), each grant the identity needs, and the
// adapter's Kubernetes service account (its annotation and the record of
// grants).
type Evidence struct {
	Mode string
	// Account is the Google service account (gsa mode).
	Account AccountState
	// Bindings are the grants the identity needs, as read.
	Bindings []BindingState
	// KSA is the adapter's Kubernetes service account (nil: absent).
	KSA *unstructured.Unstructured
	// WantAnnotation is the annotation the KSA should carry ("" in
	// direct mode).
	WantAnnotation string
}

// AccountState is a Google service account as IAM shows it.
type AccountState struct {
	Email string
	// Found: IAM returned it; Unseen: IAM refused to read it, as it does
	// for one created in the last minute (or a caller who may not).
	Found, Unseen, Disabled bool
}

// BindingState is one grant as read from its policy.
type BindingState struct {
	Resource, Role, Member string
	// NoResource: the policy's resource does not exist.
	NoResource, Held bool
}

// readEvidence reads the identity's state: the account, each grant's
// policy, the KSA.
func (s *Identity) readEvidence(ctx context.Context) (Evidence, error) {
	cfg := s.cfg
	e := Evidence{Mode: cfg.Identity.Mode}
	if cfg.Identity.Mode == "gsa" {
		e.Account.Email, e.WantAnnotation = cfg.GSAEmail(), cfg.GSAEmail()
	}
	// The KSA first: what Kubernetes alone shows is evidence even when
	// Google cannot be asked.
	if s.deps.Kube != nil {
		ksa, err := s.readKSA(ctx, s.deps.Kube)
		if err != nil {
			return e, err
		}
		e.KSA = ksa.live
	}
	g, _, err := s.clients()
	if err != nil {
		return e, err
	}
	ctx = s.withNotice(ctx)
	binding := func(p gcp.Policy, role, member string) error {
		var pol *iampb.Policy
		_, err := gcp.Retry(ctx, gcp.DefaultBackoff, func(ctx context.Context) (err error) {
			pol, err = p.Get(ctx)
			return err
		})
		if err != nil && status.Code(err) != codes.NotFound {
			return gcp.Classify(err, "read the IAM policy of "+p.Resource())
		}
		e.Bindings = append(e.Bindings, bindingState(pol, p.Resource(), role, member))
		return nil
	}
	project := gcp.ProjectPolicy(g.Projects, cfg.Project)
	if cfg.Identity.Mode == "direct" {
		member, err := s.principal(ctx)
		if err != nil {
			return e, err
		}
		if err := binding(project, RoleMonitoringViewer, member); err != nil {
			return e, err
		}
	} else {
		a, err := s.accounts().Get(ctx, cfg.GSAEmail())
		switch {
		case status.Code(err) == codes.NotFound:
		case gcp.AccountNotYetVisible(err):
			e.Account.Unseen = true
		case err != nil:
			return e, gcp.Classify(err, "get service account "+cfg.GSAEmail())
		default:
			e.Account.Found, e.Account.Disabled = true, a.Disabled
		}
		if err := binding(project, RoleMonitoringViewer, cfg.GSAMember()); err != nil {
			return e, err
		}
		if err := binding(gcp.AccountPolicy(g.IAM, cfg.Project, cfg.GSAEmail()), RoleWorkloadIdentity, cfg.KSAMember()); err != nil {
			return e, err
		}
	}
	return e, nil
}

// results are verify's checks of the evidence: the account (gsa mode),
// each grant, the annotation.
func (e Evidence) results(cfg *config.Config) []step.Result {
	var out []step.Result
	if e.Mode == "gsa" {
		r := step.Result{Step: Name, Check: "google service account exists"}
		switch a := e.Account; {
		case a.Unseen:
			// IAM answers so for an account created in the last minute
			// too: a failed check, not the caller's denial (a caller who
			// may read nothing is refused by the policy reads).
			r.Reason, r.Message = "PermissionDenied", "IAM refused to read "+a.Email+": created in the last minute, IAM may not show it yet (check again shortly); otherwise the caller lacks iam.serviceAccounts.get (roles/iam.serviceAccountViewer)"
		case !a.Found:
			r.Reason, r.Message = "NotFound", a.Email+" does not exist (or, created in the last minute, IAM does not show it yet): run vllm-hpa identity"
		case a.Disabled:
			r.Reason, r.Message = "Disabled", checkEnabled(&adminpb.ServiceAccount{Email: a.Email, Disabled: true}, cfg.Project).Error()
		default:
			r.OK, r.Message = true, a.Email
		}
		out = append(out, r)
	}
	for _, b := range e.Bindings {
		out = append(out, b.result())
	}
	return append(out, AnnotationResult(e.KSA, cfg, e.WantAnnotation))
}

// result is the grant's check.
func (b BindingState) result() step.Result {
	r := step.Result{Step: Name, Check: b.Role + " binding"}
	switch {
	case b.NoResource:
		r.Reason, r.Message = "NotFound", b.Resource+" does not exist"
	case b.Held:
		r.OK, r.Message = true, b.Member+" on "+b.Resource
	default:
		r.Reason, r.Message = "MemberMissing", b.Member+" does not hold "+b.Role+" on "+b.Resource+": run vllm-hpa identity"
	}
	return r
}

// BindingResult judges one role binding in a policy read from resource
// (nil: the resource does not exist).
func BindingResult(pol *iampb.Policy, resource, role, member string) step.Result {
	return bindingState(pol, resource, role, member).result()
}

// bindingState is a grant as a policy read from resource shows it (nil:
// the resource does not exist); only an unconditional binding counts.
func bindingState(pol *iampb.Policy, resource, role, member string) BindingState {
	return BindingState{Resource: resource, Role: role, Member: member, NoResource: pol == nil, Held: pol != nil && gcp.HasMember(pol, role, member)}
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

func (s *Identity) planIdentityRemoval(ctx context.Context, k *kube.Client) (identityRemoval, error) {
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
	// The direct route's grant: this mode's, or one vllm-hpa made before
	// a move to gsa that did not finish.
	r.direct = s.cfg.Identity.Mode == "direct"
	for _, g := range grants.Read(ksa.live) {
		r.direct = r.direct || (g.Made && strings.HasPrefix(g.Member, "principal://"))
	}
	return r, nil
}

func (s *Identity) PlanDelete(ctx context.Context, pending step.Pending) (*step.Plan, error) {
	_, k, err := s.clients()
	if err != nil {
		return nil, err
	}
	ctx = s.withNotice(ctx)
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
	record := grants.Read(r.ksa.live)
	for _, email := range r.accounts {
		a, err := s.accounts().Get(ctx, email)
		if email == r.ksa.gsa && gcp.AccountNotYetVisible(err) {
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
		for _, g := range []struct{ resource, role, member string }{
			{"projects/" + s.cfg.Project, RoleMonitoringViewer, "serviceAccount:" + email},
			{gcp.AccountName(s.cfg.Project, email), RoleWorkloadIdentity, s.cfg.KSAMember()},
		} {
			rm := step.Removal{Object: fmt.Sprintf("%s: %s for %s", g.resource, g.role, g.member), Action: step.RemoveDelete}
			if made, _ := madeByUs(record, g.resource, g.role, g.member, false); !ourAccount(a) && !made {
				rm.Action, rm.Reason = step.RemoveKeep, "found in place, not made by vllm-hpa"
			}
			p.Removals = append(p.Removals, rm)
		}
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
		rm := step.Removal{Object: fmt.Sprintf("projects/%s: %s for %s", s.cfg.Project, RoleMonitoringViewer, member), Action: step.RemoveDelete}
		if made, _ := madeByUs(record, "projects/"+s.cfg.Project, RoleMonitoringViewer, member, true); !made {
			rm.Action, rm.Reason = step.RemoveKeep, "found in place, not made by vllm-hpa"
		}
		p.Removals = append(p.Removals, rm)
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
func (s *Identity) Delete(ctx context.Context) error {
	_, k, err := s.clients()
	if err != nil {
		return err
	}
	ctx = s.withNotice(ctx)
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
	record := grants.Read(r.ksa.live)
	for _, email := range r.accounts {
		if err := s.releaseAccount(ctx, email, cluster, email == r.ksa.gsa, record); err != nil {
			return err
		}
	}
	if r.direct {
		member, err := s.principal(ctx)
		if err != nil {
			return err
		}
		project := gcp.ProjectPolicy(s.deps.GCP.Projects, s.cfg.Project)
		// Before vllm-hpa kept a record, the direct route's grant was
		// always its own.
		if made, _ := madeByUs(record, project.Resource(), RoleMonitoringViewer, member, true); made {
			if _, err := s.setMember(ctx, project, RoleMonitoringViewer, member, false); err != nil {
				return err
			}
		} else {
			s.say(fmt.Sprintf("%s: %s for %s left in place (found there, not made by vllm-hpa)", project.Resource(), RoleMonitoringViewer, member))
		}
	}
	if r.ksa.live != nil && (r.ksa.gsa != "" || hasAnnotation(r.ksa.live, GrantsAnnotation)) {
		if _, err := k.PatchMetadata(ctx, r.ksa.live, nil, map[string]any{WorkloadIdentityAnnotation: nil, GrantsAnnotation: nil}, ""); err != nil {
			if apierrors.IsNotFound(err) {
				return nil // a cleanup at the same time removed the adapter
			}
			return err
		}
		if r.ksa.gsa != "" {
			s.say(kube.Ref(r.ksa.live) + ": annotation " + WorkloadIdentityAnnotation + " removed")
		}
	}
	return nil
}

// Calls lists the Google API calls of the identity step. The
// project number is needed only by the direct route; "" shows a placeholder.
func Calls(cfg *config.Config, projectNumber string) []step.GCPCall {
	project := "projects/" + cfg.Project
	if cfg.Identity.Mode == "direct" {
		if projectNumber == "" {
			projectNumber = projectNumberPlaceholder
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
