// Package deploy is the walkthrough's first step: the Hugging Face token
// Secret, the vLLM Deployment and its Service (templates/deploy.yaml.tmpl),
// waited for until the rollout is done and the Service has ready
// endpoints.
package deploy

import (
	"context"
	"errors"
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/grants"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/objectstep"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/rollout"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// Name is the step's name and command.
const Name = "deploy"

// ErrTokenMissing is the deploy step's missing Hugging Face token.
var ErrTokenMissing = errors.New("no Hugging Face token: set HF_TOKEN or --hf-token-file (the model's Secret needs it)")

// Definition is the deploy step in the registry.
type Definition struct{}

func (Definition) Name() string { return Name }

// Settings are the keys deploy's command takes as flags.
func (Definition) Settings() []string {
	return []string{"instance", "adopt", "kube.force-conflicts", "workload.namespace", "workload.deployment", "workload.app-label", "workload.image", "workload.model", "workload.accelerator", "workload.compute-class", "workload.drain", "workload.model-source", "hf-token.file", "service.name"}
}

// Timeout is the key of how long the step waits.
func (Definition) Timeout() string { return "timeouts.deploy" }

func (Definition) Help() step.Help {
	return step.Help{
		Short: "Deploy the vLLM server: token Secret, Deployment and Service",
		Long: `Create or update the Hugging Face token Secret, the vLLM Deployment and its
ClusterIP Service, then wait until the Deployment is Available at its current
generation, its pods are Ready and the Service has ready endpoints. While
waiting it says why not (scheduling, GPU quota, image pulls, crash loops).

With --model-source gs://BUCKET/PATH the weights stream from Cloud Storage
(vLLM's Run:ai streamer) in place of a download from Hugging Face: deploy
first checks that the bucket holds the model (else exit 5 with the commands
that copy it there), gives the vLLM pods a Kubernetes service account of
their own and grants its Workload Identity principal
roles/storage.objectViewer on the bucket, keeping every other member.`,
		Example: "  vllm-hpa deploy --project my-proj\n  vllm-hpa deploy --project my-proj --model-source gs://my-models/google/gemma-3-1b-it",
	}
}

// Requires the token, for its Secret, unless the weights come from a
// bucket (the tokenizer comes with them: nothing reads Hugging Face).
func (Definition) Requires(cfg *config.Config) step.Requirements {
	_, _, fromBucket := cfg.Workload.ModelBucket()
	return step.Requirements{Token: !fromBucket}
}

func (Definition) New(cfg *config.Config, deps step.Deps) step.Step {
	s := &Workload{cfg: cfg}
	s.Base = objectstep.New(Name, cfg, deps, objectstep.Options{Timeout: cfg.Timeouts.Deploy}, s)
	return s
}

// Workload is the deploy step.
type Workload struct {
	*objectstep.Base
	cfg *config.Config
}

// Prepare puts the token into the Secret (there is none without one:
// commands refuse to start deploy without it), and leaves the replica
// count to whoever scales the Deployment.
func (s *Workload) Prepare(obj, live *unstructured.Unstructured) error {
	switch obj.GetKind() {
	case "Secret":
		if s.cfg.HFTokenValue() == "" {
			return exitcode.With(exitcode.BadInput, ErrTokenMissing)
		}
		return render.SetSecretToken(s.cfg, obj, s.cfg.HFTokenValue())
	case "Deployment":
		KeepComputeClass(s.cfg, obj, live)
		return Replicas(obj, live)
	}
	return nil
}

// KeepComputeClass keeps the ComputeClass the live Deployment's pods
// select, when vllm-hpa selected it (up chose the cluster's one way to GPU
// nodes) and workload.compute-class names none: a later run that cannot
// read the cluster's classes (no Google credentials, deploy alone) must
// not move the pods back to selectors no node answers.
func KeepComputeClass(cfg *config.Config, obj, live *unstructured.Unstructured) {
	if cfg.Workload.ComputeClass != "" || live == nil {
		return
	}
	path := []string{"spec", "template", "spec", "nodeSelector"}
	class, _, _ := unstructured.NestedString(live.Object, append(path, gcp.ComputeClassLabel)...)
	if class == "" || !kube.AppliedByUs(live, append(path, gcp.ComputeClassLabel)...) {
		return
	}
	cfg.Workload.ComputeClass = class
	_ = unstructured.SetNestedStringMap(obj.Object, map[string]string{gcp.ComputeClassLabel: class}, path...)
	// The class decides Spot, as it would have rendered.
	unstructured.RemoveNestedField(obj.Object, "spec", "template", "spec", "tolerations")
}

// Replicas decides spec.replicas of the Deployment vllm-hpa applies, as
// Kubernetes advises for a Deployment an HPA manages: it is rendered only
// when workload.replicas is given (else the default, 1, and the HPA's
// count thereafter), and once the Deployment exists it is never set to
// anything but its live value. Once another manager owns it (the HPA
// controller, kubectl scale) vllm-hpa leaves it out, so that neither a
// re-run nor a race with the HPA can scale the Deployment back; while
// vllm-hpa alone owns it, it applies the live count (leaving it out then
// would reset it to 1).
func Replicas(obj, live *unstructured.Unstructured) error {
	switch {
	case live == nil:
		return nil
	case kube.OwnedByOthers(live, "spec", "replicas") || !kube.AppliedByUs(live, "spec", "replicas"):
		unstructured.RemoveNestedField(obj.Object, "spec", "replicas")
		return nil
	}
	n, found, _ := unstructured.NestedInt64(live.Object, "spec", "replicas")
	if !found {
		unstructured.RemoveNestedField(obj.Object, "spec", "replicas")
		return nil
	}
	return unstructured.SetNestedField(obj.Object, n, "spec", "replicas")
}

// RetryApply: the HPA (or kubectl) scaled the Deployment between the read
// and the apply, taking the replica count over: read it again, then the
// count is left to them.
func (s *Workload) RetryApply(err error) bool { return kube.ConflictOnlyOn(err, ".spec.replicas") }

func (s *Workload) podSelector() string { return labels.Set{"app": s.cfg.Workload.AppLabel}.String() }

// Wait waits for the rollout, then for the Service's ready endpoints.
func (s *Workload) Wait(ctx context.Context) error {
	w, k, report := s.cfg.Workload, s.Deps().Kube, s.Report()
	if err := rollout.Wait(ctx, k, report, Name, w.Namespace, w.Deployment, s.podSelector(),
		s.Seen(kube.DeploymentsGVR, w.Namespace, w.Deployment)); err != nil {
		return err
	}
	report.Result(step.Result{Step: Name, Check: "deployment available", OK: true})
	if err := kube.Until(ctx, "Service "+w.Namespace+"/"+s.cfg.Service.Name+" to have ready endpoints",
		kube.Watch{Resource: k.Dynamic.Resource(kube.EndpointSlicesGVR).Namespace(w.Namespace), LabelSelector: discoveryv1.LabelServiceName + "=" + s.cfg.Service.Name},
		func(objs []*unstructured.Unstructured) (bool, string, error) {
			ok, reason := ServiceEndpoints(objs)
			return ok, reason, nil
		}, func(r string) { report.Waiting(Name, r) }); err != nil {
		return err
	}
	report.Result(step.Result{Step: Name, Check: "service endpoints ready", OK: true})
	// No pod of the other weights' route is left: what it used can go.
	return s.retire(ctx)
}

// Check judges the rollout, the token Secret and the Service's endpoints.
func (s *Workload) Check(ctx context.Context) ([]step.Result, error) {
	k, err := s.Kube()
	if err != nil {
		return nil, err
	}
	w := s.cfg.Workload
	d, err := kube.GetTyped[appsv1.Deployment](ctx, k, kube.DeploymentsGVR, w.Namespace, w.Deployment)
	r := step.Result{Step: Name, Check: "deployment available"}
	switch {
	case err != nil:
		return nil, err
	case d == nil:
		r.Reason, r.Message = "NotFound", "Deployment "+w.Namespace+"/"+w.Deployment+" does not exist: run vllm-hpa deploy"
	default:
		r.OK, r.Reason, r.Message = rollout.Status(d)
	}
	results := []step.Result{r}
	if d != nil {
		if r, ok := JudgeModelSource(s.cfg, LiveModelSource(s.cfg, d)); ok {
			results = append(results, r)
		}
	}
	reads, err := readSecrets(ctx, k, w.Namespace, secretRefs(s.cfg, d))
	if err != nil {
		return nil, err
	}
	results = append(results, JudgeSecrets(s.cfg, reads)...)
	endpointSlices, err := k.Dynamic.Resource(kube.EndpointSlicesGVR).Namespace(w.Namespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + s.cfg.Service.Name})
	if err != nil {
		return nil, err
	}
	r = step.Result{Step: Name, Check: "service endpoints ready"}
	r.OK, r.Message = ServiceEndpoints(kube.Items(endpointSlices))
	results = append(results, r)
	if _, _, ok := s.cfg.Workload.ModelBucket(); ok {
		r, err := s.bucketGrantCheck(ctx)
		if err != nil {
			return nil, err
		}
		results = append(results, r)
	}
	return results, nil
}

