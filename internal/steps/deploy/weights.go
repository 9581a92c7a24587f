package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"cloud.google.com/go/iam/apiv1/iampb"
	storage "google.golang.org/api/storage/v1"
	"google.golang.org/grpc/codes"
	appsv1 "k8s.io/api/apps/v1"
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
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// The weights from Cloud Storage (workload.model-source). Before anything
// is written: the bucket holds the model and the caller may change its
// policy. The vLLM pods' own KSA is applied first; its Workload Identity
// principal then gets roles/storage.objectViewer on the bucket (an
// etag-guarded read-modify-write that keeps every other member), recorded
// on the KSA (internal/grants), before the Deployment whose pods stream the
// weights as it. Once the rollout is done, what the configuration no
// longer asks for goes: another bucket's grant, or the KSA with its grants
// when the weights come from Hugging Face again (and the token Secret when
// they no longer do). Cleanup removes only the grants the record says
// vllm-hpa made.

// ErrNoGoogleAPIs is a model bucket without Google API clients to reach it.
var ErrNoGoogleAPIs = errors.New("the model bucket needs the Cloud Storage API: give Google credentials (gcloud auth application-default login)")

// bucketClient is the Cloud Storage client, or exit 5 saying why there is
// none.
func bucketClient(ctx context.Context, deps step.Deps) (*storage.Service, error) {
	var svc *storage.Service
	var err error
	switch {
	case deps.GCP != nil:
		svc, err = deps.GCP.Storage(ctx)
	case deps.OpenStorage != nil:
		// A run that calls no other Google API (a deploy from Hugging
		// Face, a cleanup) opens it only for a grant to remove.
		svc, err = deps.OpenStorage(ctx)
	default:
		return nil, noGoogleAPIs(deps.GCPError)
	}
	if err != nil {
		return nil, noGoogleAPIs(err)
	}
	return svc, nil
}

// noGoogleAPIs is the precondition failure of a run without the Google
// clients it needs (why they did not open, when known).
func noGoogleAPIs(why error) error {
	if why == nil {
		why = errors.New("no Google API clients")
	}
	return exitcode.With(exitcode.Precondition, fmt.Errorf("%w: %v", ErrNoGoogleAPIs, why))
}

// Checks of the model bucket.
const (
	checkPermissions = "model bucket permissions"
	checkGrant       = "model bucket readable by the vLLM pods"
)

// ModelPreconditions judge the model bucket for cfg (none when the weights
// come from Hugging Face): it holds the model (gcp.ModelInBucket), and the
// caller may read and change its policy.
func ModelPreconditions(ctx context.Context, cfg *config.Config, deps step.Deps) ([]gcp.Precondition, error) {
	bucket, dir, ok := cfg.Workload.ModelBucket()
	if !ok {
		return nil, nil
	}
	svc, err := bucketClient(ctx, deps)
	if err != nil {
		return nil, err
	}
	listing, err := gcp.ListModel(ctx, svc, bucket, dir)
	if err != nil {
		return nil, err
	}
	out := []gcp.Precondition{gcp.ModelInBucket(listing, cfg.Workload.Model, cfg.Location)}
	if listing.BucketMissing {
		return out, nil
	}
	missing, err := gcp.MissingBucketPermissions(ctx, svc, bucket, gcp.BucketPermissions)
	if err != nil {
		return nil, err
	}
	p := gcp.Precondition{Check: checkPermissions, OK: len(missing) == 0, Denied: len(missing) > 0, Message: "the caller may list gs://" + bucket + " and change its IAM policy"}
	if !p.OK {
		p.Message = fmt.Sprintf("the caller lacks %s on gs://%s", strings.Join(missing, ", "), bucket)
		p.Fix = fmt.Sprintf("grant the caller roles/storage.admin on the bucket: gcloud storage buckets add-iam-policy-binding gs://%s --member=user:YOU --role=roles/storage.admin", bucket)
	}
	return append(out, p), nil
}

