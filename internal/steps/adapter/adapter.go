// Package adapter is the walkthrough's third step: the Custom Metrics
// Stackdriver Adapter (templates/adapter.yaml.tmpl: its namespace, service
// account, RBAC, Deployment, Service and the custom and external metrics
// APIServices, which the HPA controller reads, preferring v1beta2), waited
// for until the Deployment and every APIService are Available. The adapter
// is one per cluster and shared by every instance on it.
package adapter

import (
	"context"
	"errors"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/grants"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/objectstep"
	"github.com/vllm-hpa/vllm-hpa/internal/owner"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/rollout"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// Name is the step's name and command.
const Name = "adapter"

// DeploymentName is the adapter's Deployment and Service name (upstream's).
const DeploymentName = "custom-metrics-stackdriver-adapter"

// Pods selects the adapter's pods.
var Pods = labels.Set{"k8s-app": DeploymentName}.String()

// The adapter's identity, which the identity step sets.
const (
	// WorkloadIdentityAnnotation on the adapter's KSA names the Google
	// service account it acts as.
	WorkloadIdentityAnnotation = "iam.gke.io/gcp-service-account"
	// PodIdentityAnnotation on the adapter's pod template repeats it:
	// changing it rolls the pods, which pick up a changed KSA annotation
	// reliably only when they start.
	PodIdentityAnnotation = "vllm-hpa.io/gcp-service-account"
)

// Definition is the adapter step in the registry.
type Definition struct{}

func (Definition) Name() string { return Name }

// Settings are the keys adapter's command takes as flags.
func (Definition) Settings() []string {
	return []string{"instance", "adopt", "kube.force-conflicts", "adapter.tag", "hpa.backend"}
}

// Timeout is the key of how long the step waits.
func (Definition) Timeout() string { return "timeouts.adapter" }

// UsedWith: GKE's native custom metrics need no adapter and no IAM.
func (Definition) UsedWith(cfg *config.Config) bool { return !cfg.Native() }

func (Definition) Help() step.Help {
	return step.Help{
		Short: "Install the Custom Metrics Stackdriver Adapter",
		Long: `Install the Custom Metrics Stackdriver Adapter (namespace, service account,
RBAC, Deployment, Service, the custom and external metrics APIServices), then
wait for the Deployment and all three APIServices to be Available. The
adapter is one per cluster, shared by every vllm-hpa instance on it: each
instance that uses it is recorded on its objects. An APIService served by
another metrics provider is reported before anything is written and left
alone unless --adopt --force-conflicts is given.`,
	}
}

// Shared: one adapter per cluster, used by every instance on it.
func (Definition) Shared() bool { return true }

func (d Definition) New(cfg *config.Config, deps step.Deps) step.Step {
	s := &Adapter{cfg: cfg}
	s.Base = objectstep.New(Name, cfg, deps, objectstep.Options{Timeout: cfg.Timeouts.Adapter, Shared: d.Shared()}, s)
	return s
}

// Adapter is the adapter step.
type Adapter struct {
	*objectstep.Base
	cfg *config.Config
}

// DescribeForeign says what an APIService the step will not touch serves.
func (s *Adapter) DescribeForeign(live *unstructured.Unstructured) string {
	if live.GetKind() != "APIService" {
		return ""
	}
	return "it serves " + ServedBy(live) + ", another metrics provider's installation"
}

// BeforeWrite stops before taking an APIService away from another
// provider: only one can serve a metrics API.
func (s *Adapter) BeforeWrite(ctx context.Context, objs, live []*unstructured.Unstructured) error {
	var taken []string
	for i, obj := range objs {
		if obj.GetKind() != "APIService" || live[i] == nil {
			continue
		}
		svcNS, _, _ := unstructured.NestedString(live[i].Object, "spec", "service", "namespace")
		svcName, _, _ := unstructured.NestedString(live[i].Object, "spec", "service", "name")
		if svcNS == s.cfg.Adapter.Namespace && svcName == DeploymentName {
			continue
		}
		taken = append(taken, fmt.Sprintf("APIService %s is served by %s", obj.GetName(), ServedBy(live[i])))
	}
	if len(taken) == 0 {
		return nil
	}
	msg := strings.Join(taken, "; ") + "; applying would make the Stackdriver adapter serve it instead"
	if !s.Deps().ForceConflicts {
		return exitcode.With(exitcode.Conflict, errors.New(msg+": remove the other provider or re-run with --force-conflicts to take it over"))
	}
	s.Report().Action(Name, "taking over (--force-conflicts): "+msg)
	return nil
}

// Prepare keeps the adapter's identity, which is the identity step's and
// set by merge patch: an apply leaves it alone, unless an earlier version
// of vllm-hpa applied it (then the apply must keep it, or it would remove
// it).
func (s *Adapter) Prepare(obj, live *unstructured.Unstructured) error {
	switch {
	case live == nil:
	case obj.GetKind() == "ServiceAccount" && kube.AppliedByUs(live, "metadata", "annotations", WorkloadIdentityAnnotation):
		if v, ok := live.GetAnnotations()[WorkloadIdentityAnnotation]; ok {
			a := obj.GetAnnotations()
			if a == nil {
				a = map[string]string{}
			}
			a[WorkloadIdentityAnnotation] = v
			obj.SetAnnotations(a)
		}
	case obj.GetKind() == "Deployment" && kube.AppliedByUs(live, "spec", "template", "metadata", "annotations", PodIdentityAnnotation):
		if v, ok, _ := unstructured.NestedString(live.Object, "spec", "template", "metadata", "annotations", PodIdentityAnnotation); ok {
			return unstructured.SetNestedField(obj.Object, v, "spec", "template", "metadata", "annotations", PodIdentityAnnotation)
		}
	}
	return nil
}

// IdentityPending reports whether the adapter's Kubernetes service
// account (nil: absent) shows that the identity step has not given the
// adapter its identity yet: no record of its grants, or, in gsa mode, not
// the annotation it wants.
func IdentityPending(ksa *unstructured.Unstructured, cfg *config.Config) bool {
	if ksa == nil {
		return true
	}
	a := ksa.GetAnnotations()
	if _, ok := a[GrantsAnnotation]; !ok {
		return true
	}
	return cfg.Identity.Mode == "gsa" && a[WorkloadIdentityAnnotation] != cfg.GSAEmail()
}

// GrantsAnnotation, on the adapter's KSA, records the identity's IAM grants
// (the identity step writes it).
const GrantsAnnotation = grants.Annotation

// Wait waits for the adapter to serve. The real adapter exits at start
// when it cannot read Cloud Monitoring, so until the identity step has
// given it Workload Identity its pods restart: then the step ends with
// its objects in place, and the identity step waits for it to serve.
func (s *Adapter) Wait(ctx context.Context) error {
	k, report := s.Deps().Kube, s.Report()
	ksa, err := k.Get(ctx, ServiceAccountObject(s.cfg))
	if err != nil {
		return err
	}
	pending := IdentityPending(ksa, s.cfg)
	err = WaitServing(ctx, k, report, Name, s.cfg, s.Seen(kube.DeploymentsGVR, s.cfg.Adapter.Namespace, DeploymentName), s.Seen(kube.APIServicesGVR, "", ""), pending)
	var crashed *rollout.Crashed
	// It exits with an error, as the adapter does when Cloud Monitoring
	// refuses it (not killed for its memory, say).
	if pending && errors.As(err, &crashed) && crashed.Reason == "Error" {
		report.Action(Name, "the adapter's pods exit at start until it can read Cloud Monitoring ("+crashed.Error()+"): it serves once it has Workload Identity (vllm-hpa identity, which waits for it)")
		return nil
	}
	return err
}

// WaitServing waits until the adapter serves: its Deployment's rollout
// done and its APIServices Available, reporting each as stepName's. With
// stopOnCrash a pod that exits at start ends the wait (*rollout.Crashed).
func WaitServing(ctx context.Context, k *kube.Client, report step.Reporter, stepName string, cfg *config.Config, seenDeployment, seenAPIServices []*unstructured.Unstructured, stopOnCrash bool) error {
	ns := cfg.Adapter.Namespace
	wait := rollout.Wait
	if stopOnCrash {
		wait = rollout.WaitUnlessCrashing
	}
	if err := wait(ctx, k, report, stepName, ns, DeploymentName, Pods, seenDeployment); err != nil {
		return err
	}
	report.Result(step.Result{Step: stepName, Check: "adapter available", OK: true})
	names, err := APIServiceNames(cfg)
	if err != nil {
		return err
	}
	var results []step.Result
	err = kube.Until(ctx, "the metrics APIServices to be Available",
		kube.Watch{Resource: k.Dynamic.Resource(kube.APIServicesGVR), LabelSelector: owner.SharedSelector(cfg.Instance), Seen: seenAPIServices},
		func(objs []*unstructured.Unstructured) (bool, string, error) {
			results = APIServiceResults(stepName, names, objs)
			return allOK(results), firstFailure(results), nil
		}, func(r string) { report.Waiting(stepName, r) })
	if err == nil {
		for _, r := range results {
			report.Result(r)
		}
	}
	return err
}

// APIServiceNames are the APIServices the step renders.
func APIServiceNames(cfg *config.Config) ([]string, error) {
	objs, err := render.Objects(cfg, Name, Definition{}.Shared())
	if err != nil {
		return nil, err
	}
	var names []string
	for _, o := range objs {
		if o.GetKind() == "APIService" {
			names = append(names, o.GetName())
		}
	}
	return names, nil
}

// ServiceAccountObject is the adapter's Kubernetes service account, by
// name only.
func ServiceAccountObject(cfg *config.Config) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("ServiceAccount")
	u.SetNamespace(cfg.Adapter.Namespace)
	u.SetName(cfg.Adapter.ServiceAccount)
	return u
}