// ExtraDeletes are the object of the other weights' route (the vLLM pods'
// own KSA, or the token Secret: an instance deployed one way and cleaned
// up with the other configuration), and the workload namespace, if deploy
// created it (cleanup checks the labels and that nothing else is left in
// it).
func (s *Workload) ExtraDeletes() []*unstructured.Unstructured {
	return []*unstructured.Unstructured{unrendered(s.cfg), objectstep.NamespaceObject(s.cfg, Name, s.cfg.Workload.Namespace)}
}

// Plan adds the model bucket's Google API calls to the objects.
func (s *Workload) Plan(ctx context.Context) (*step.Plan, error) {
	p, err := s.Base.Plan(ctx)
	if err != nil {
		return nil, err
	}
	p.GCPCalls = BucketCalls(s.cfg)
	return p, nil
}

// PlanDelete: the bucket grants recorded on the vLLM pods' KSA go first
// (the record goes with the KSA), then the objects.
func (s *Workload) PlanDelete(ctx context.Context, pending step.Pending) (*step.Plan, error) {
	ksa, err := s.ownKSA(ctx)
	if err != nil {
		return nil, err
	}
	var bucket []step.Removal
	if ksa != nil {
		if bucket, err = s.releaseBuckets(ctx, ksa, func(grants.Grant) bool { return false }, true); err != nil {
			return nil, err
		}
		if err := s.GuardDelete(ctx); err != nil {
			for i := range bucket {
				if bucket[i].Action == step.RemoveDelete {
					bucket[i].Reason = "cleanup would refuse: " + err.Error()
				}
			}
		}
	}
	p, err := s.Base.PlanDelete(ctx, pending)
	if err != nil {
		return nil, err
	}
	p.Removals = append(bucket, p.Removals...)
	return p, nil
}

