// Package preflight proves, with no write anywhere, what `up` needs: the
// token, the Kubernetes permissions of every object and read the steps
// make (SelfSubjectAccessReview), the API server's own verdict on every
// object (server-side dry run: admission, validation, RBAC escalation),
// the Google APIs, the caller's IAM permissions (testIamPermissions) and
// the cluster's settings for the backend. One result per check.
package preflight

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/owner"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/deploy"
	"github.com/vllm-hpa/vllm-hpa/internal/steps/identity"
)

// Step is the name preflight's results carry.
const Step = "preflight"

// Access is one Kubernetes permission a step uses.
type Access struct {
	Verb, Group, Resource, Subresource, Namespace string
}

func (a Access) String() string {
	r := a.Resource
	if a.Group != "" {
		r += "." + a.Group
	}
	if a.Subresource != "" {
		r += "/" + a.Subresource
	}
	where := "cluster-wide"
	if a.Namespace != "" {
		where = "in namespace " + a.Namespace
	}
	return a.Verb + " " + r + " " + where
}

// objectVerbs are what a step does to each object it owns: read it,
// watch it to a condition, apply it (a server-side apply is a patch that
// may create), and delete it in cleanup.
var objectVerbs = []string{"get", "list", "watch", "patch", "create", "delete"}

// Run runs every check for the named steps (up's, in its order) and
// returns the results and an error whose exit code says what failed:
// a missing permission (Kubernetes or IAM) exit 6, anything else exit 5.
func Run(ctx context.Context, cfg *config.Config, deps step.Deps, names []string) ([]step.Result, error) {
	var results []step.Result
	denied, unmet := 0, 0
	add := func(check string, ok bool, message, fix string, permission bool) {
		r := step.Result{Step: Step, Check: check, OK: ok, Message: message}
		if !ok {
			r.Reason = "NotMet"
			if permission {
				r.Reason = "Denied"
				denied++
			} else {
				unmet++
			}
			if fix != "" {
				r.Message += "; fix: " + fix
			}
		}
		deps.Reporter().Result(r)
		results = append(results, r)
	}
	objects, err := stackObjects(cfg, names)
	if err != nil {
		return results, err
	}
	if steps.Requires(cfg, names).Token {
		checkToken(cfg, add)
	}
	if err := checkKubeAccess(ctx, deps.Kube, accesses(cfg, deps.Kube, objects, names), add); err != nil {
		return results, err
	}
	if err := dryRun(ctx, cfg, deps.Kube, objects, add); err != nil {
		return results, err
	}
	// The identity step's IAM permissions (the model bucket's are
	// deploy's precondition, below).
	identityRuns := slices.Contains(steps.GoogleSteps(cfg, names), identity.Name)
	if deps.GCP != nil && identityRuns {
		if err := checkIAM(ctx, cfg, deps, add); err != nil {
			return results, err
		}
	} else if identityRuns {
		why := "no Google credentials"
		if deps.GCPError != nil {
			why = deps.GCPError.Error()
		}
		add("iam permissions", false, "not checked: "+why, "give Application Default Credentials (gcloud auth application-default login) or leave identity out with --skip identity", false)
	}
	// The cluster's settings, the APIs and the project: what up checks
	// first, reported here check by check.
	rec := &collect{inner: deps.Reporter()}
	deps.Report = rec
	_, perr := steps.Preconditions(ctx, cfg, deps, names)
	for _, r := range rec.results {
		if !r.OK {
			unmet++
		}
		results = append(results, r)
	}
	if perr != nil && exitcode.Of(perr) != exitcode.Precondition {
		return results, perr
	}
	switch {
	case denied > 0:
		return results, exitcode.With(exitcode.Denied, fmt.Errorf("preflight: %d permission(s) missing, %d other check(s) failed (nothing was changed)", denied, unmet))
	case unmet > 0:
		return results, exitcode.With(exitcode.Precondition, fmt.Errorf("preflight: %d check(s) failed (nothing was changed)", unmet))
	}
	return results, nil
}

// collect passes results on and keeps them.
type collect struct {
	inner   step.Reporter
	results []step.Result
}

func (c *collect) Action(s, m string)  { c.inner.Action(s, m) }
func (c *collect) Waiting(s, m string) { c.inner.Waiting(s, m) }
func (c *collect) Result(r step.Result) {
	c.results = append(c.results, r)
	c.inner.Result(r)
}

type addFunc func(check string, ok bool, message, fix string, permission bool)

