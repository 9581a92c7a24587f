package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"cloud.google.com/go/iam/apiv1/iampb"
	"google.golang.org/grpc/codes"
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

// The weights from Cloud Storage (workload.model-source): before anything
// is written, the bucket must hold the model; once the vLLM pods' own KSA
// exists, its Workload Identity principal gets roles/storage.objectViewer
// on the bucket (an etag-guarded read-modify-write that keeps every other
// member) and the grant is recorded on the KSA, before the Deployment
// whose pods stream the weights as it. Cleanup removes the grant only
// when the record says vllm-hpa made it.

// ErrNoGoogleAPIs is a model bucket without Google API clients to reach it.
var ErrNoGoogleAPIs = errors.New("workload.model-source needs the Cloud Storage API: give Google credentials (gcloud auth application-default login)")

// storageClients are the Google API clients the bucket is reached through.
func (s *Workload) storageClients() (*gcp.Clients, error) {
	g := s.Deps().GCP
	if g == nil || g.Storage == nil {
		err := ErrNoGoogleAPIs
		if s.Deps().GCPError != nil {
			err = fmt.Errorf("%w: %v", err, s.Deps().GCPError)
		}
		return nil, exitcode.With(exitcode.Precondition, err)
	}
	return g, nil
}

// ModelPrecondition judges the model bucket (gcp.ModelInBucket) for cfg;
// false when the weights come from Hugging Face.
func ModelPrecondition(ctx context.Context, cfg *config.Config, g *gcp.Clients) (gcp.Precondition, bool, error) {
	bucket, dir, ok := cfg.Workload.ModelBucket()
	if !ok {
		return gcp.Precondition{}, false, nil
	}
	listing, err := gcp.ListModel(ctx, g.Storage, bucket, dir)
	if err != nil {
		return gcp.Precondition{}, true, err
	}
	return gcp.ModelInBucket(listing, cfg.Workload.Model, cfg.Location), true, nil
}