// Delete removes the bucket grants vllm-hpa made, then the objects.
func (s *Workload) Delete(ctx context.Context) error {
	ksa, err := s.ownKSA(ctx)
	if err != nil {
		return err
	}
	if ksa != nil {
		if _, err := s.releaseBuckets(ctx, ksa, func(grants.Grant) bool { return false }, false); err != nil {
			return err
		}
	}
	return s.Base.Delete(ctx)
}

// SecretRead is one Secret key the vLLM container reads (the token's
// first, unless the weights come from a bucket, then every other key the
// live container references), and what reading it found.
type SecretRead struct {
	Name, Key, Env string
	// Token: the Hugging Face token's key, judged as a token.
	Token bool
	// Err is the read's error: NotFound and Forbidden are judged,
	// others stop the check.
	Err    error
	Value  []byte
	HasKey bool
}

// secretRefs are the Secret keys the vLLM container reads: the token's,
// and the live Deployment d's required references.
func secretRefs(cfg *config.Config, d *appsv1.Deployment) []SecretRead {
	token := SecretRead{Name: cfg.HFToken.SecretName, Key: cfg.HFToken.SecretKey, Env: cfg.HFToken.EnvName, Token: true}
	var refs []SecretRead
	// The token, when the configuration and the live Deployment both read
	// the weights from Hugging Face (a mismatch is JudgeModelSource's).
	if cfg.Workload.ServiceAccount() == "" && (d == nil || LiveModelSource(cfg, d) == "") {
		refs = append(refs, token)
	}
	if d == nil {
		return refs
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name != cfg.Workload.Container {
			continue
		}
		for _, e := range c.Env {
			if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || (e.ValueFrom.SecretKeyRef.Optional != nil && *e.ValueFrom.SecretKeyRef.Optional) {
				continue
			}
			r := SecretRead{Name: e.ValueFrom.SecretKeyRef.Name, Key: e.ValueFrom.SecretKeyRef.Key, Env: e.Name}
			if !slices.ContainsFunc(refs, func(o SecretRead) bool { return o.Name == r.Name && o.Key == r.Key }) {
				refs = append(refs, r)
			}
		}
	}
	return refs
}