// checkToken: deploy writes the token Secret from it.
// (A malformed one never gets here: the command's Validate exits 2.)
func checkToken(cfg *config.Config, add addFunc) {
	switch {
	case cfg.HFTokenValue() == "":
		add("token", false, "no Hugging Face token: deploy writes it into Secret "+cfg.Workload.Namespace+"/"+cfg.HFToken.SecretName, "export "+config.TokenEnv+"=hf_... or give --hf-token-file FILE, with a token of an account that accepted "+cfg.Workload.Model+"'s licence on huggingface.co", false)
	default:
		add("token", true, "a Hugging Face token is set (not shown)", "", false)
	}
}

// stackObjects are the objects up would apply for the named steps on
// cfg's backend, the token Secret without its data.
func stackObjects(cfg *config.Config, names []string) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, src := range steps.Rendered() {
		d, _ := steps.Lookup(src.Step)
		if !slices.Contains(names, src.Step) || !steps.Used(d, cfg) {
			continue
		}
		objs, err := render.Objects(cfg, src.Step, src.Shared)
		if err != nil {
			return nil, err
		}
		for _, obj := range objs {
			if render.IsTokenSecret(cfg, obj) {
				obj = render.WithoutToken(obj) // no placeholder ever leaves
			}
			out = append(out, obj)
		}
	}
	return out, nil
}

// accesses are the Kubernetes permissions the named steps use: each
// object's verbs, and the reads the checks make (pods, their logs and
// proxy for /metrics, port-forward for verify's load, events and
// endpoint slices).
func accesses(cfg *config.Config, k *kube.Client, objects []*unstructured.Unstructured, names []string) []Access {
	var out []Access
	seen := map[Access]bool{}
	add := func(a Access) {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, obj := range objects {
		gvr, err := k.GVR(obj)
		if err != nil {
			continue // not served: the dry run says so
		}
		for _, v := range objectVerbs {
			add(Access{Verb: v, Group: gvr.Group, Resource: gvr.Resource, Namespace: obj.GetNamespace()})
		}
	}
	ns := cfg.Workload.Namespace
	if slices.Contains(names, deploy.Name) {
		for _, a := range []Access{
			{Verb: "list", Resource: "pods", Namespace: ns}, {Verb: "watch", Resource: "pods", Namespace: ns},
			{Verb: "get", Resource: "pods", Subresource: "log", Namespace: ns},
			{Verb: "get", Resource: "pods", Subresource: "proxy", Namespace: ns},
			{Verb: "create", Resource: "pods", Subresource: "portforward", Namespace: ns},
			{Verb: "list", Resource: "events", Namespace: ns},
			{Verb: "list", Group: "discovery.k8s.io", Resource: "endpointslices", Namespace: ns},
		} {
			add(a)
		}
	}
	if slices.Contains(names, identity.Name) && !cfg.Native() {
		add(Access{Verb: "patch", Resource: "serviceaccounts", Namespace: cfg.Adapter.Namespace})
		add(Access{Verb: "list", Resource: "pods", Namespace: cfg.Adapter.Namespace})
	}
	return out
}

// checkKubeAccess asks the API server, by SelfSubjectAccessReview, for
// each access; one result says all are allowed, or one per denial.
func checkKubeAccess(ctx context.Context, k *kube.Client, want []Access, add addFunc) error {
	var denied []string
	for _, a := range want {
		r, err := k.Typed.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: a.Verb, Group: a.Group, Resource: a.Resource, Subresource: a.Subresource, Namespace: a.Namespace,
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("ask the API server whether you may %s: %w", a, err)
		}
		if !r.Status.Allowed {
			denied = append(denied, a.String())
			add("kubernetes permission", false, "you may not "+a.String(), "a (Cluster)Role granting it, bound to you (cluster-admin covers every one)", true)
		}
	}
	if len(denied) == 0 {
		add("kubernetes permissions", true, fmt.Sprintf("all %d allowed (SelfSubjectAccessReview)", len(want)), "", true)
	}
	return nil
}