// BeforeWrite refuses, before the first write, a model bucket that does not
// hold the model (exit 5, with the commands that copy it there).
func (s *Workload) BeforeWrite(ctx context.Context, _, _ []*unstructured.Unstructured) error {
	if _, _, ok := s.cfg.Workload.ModelBucket(); !ok {
		return nil
	}
	g, err := s.storageClients()
	if err != nil {
		return err
	}
	p, _, err := ModelPrecondition(ctx, s.cfg, g)
	if err != nil {
		return err
	}
	if !p.OK {
		return exitcode.With(exitcode.Precondition, fmt.Errorf("%s (nothing was changed); fix: %s", p.Message, p.Fix))
	}
	s.Report().Result(step.Result{Step: Name, Check: p.Check, OK: true, Message: p.Message})
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

// principal is the vLLM pods' KSA as a Workload Identity Federation
// principal, which needs the project number.
func (s *Workload) principal(ctx context.Context, g *gcp.Clients) (string, error) {
	p, err := g.Project(ctx, s.cfg.Project)
	if err != nil {
		return "", err
	}
	return s.cfg.WorkloadPrincipal(strings.TrimPrefix(p.Name, "projects/")), nil
}

func (s *Workload) grantBucket(ctx context.Context, ksa *unstructured.Unstructured) error {
	bucket, _, _ := s.cfg.Workload.ModelBucket()
	g, err := s.storageClients()
	if err != nil {
		return err
	}
	ctx = gcp.WithNotice(ctx, func(msg string) { s.Report().Waiting(Name, msg) })
	member, err := s.principal(ctx, g)
	if err != nil {
		return err
	}
	pol := gcp.BucketPolicy(g.Storage, bucket)
	changed, stats, err := gcp.SetMember(ctx, pol, gcp.RoleObjectViewer, member, true, gcp.DefaultBackoff)
	what := fmt.Sprintf("add %s for %s on gs://%s", gcp.RoleObjectViewer, member, bucket)
	if d, ok := gcp.DetailsOf(err); ok && d.Code == codes.InvalidArgument && exitcode.Of(err) == exitcode.Failure {
		// Cloud Storage attaches no ErrorInfo; the one member the write
		// added is the vLLM KSA's principal, refused while its pool does
		// not exist.
		pool := s.cfg.WorkloadPool()
		return exitcode.With(exitcode.Precondition, fmt.Errorf("%s: Cloud Storage refused the member (%s): the Workload Identity pool %s does not exist until a GKE cluster of the project enables Workload Identity: gcloud container clusters update CLUSTER --location LOCATION --workload-pool=%s", what, d.Message, pool, pool))
	}
	if err != nil {
		return gcp.Classify(err, what)
	}
	record := grants.Note(grants.Read(ksa), grants.Grant{Resource: pol.Resource(), Role: gcp.RoleObjectViewer, Member: member}, changed, time.Now())
	if changed {
		s.Report().Action(Name, fmt.Sprintf("gs://%s: %s for %s granted (%s); IAM applies it in about 2 minutes, until then a vLLM pod cannot read the weights and restarts", bucket, gcp.RoleObjectViewer, member, stats))
	} else {
		s.Report().Action(Name, fmt.Sprintf("gs://%s: %s for %s already granted", bucket, gcp.RoleObjectViewer, member))
	}
	if ksa.GetAnnotations()[grants.Annotation] == fmt.Sprint(grants.Encode(record)) {
		return nil
	}
	// A grant made is recorded at once: a run cut short after it must
	// not leave it to be found, and so kept, by the next. A merge patch,
	// so that deploy's own applies leave the record alone.
	return objectstep.Uninterrupted(ctx, func(ctx context.Context) error {
		_, err := s.Deps().Kube.PatchMetadata(ctx, ksa, nil, map[string]any{grants.Annotation: grants.Encode(record)}, "")
		return err
	})
}

// ownKSA is the vLLM pods' own KSA when it exists and is this
// instance's (nil otherwise: the record on anyone else's is not ours to
// act on).
func (s *Workload) ownKSA(ctx context.Context, k *kube.Client) (*unstructured.Unstructured, error) {
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

// ksaObject is the vLLM pods' own KSA as cleanup looks for it.
func ksaObject(cfg *config.Config) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("ServiceAccount")
	u.SetNamespace(cfg.Workload.Namespace)
	u.SetName(cfg.Workload.OwnServiceAccount())
	return u
}

// bucketGrantCheck is verify's and status' judgement of the bucket grant:
// the vLLM KSA's principal holds a role that reads the objects.
func (s *Workload) bucketGrantCheck(ctx context.Context) (step.Result, error) {
	bucket, _, _ := s.cfg.Workload.ModelBucket()
	r := step.Result{Step: Name, Check: "model bucket readable by the vLLM pods"}
	g, err := s.storageClients()
	if err != nil {
		r.Reason, r.Message = "NotChecked", err.Error()
		return r, nil
	}
	member, err := s.principal(ctx, g)
	if err != nil {
		return r, err
	}
	pol, err := gcp.BucketPolicy(g.Storage, bucket).Get(ctx)
	if err != nil {
		return r, gcp.Classify(err, "get the IAM policy of gs://"+bucket)
	}
	return BucketGrantResult(pol, bucket, member), nil
}

// releaseBucket removes the bucket grant the record on the vLLM KSA says
// vllm-hpa made (one found in place stays); planOnly says what it would do.
func (s *Workload) releaseBucket(ctx context.Context, planOnly bool) ([]step.Removal, error) {
	k, err := s.Kube()
	if err != nil {
		return nil, err
	}
	ksa, err := s.ownKSA(ctx, k)
	if err != nil || ksa == nil {
		return nil, err
	}
	var out []step.Removal
	for _, gr := range grants.Read(ksa) {
		if !strings.HasPrefix(gr.Resource, "projects/_/buckets/") {
			continue
		}
		rm := step.Removal{Object: fmt.Sprintf("%s: %s for %s", gr.Resource, gr.Role, gr.Member), Action: step.RemoveDelete}
		if !gr.Made {
			rm.Action, rm.Reason = step.RemoveKeep, "found in place, not made by vllm-hpa"
		}
		out = append(out, rm)
		if planOnly || !gr.Made {
			continue
		}
		g, err := s.storageClients()
		if err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(gr.Resource, "projects/_/buckets/")
		changed, _, err := gcp.SetMember(gcp.WithNotice(ctx, func(msg string) { s.Report().Waiting(Name, msg) }), gcp.BucketPolicy(g.Storage, name), gr.Role, gr.Member, false, gcp.DefaultBackoff)
		if d, ok := gcp.DetailsOf(err); ok && d.Code == codes.NotFound {
			s.Report().Action(Name, fmt.Sprintf("gs://%s no longer exists: %s for %s gone with it", name, gr.Role, gr.Member))
			continue
		}
		if err != nil {
			return nil, gcp.Classify(err, fmt.Sprintf("remove %s for %s on gs://%s", gr.Role, gr.Member, name))
		}
		if changed {
			s.Report().Action(Name, fmt.Sprintf("gs://%s: %s for %s removed", name, gr.Role, gr.Member))
		} else {
			s.Report().Action(Name, fmt.Sprintf("gs://%s: %s for %s already absent", name, gr.Role, gr.Member))
		}
	}
	return out, nil
}

// BucketGrantResult judges a bucket's policy: member holds
// roles/storage.objectViewer, or a role that includes it.
func BucketGrantResult(pol *iampb.Policy, bucket, member string) step.Result {
	r := step.Result{Step: Name, Check: "model bucket readable by the vLLM pods"}
	for _, role := range gcp.ObjectReadRoles {
		if gcp.HasMember(pol, role, member) {
			r.OK, r.Message = true, fmt.Sprintf("gs://%s grants %s to %s", bucket, role, member)
			return r
		}
	}
	r.Reason, r.Message = "NotGranted", fmt.Sprintf("gs://%s grants %s no role that reads objects (%s): run vllm-hpa deploy", bucket, member, gcp.RoleObjectViewer)
	return r
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
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/v1/models", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.Reason, r.Message = "Unreachable", err.Error()
		return r
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		r.Reason, r.Message = "HTTPStatus", "GET /v1/models answered "+resp.Status
		return r
	}
	var list struct {
		Data []ModelCard `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&list); err != nil {
		r.Reason, r.Message = "Unparsable", "GET /v1/models: "+err.Error()
		return r
	}
	return JudgeModelCards(list.Data, model, source)
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