// BeforeWrite refuses, before the first write, a model bucket that does not
// hold the model (exit 5, with the commands that copy it there) or whose
// policy the caller may not change (exit 6).
func (s *Workload) BeforeWrite(ctx context.Context, _, _ []*unstructured.Unstructured) error {
	if err := s.guardRetire(ctx); err != nil {
		return err
	}
	precs, err := ModelPreconditions(ctx, s.cfg, s.Deps())
	if err != nil {
		return err
	}
	for _, p := range precs {
		if !p.OK {
			code := exitcode.Precondition
			if p.Denied {
				code = exitcode.Denied
			}
			return exitcode.With(code, fmt.Errorf("%s (nothing was changed); fix: %s", p.Message, p.Fix))
		}
	}
	// Passed: said among the preconditions, which every command that runs
	// deploy with a bucket checks first (this is the step's own guard).
	return nil
}

// AfterApply grants the model bucket to the vLLM pods' KSA as soon as it
// is applied, and records the grant on it.
func (s *Workload) AfterApply(ctx context.Context, applied *unstructured.Unstructured) error {
	if applied.GetKind() != "ServiceAccount" {
		return nil
	}
	return s.grantBucket(ctx, applied)
}

// principal is the vLLM pods' own KSA as a Workload Identity Federation
// principal, which needs the project number.
func (s *Workload) principal(ctx context.Context) (string, error) {
	gc := s.Deps().GCP
	if gc == nil {
		// The storage client alone (opened for a grant to remove) cannot
		// read the project's number.
		return "", noGoogleAPIs(s.Deps().GCPError)
	}
	number, err := gc.ProjectNumber(ctx, s.cfg.Project)
	if err != nil {
		return "", err
	}
	return s.cfg.WorkloadPrincipal(number), nil
}

func (s *Workload) grantBucket(ctx context.Context, ksa *unstructured.Unstructured) error {
	bucket, _, _ := s.cfg.Workload.ModelBucket()
	svc, err := bucketClient(ctx, s.Deps())
	if err != nil {
		return err
	}
	ctx = gcp.WithNotice(ctx, func(msg string) { s.Report().Waiting(Name, msg) })
	member, err := s.principal(ctx)
	if err != nil {
		return err
	}
	pol := gcp.BucketPolicy(svc, bucket)
	grant := grants.Grant{Resource: pol.Resource(), Role: gcp.RoleObjectViewer, Member: member}
	var current *iampb.Policy
	if _, err := gcp.Retry(ctx, gcp.DefaultBackoff, func(ctx context.Context) (err error) {
		current, err = pol.Get(ctx)
		return err
	}); err != nil {
		return gcp.Classify(err, "get the IAM policy of gs://"+bucket)
	}
	record := grants.Read(ksa)
	if gcp.HasMember(current, grant.Role, grant.Member) {
		s.Report().Action(Name, fmt.Sprintf("gs://%s: %s for %s already granted", bucket, grant.Role, member))
		return objectstep.Uninterrupted(ctx, func(ctx context.Context) error {
			return s.writeRecord(ctx, ksa, grants.Note(record, grant, false, time.Now()))
		})
	}
	// The grant is recorded as vllm-hpa's before it is written: a write
	// that lands after Ctrl+C, after a timeout, or whose answer is lost
	// is then still removed by cleanup (which says "already absent" of
	// one that never landed).
	if err := objectstep.Uninterrupted(ctx, func(ctx context.Context) error {
		return s.writeRecord(ctx, ksa, grants.Note(record, grant, true, time.Now()))
	}); err != nil {
		return err
	}
	what := fmt.Sprintf("add %s for %s on gs://%s", grant.Role, member, bucket)
	return objectstep.Uninterrupted(ctx, func(ctx context.Context) error {
		changed, stats, err := gcp.SetMember(ctx, pol, grant.Role, member, true, gcp.DefaultBackoff)
		if d, ok := gcp.DetailsOf(err); ok && d.Code == codes.InvalidArgument && exitcode.Of(err) == exitcode.Failure {
			// Cloud Storage attaches no ErrorInfo. The one member the
			// write added is the KSA's principal, which IAM refuses while
			// the project's Workload Identity pool does not exist.
			pool := s.cfg.WorkloadPool()
			return exitcode.With(exitcode.Precondition, fmt.Errorf("%s: Cloud Storage refused the member (%s); the Workload Identity pool %s does not exist until a GKE cluster of the project enables Workload Identity: gcloud container clusters update CLUSTER --location LOCATION --workload-pool=%s", what, d.Message, pool, pool))
		}
		if err != nil {
			return gcp.Classify(err, what)
		}
		if !changed {
			s.Report().Action(Name, fmt.Sprintf("gs://%s: %s for %s granted meanwhile by another writer", bucket, grant.Role, member))
			return nil
		}
		s.Report().Action(Name, fmt.Sprintf("gs://%s: %s for %s granted (%s); IAM applies it in about 2 minutes, until then a vLLM pod cannot read the weights and restarts", bucket, grant.Role, member, stats))
		return nil
	})
}