// Check judges the adapter's rollout and its APIServices.
func (s *Adapter) Check(ctx context.Context) ([]step.Result, error) {
	k, err := s.Kube()
	if err != nil {
		return nil, err
	}
	r, err := rollout.Check(ctx, k, Name, "adapter available", s.cfg.Adapter.Namespace, DeploymentName, "vllm-hpa adapter")
	if err != nil {
		return nil, err
	}
	names, err := APIServiceNames(s.cfg)
	if err != nil {
		return nil, err
	}
	list, err := k.Dynamic.Resource(kube.APIServicesGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	return append([]step.Result{r}, APIServiceResults(Name, names, kube.Items(list))...), nil
}

// ServedBy names what serves an APIService.
func ServedBy(live *unstructured.Unstructured) string {
	svcNS, _, _ := unstructured.NestedString(live.Object, "spec", "service", "namespace")
	svcName, _, _ := unstructured.NestedString(live.Object, "spec", "service", "name")
	if svcName == "" {
		return "kube-apiserver itself (a local APIService)"
	}
	return "Service " + svcNS + "/" + svcName
}

// APIServiceResults judges the named APIServices among objs.
func APIServiceResults(stepName string, names []string, objs []*unstructured.Unstructured) []step.Result {
	byName := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		byName[o.GetName()] = o
	}
	var results []step.Result
	for _, name := range names {
		r := step.Result{Step: stepName, Check: "apiservice " + name + " available"}
		u, ok := byName[name]
		if !ok {
			r.Reason, r.Message = "NotFound", "APIService "+name+" does not exist"
		} else if as, err := kube.Convert[apiregistrationv1.APIService](u); err != nil {
			r.Reason, r.Message = "Invalid", err.Error()
		} else {
			r.OK, r.Reason, r.Message = APIServiceStatus(as)
		}
		results = append(results, r)
	}
	return results
}

// APIServiceStatus reads an APIService's Available condition.
func APIServiceStatus(a *apiregistrationv1.APIService) (ok bool, reason, message string) {
	for _, c := range a.Status.Conditions {
		if c.Type == apiregistrationv1.Available {
			return c.Status == apiregistrationv1.ConditionTrue, c.Reason, c.Message
		}
	}
	return false, "NoCondition", "no Available condition yet"
}

func allOK(rs []step.Result) bool {
	for _, r := range rs {
		if !r.OK {
			return false
		}
	}
	return true
}

func firstFailure(rs []step.Result) string {
	for _, r := range rs {
		if !r.OK {
			return r.Check + ": " + r.Reason + " " + r.Message
		}
	}
	return ""
}