// readSecrets reads each reference's Secret; an error other than NotFound
// and Forbidden is the read's.
func readSecrets(ctx context.Context, k *kube.Client, namespace string, refs []SecretRead) ([]SecretRead, error) {
	for i := range refs {
		r := &refs[i]
		sec, err := k.Typed.CoreV1().Secrets(namespace).Get(ctx, r.Name, metav1.GetOptions{})
		switch {
		case err == nil:
			r.Value, r.HasKey = sec.Data[r.Key]
		case apierrors.IsNotFound(err) || apierrors.IsForbidden(err):
			r.Err = err
		default:
			return nil, err
		}
	}
	return refs, nil
}

// JudgeSecrets judges what the vLLM container reads from Secrets: the
// token Secret exists and holds a token under its key (not a placeholder
// such as a rendered copy would hold, and the configured token when one is
// given); every other Secret key the live container references exists.
func JudgeSecrets(cfg *config.Config, reads []SecretRead) []step.Result {
	ns := cfg.Workload.Namespace
	var out []step.Result
	for _, r := range reads {
		res := step.Result{Step: Name, Check: "token secret holds a token"}
		if !r.Token {
			res.Check = "secret " + r.Name + " key " + r.Key + " exists"
		}
		switch {
		case apierrors.IsNotFound(r.Err):
			res.Reason, res.Message = "NotFound", fmt.Sprintf("Secret %s/%s does not exist (the container reads %s from it): run vllm-hpa deploy", ns, r.Name, r.Env)
		case r.Err != nil:
			res.Reason, res.Message = "Forbidden", fmt.Sprintf("cannot read Secret %s/%s with these credentials, so the token is not proven", ns, r.Name)
		case !r.HasKey:
			res.Reason, res.Message = "KeyMissing", fmt.Sprintf("Secret %s/%s has no key %s (the container reads %s from it)", ns, r.Name, r.Key, r.Env)
		case !r.Token:
			res.OK, res.Message = true, fmt.Sprintf("%s from Secret %s/%s", r.Env, r.Name, r.Key)
		case render.IsPlaceholderToken(string(r.Value)):
			res.Reason, res.Message = "Placeholder", fmt.Sprintf("Secret %s/%s holds a placeholder, not a token (was a rendered copy applied over it?): run vllm-hpa deploy with HF_TOKEN or --hf-token-file", ns, r.Name)
		case cfg.HFTokenValue() != "" && string(r.Value) != cfg.HFTokenValue():
			res.Reason, res.Message = "Stale", fmt.Sprintf("Secret %s/%s holds another token than the one given (HF_TOKEN or --hf-token-file): run vllm-hpa deploy to update it", ns, r.Name)
		default:
			res.OK, res.Message = true, fmt.Sprintf("%s/%s key %s (%d characters; value never shown)", ns, r.Name, r.Key, len(r.Value))
		}
		out = append(out, res)
	}
	return out
}

// ServiceEndpoints judges a Service's EndpointSlices: ready when one
// endpoint is.
func ServiceEndpoints(objs []*unstructured.Unstructured) (bool, string) {
	var slices []*discoveryv1.EndpointSlice
	for _, o := range objs {
		if es, err := kube.Convert[discoveryv1.EndpointSlice](o); err == nil {
			slices = append(slices, es)
		}
	}
	n := endpointsReady(slices)
	if n == 0 {
		return false, "the Service has no ready endpoints yet"
	}
	return true, fmt.Sprintf("%d ready endpoints", n)
}

// endpointsReady counts the ready endpoints across a Service's slices.
func endpointsReady(slices []*discoveryv1.EndpointSlice) int {
	n := 0
	for _, s := range slices {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready == nil || *e.Conditions.Ready {
				n++
			}
		}
	}
	return n
}