// writeRecord writes the KSA's record of grants when it changed: a merge
// patch, so that deploy's own applies leave it alone.
func (s *Workload) writeRecord(ctx context.Context, ksa *unstructured.Unstructured, record []grants.Grant) error {
	enc := grants.Encode(record)
	old, had := ksa.GetAnnotations()[grants.Annotation]
	if (enc == nil && !had) || (enc != nil && old == enc.(string)) {
		return nil
	}
	out, err := s.Deps().Kube.PatchMetadata(ctx, ksa, nil, map[string]any{grants.Annotation: enc}, "")
	if err == nil {
		ksa.SetAnnotations(out.GetAnnotations())
	}
	return err
}

// ownKSA is the vLLM pods' own KSA when it exists and is this instance's
// (nil otherwise: the record on anyone else's is not ours to act on).
func (s *Workload) ownKSA(ctx context.Context) (*unstructured.Unstructured, error) {
	k, err := s.Kube()
	if err != nil {
		return nil, err
	}
	u, err := k.Dynamic.Resource(kube.ServiceAccountsGVR).Namespace(s.cfg.Workload.Namespace).Get(ctx, s.cfg.Workload.OwnServiceAccount(), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, err
	case owner.Judge(u, s.cfg.Instance, false).Verdict != owner.Mine:
		return nil, nil
	}
	return u, nil
}

// objectRef is an object deploy may have created in another configuration
// than the one rendered now, as cleanup and the retirement look for it.
func objectRef(kind, namespace, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind(kind)
	u.SetNamespace(namespace)
	u.SetName(name)
	return u
}

// unrendered are the objects of the other weights' route: the vLLM pods'
// own KSA when the weights come from Hugging Face, the token Secret when
// they come from a bucket.
func unrendered(cfg *config.Config) *unstructured.Unstructured {
	if cfg.Workload.ServiceAccount() == "" {
		return objectRef("ServiceAccount", cfg.Workload.Namespace, cfg.Workload.OwnServiceAccount())
	}
	return objectRef("Secret", cfg.Workload.Namespace, cfg.HFToken.SecretName)
}

// bucketGrants are the bucket grants a record holds.
func bucketGrants(record []grants.Grant) []grants.Grant {
	var out []grants.Grant
	for _, g := range record {
		if strings.HasPrefix(g.Resource, "projects/_/buckets/") {
			out = append(out, g)
		}
	}
	return out
}