// dryRun applies every object with dryRun=All: the API server admits,
// validates and authorizes each (binding a ClusterRole one does not hold
// is refused here), and persists nothing. An object in a namespace that
// does not exist yet (the stack creates it) has nowhere to go: its
// permissions stand for it. An object that exists and is not vllm-hpa's
// (unless --adopt is given), or is another instance's, stops up (exit 7):
// said here too. One line per
// object that fails; one summary line when none does.
func dryRun(ctx context.Context, cfg *config.Config, k *kube.Client, objects []*unstructured.Unstructured, add addFunc) error {
	missing := map[string]bool{}
	ok, skipped, failed := 0, 0, 0
	fail := func(obj *unstructured.Unstructured, msg, fix string, permission bool) {
		failed++
		add("dry run", false, kube.Ref(obj)+": "+msg, fix, permission)
	}
	for _, obj := range objects {
		if ns := obj.GetNamespace(); ns != "" {
			if _, seen := missing[ns]; !seen {
				// Absent, or going (up waits it out and makes it anew).
				live, err := k.Typed.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
				missing[ns] = apierrors.IsNotFound(err) || err == nil && live.Status.Phase == corev1.NamespaceTerminating
			}
			if missing[ns] {
				skipped++
				continue
			}
		}
		if obj.GetKind() != "Namespace" {
			if r, err := k.Resource(obj); err == nil {
				live, err := r.Get(ctx, obj.GetName(), metav1.GetOptions{})
				if err == nil {
					// As up judges it: a rendered object without an
					// instance label is a part every instance shares.
					shared := obj.GetLabels()[owner.InstanceLabel] == ""
					switch j := owner.Judge(live, cfg.Instance, shared); {
					case j.Verdict == owner.Foreign && !cfg.Adopt:
						fail(obj, "exists and is not vllm-hpa's ("+j.Owner+"): up stops here (exit 7)", "give it another name, delete it, or take it over with --adopt", false)
						continue
					case j.Verdict == owner.Other:
						fail(obj, "exists and is "+j.Owner+"'s: up stops here (exit 7)", "give this instance other names (workload.deployment, service.name, hpa.name, ...) or another namespace", false)
						continue
					}
				}
			}
		}
		_, _, err := k.Apply(ctx, obj, nil, kube.ApplyOptions{DryRun: true})
		var nm *kube.NoMatchError
		switch {
		case err == nil:
			ok++
		case errors.As(err, &nm):
			fail(obj, "the cluster does not serve "+obj.GetAPIVersion()+" "+obj.GetKind(), "see the cluster's preconditions for the feature that serves it", false)
		case apierrors.IsForbidden(err):
			fail(obj, firstLine(err.Error()), "", true)
		case exitcode.Of(err) == exitcode.Conflict:
			// A field another manager holds: up stops at its step
			// unless given --force-conflicts.
			fail(obj, firstLine(err.Error()), "--force-conflicts takes the fields over", false)
		default:
			fail(obj, firstLine(err.Error()), "", false)
		}
	}
	if failed == 0 {
		msg := fmt.Sprintf("%d of %d objects accepted by the API server (server-side dry run)", ok, len(objects))
		if skipped > 0 {
			msg += fmt.Sprintf("; %d wait for a namespace the stack creates (their permissions are checked)", skipped)
		}
		add("dry run", true, msg, "", false)
	}
	return nil
}

// checkIAM asks testIamPermissions for what the identity step and its
// cleanup call: the project's policy, and on the gsa route the service
// account and its policy.
func checkIAM(ctx context.Context, cfg *config.Config, deps step.Deps, add addFunc) error {
	perms := slices.Clone(gcp.PermissionsProject)
	account := ""
	if cfg.Identity.Mode != "direct" {
		perms = append(perms, gcp.PermissionsAccount...)
		account = cfg.GSAEmail()
	}
	if cfg.Cluster != "" || deps.ClusterName != "" {
		perms = append(perms, gcp.PermissionsCluster...)
	}
	perms = append(perms, gcp.PermissionsServiceUsage...)
	missing, err := gcp.MissingPermissions(ctx, deps.GCP.Projects, deps.GCP.IAM, cfg.Project, account, perms)
	if err != nil {
		if c := exitcode.Of(err); c == exitcode.Denied || c == exitcode.Precondition {
			add("iam permissions", false, firstLine(err.Error()), "", c == exitcode.Denied)
			return nil
		}
		return err
	}
	for _, p := range missing {
		add("iam permission", false, "you lack "+p+" on project "+cfg.Project, roleFix(p, cfg.Project), true)
	}
	if len(missing) == 0 {
		add("iam permissions", true, fmt.Sprintf("all %d held on project %s (testIamPermissions): %s", len(perms), cfg.Project, strings.Join(perms, ", ")), "", true)
	}
	return nil
}

// roleFix is the grant that gives permission, as a gcloud line.
func roleFix(permission, project string) string {
	role := gcp.RoleFor(permission)
	if role == "" {
		return "a role holding " + permission
	}
	role, _, _ = strings.Cut(role, " ")
	return fmt.Sprintf("gcloud projects add-iam-policy-binding %s --member=user:YOU --role=%s", project, role)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