// releaseBuckets removes the recorded bucket grants that wanted rejects:
// those vllm-hpa made are taken out of the bucket's policy, those it found
// are only forgotten; each is taken out of the record as it goes. planOnly
// says what it would do, changing nothing.
func (s *Workload) releaseBuckets(ctx context.Context, ksa *unstructured.Unstructured, wanted func(grants.Grant) bool, planOnly bool) ([]step.Removal, error) {
	var out []step.Removal
	record := grants.Read(ksa)
	for _, g := range bucketGrants(record) {
		if wanted(g) {
			continue
		}
		bucket := strings.TrimPrefix(g.Resource, "projects/_/buckets/")
		rm := step.Removal{Object: fmt.Sprintf("gs://%s: %s for %s", bucket, g.Role, g.Member), Action: step.RemoveDelete}
		if !g.Made {
			rm.Action, rm.Reason = step.RemoveKeep, "found in place, not made by vllm-hpa"
		}
		out = append(out, rm)
		if planOnly {
			continue
		}
		if g.Made {
			if err := s.removeGrant(ctx, bucket, g); err != nil {
				return nil, err
			}
		} else {
			s.Report().Action(Name, fmt.Sprintf("gs://%s: %s for %s left in place (found there, not made by vllm-hpa)", bucket, g.Role, g.Member))
		}
		record = grants.Forget(record, g)
		if err := objectstep.Uninterrupted(ctx, func(ctx context.Context) error { return s.writeRecord(ctx, ksa, record) }); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *Workload) removeGrant(ctx context.Context, bucket string, g grants.Grant) error {
	svc, err := bucketClient(ctx, s.Deps())
	if err != nil {
		return err
	}
	ctx = gcp.WithNotice(ctx, func(msg string) { s.Report().Waiting(Name, msg) })
	changed, _, err := gcp.SetMember(ctx, gcp.BucketPolicy(svc, bucket), g.Role, g.Member, false, gcp.DefaultBackoff)
	if d, ok := gcp.DetailsOf(err); ok && d.Code == codes.NotFound {
		s.Report().Action(Name, fmt.Sprintf("gs://%s no longer exists: %s for %s gone with it", bucket, g.Role, g.Member))
		return nil
	}
	if err != nil {
		return gcp.Classify(err, fmt.Sprintf("remove %s for %s on gs://%s", g.Role, g.Member, bucket))
	}
	verb := "removed"
	if !changed {
		verb = "already absent"
	}
	s.Report().Action(Name, fmt.Sprintf("gs://%s: %s for %s %s", bucket, g.Role, g.Member, verb))
	return nil
}

// retire removes, once the rollout is done (no pod of the old route is
// left to read), what this configuration no longer uses: another bucket's
// grant, or, with the weights from Hugging Face again, the KSA's grants
// and the KSA; with the weights from a bucket, the token Secret.
func (s *Workload) retire(ctx context.Context) error {
	ksa, err := s.ownKSA(ctx)
	if err != nil {
		return err
	}
	if ksa != nil {
		current := ""
		if bucket, _, ok := s.cfg.Workload.ModelBucket(); ok {
			current = gcp.BucketResource(bucket)
		}
		if _, err := s.releaseBuckets(ctx, ksa, func(g grants.Grant) bool { return g.Resource == current }, false); err != nil {
			return err
		}
	}
	obj := unrendered(s.cfg)
	if obj.GetKind() == "ServiceAccount" && ksa == nil {
		return nil
	}
	k, err := s.Kube()
	if err != nil {
		return err
	}
	// Only this instance's own: anyone else's (a Secret made by hand, as
	// render's note says) is not for it to mention on every run.
	live, err := k.Get(ctx, obj)
	if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if owner.Judge(live, s.cfg.Instance, false).Verdict != owner.Mine {
		return nil
	}
	return s.DeleteObjects(ctx, []*unstructured.Unstructured{obj}, "no longer used by this configuration")
}

// GuardDelete refuses a cleanup, before anything is deleted, that could
// not remove a bucket grant vllm-hpa made: without Google credentials it
// would stay behind once the KSA that records it is gone.
func (s *Workload) GuardDelete(ctx context.Context) error {
	return s.guardRelease(ctx, func(grants.Grant) bool { return false }, "cleanup removes", "nothing was deleted")
}

// guardRetire refuses a deploy, before anything is written, whose
// retirement (retire) could not remove a bucket grant vllm-hpa made that
// this configuration no longer uses.
func (s *Workload) guardRetire(ctx context.Context) error {
	current := ""
	if bucket, _, ok := s.cfg.Workload.ModelBucket(); ok {
		current = gcp.BucketResource(bucket)
	}
	return s.guardRelease(ctx, func(g grants.Grant) bool { return g.Resource == current },
		"this configuration no longer uses it and deploy removes it (keep workload.model-source to keep it)", "nothing was changed")
}

// guardRelease fails when a bucket grant vllm-hpa made, that wanted
// rejects, is recorded on the vLLM pods' KSA and the Cloud Storage client
// cannot be had to remove it.
func (s *Workload) guardRelease(ctx context.Context, wanted func(grants.Grant) bool, why, unchanged string) error {
	ksa, err := s.ownKSA(ctx)
	if err != nil || ksa == nil {
		return err
	}
	for _, g := range bucketGrants(grants.Read(ksa)) {
		if !g.Made || wanted(g) {
			continue
		}
		svc, err := bucketClient(ctx, s.Deps())
		if err != nil {
			return exitcode.With(exitcode.Precondition, fmt.Errorf("%s records %s for %s on %s, which vllm-hpa made; %s: %w (%s)", kube.Ref(ksa), g.Role, g.Member, g.Resource, why, err, unchanged))
		}
		bucket := strings.TrimPrefix(g.Resource, "projects/_/buckets/")
		missing, err := gcp.MissingBucketPermissions(ctx, svc, bucket, []string{"storage.buckets.getIamPolicy", "storage.buckets.setIamPolicy"})
		if d, ok := gcp.DetailsOf(err); ok && d.Code == codes.NotFound {
			continue // the bucket is gone, and the grant with it
		}
		if err != nil {
			return err
		}
		if len(missing) > 0 {
			return exitcode.With(exitcode.Denied, fmt.Errorf("%s records %s for %s on gs://%s, which vllm-hpa made; %s, but the caller lacks %s on the bucket (%s)", kube.Ref(ksa), g.Role, g.Member, bucket, why, strings.Join(missing, ", "), unchanged))
		}
	}
	return nil
}

// bucketGrantCheck is verify's and status' judgement of the bucket grant:
// the vLLM KSA's principal holds a role that reads the objects.
func (s *Workload) bucketGrantCheck(ctx context.Context) (step.Result, error) {
	bucket, _, _ := s.cfg.Workload.ModelBucket()
	svc, err := bucketClient(ctx, s.Deps())
	if err != nil {
		return step.Result{Step: Name, Check: checkGrant, Reason: "NotChecked", Message: err.Error()}, nil
	}
	member, err := s.principal(ctx)
	if err != nil {
		return step.Result{Step: Name, Check: checkGrant, Reason: "NotChecked", Message: "the project number, which the pods' principal names, cannot be read: " + err.Error()}, nil
	}
	var pol *iampb.Policy
	if _, err := gcp.Retry(ctx, gcp.DefaultBackoff, func(ctx context.Context) (err error) {
		pol, err = gcp.BucketPolicy(svc, bucket).Get(ctx)
		return err
	}); err != nil {
		return step.Result{}, gcp.Classify(err, "get the IAM policy of gs://"+bucket)
	}
	return BucketGrantResult(pol, bucket, member), nil
}

// BucketGrantResult judges a bucket's policy: member holds
// roles/storage.objectViewer, or a role that includes it.
func BucketGrantResult(pol *iampb.Policy, bucket, member string) step.Result {
	r := step.Result{Step: Name, Check: checkGrant}
	for _, role := range gcp.ObjectReadRoles {
		if gcp.HasMember(pol, role, member) {
			r.OK, r.Message = true, fmt.Sprintf("gs://%s grants %s to %s", bucket, role, member)
			return r
		}
	}
	r.Reason, r.Message = "NotGranted", fmt.Sprintf("gs://%s grants %s no role that reads objects (%s): run vllm-hpa deploy", bucket, member, gcp.RoleObjectViewer)
	return r
}

// BucketCalls are the Google API calls deploy makes for the model bucket
// (a plan reads nothing: the project number is a placeholder).
func BucketCalls(cfg *config.Config) []step.GCPCall {
	bucket, dir, ok := cfg.Workload.ModelBucket()
	if !ok {
		return nil
	}
	return []step.GCPCall{
		{API: gcp.ServiceStorage, Method: "objects.list", Resource: "gs://" + bucket + "/" + dir + "/", Note: "config.json, a tokenizer and *.safetensors must be there"},
		{API: gcp.ServiceStorage, Method: "buckets.setIamPolicy", Resource: gcp.BucketResource(bucket), Role: gcp.RoleObjectViewer, Member: cfg.WorkloadPrincipal("PROJECT_NUMBER"),
			Note: "add this member only (etag-guarded read-modify-write)"},
	}
}

// LiveModelSource is the bucket path the live Deployment's vLLM container
// loads the weights from ("": Hugging Face).
func LiveModelSource(cfg *config.Config, d *appsv1.Deployment) string {
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name != cfg.Workload.Container {
			continue
		}
		for _, a := range c.Args {
			if v, ok := strings.CutPrefix(a, "--model="); ok && strings.HasPrefix(v, config.GCSPrefix) {
				return v
			}
		}
	}
	return ""
}

// JudgeModelSource judges where the live Deployment loads the weights from
// against the configuration (false: they agree, nothing to say but on the
// bucket route).
func JudgeModelSource(cfg *config.Config, live string) (step.Result, bool) {
	r := step.Result{Step: Name, Check: "model source"}
	want := cfg.Workload.ModelSource
	switch {
	case live == want && want == "":
		return r, false
	case live == want:
		r.OK, r.Message = true, "the Deployment streams the weights from "+live
	case live == "":
		r.Reason, r.Message = "OtherSource", "the Deployment downloads the weights from Hugging Face, not from "+want+": run vllm-hpa deploy --model-source "+want
	case want == "":
		r.Reason, r.Message = "OtherSource", "the Deployment streams the weights from "+live+": pass --model-source "+live+" (or set workload.model-source), or run vllm-hpa deploy to load them from Hugging Face again"
	default:
		r.Reason, r.Message = "OtherSource", "the Deployment streams the weights from "+live+", not from "+want+": run vllm-hpa deploy --model-source "+want
	}
	return r, true
}

// ModelCard is one entry of vLLM's GET /v1/models: id is the served model
// name, root the model path the server was started with.
type ModelCard struct {
	ID   string `json:"id"`
	Root string `json:"root"`
}

// ModelLoadedFrom is verify's proof that the server loaded the weights
// from source: its /v1/models says the model it serves (model) has root
// source, the path given to --model.
func ModelLoadedFrom(ctx context.Context, base, model, source string) step.Result {
	r := step.Result{Step: "metrics", Check: "model loaded from " + source}
	return probeGet(ctx, base, "/v1/models", r, func(body io.Reader) step.Result {
		var list struct {
			Data []ModelCard `json:"data"`
		}
		if err := json.NewDecoder(body).Decode(&list); err != nil {
			r.Reason, r.Message = "Unparsable", "GET /v1/models: "+err.Error()
			return r
		}
		return JudgeModelCards(list.Data, model, source)
	})
}

// JudgeModelCards judges /v1/models' cards: the one served as model has
// root source.
func JudgeModelCards(cards []ModelCard, model, source string) step.Result {
	r := step.Result{Step: "metrics", Check: "model loaded from " + source}
	for _, c := range cards {
		if c.ID != model {
			continue
		}
		if strings.TrimSuffix(c.Root, "/") != strings.TrimSuffix(source, "/") {
			r.Reason, r.Message = "OtherSource", fmt.Sprintf("the server serves %s loaded from %s, not from %s: run vllm-hpa deploy (a Deployment of before workload.model-source?)", model, c.Root, source)
			return r
		}
		r.OK, r.Message = true, fmt.Sprintf("/v1/models: %s, root %s", model, c.Root)
		return r
	}
	r.Reason, r.Message = "NotServed", fmt.Sprintf("/v1/models does not list %s", model)
	return r
}
