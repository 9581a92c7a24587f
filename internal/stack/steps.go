package stack

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gmp"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/owner"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

var (
	deploymentsGVR    = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	podsGVR           = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	eventsGVR         = schema.GroupVersionResource{Version: "v1", Resource: "events"}
	endpointSlicesGVR = schema.GroupVersionResource{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"}
	apiServicesGVR    = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
	hpaGVR            = schema.GroupVersionResource{Group: "autoscaling", Version: "v2", Resource: "horizontalpodautoscalers"}
)

// adapterName is the adapter's Deployment and Service name (upstream's).
const adapterName = "custom-metrics-stackdriver-adapter"

// adapterPods selects the adapter's pods.
var adapterPods = labels.Set{"k8s-app": adapterName}.String()

// ErrTokenMissing is the deploy step's missing Hugging Face token.
var ErrTokenMissing = errors.New("no Hugging Face token: set HF_TOKEN or --hf-token-file (the model's Secret needs it)")

// Preflight checks, before any step runs, what the named steps need beyond
// a valid configuration.
func (s *Stack) Preflight(names []string) error {
	for _, n := range names {
		if n == "deploy" && s.cfg.HFTokenValue() == "" {
			return exitcode.With(exitcode.BadInput, ErrTokenMissing)
		}
	}
	return nil
}

// --- deploy ---------------------------------------------------------------

func newDeployStep(cfg *config.Config, deps Deps) *objectsStep {
	w := cfg.Workload
	s := &objectsStep{name: "deploy", cfg: cfg, deps: deps, timeout: cfg.Timeouts.Deploy}
	s.preflight = func(ctx context.Context, objs, live []*unstructured.Unstructured) error {
		if cfg.HFTokenValue() == "" {
			return exitcode.With(exitcode.BadInput, ErrTokenMissing)
		}
		return nil
	}
	s.prepare = func(obj, live *unstructured.Unstructured) error {
		switch obj.GetKind() {
		case "Secret":
			return render.SetSecretToken(cfg, obj, cfg.HFTokenValue())
		case "Deployment":
			// The HPA owns the replica count once it exists: apply the live
			// count so that a re-run never scales the Deployment back.
			if live != nil {
				if n, found, _ := unstructured.NestedInt64(live.Object, "spec", "replicas"); found {
					return unstructured.SetNestedField(obj.Object, n, "spec", "replicas")
				}
			}
		}
		return nil
	}
	s.wait = func(ctx context.Context) error {
		k := deps.Kube
		if err := waitRollout(ctx, k, deps.Report, s.name, w.Namespace, w.Deployment, labels.Set{"app": w.AppLabel}.String(),
			s.seen(deploymentsGVR, w.Namespace, w.Deployment)); err != nil {
			return err
		}
		deps.Report.Result(step.Result{Step: s.name, Check: "deployment available", OK: true})
		if err := kube.Until(ctx, "Service "+w.Namespace+"/"+cfg.Service.Name+" to have ready endpoints",
			kube.Watch{Resource: k.Dynamic.Resource(endpointSlicesGVR).Namespace(w.Namespace), LabelSelector: discoveryv1.LabelServiceName + "=" + cfg.Service.Name},
			func(objs []*unstructured.Unstructured) (bool, string, error) {
				ok, reason := serviceEndpoints(objs)
				return ok, reason, nil
			}, func(r string) { deps.Report.Waiting(s.name, r) }); err != nil {
			return err
		}
		deps.Report.Result(step.Result{Step: s.name, Check: "service endpoints ready", OK: true})
		return nil
	}
	s.check = func(ctx context.Context) ([]step.Result, error) {
		k := deps.Kube
		var results []step.Result
		d, err := getTyped[appsv1.Deployment](ctx, k, deploymentsGVR, w.Namespace, w.Deployment)
		r := step.Result{Step: s.name, Check: "deployment available"}
		switch {
		case err != nil:
			return nil, err
		case d == nil:
			r.Reason, r.Message = "NotFound", "Deployment "+w.Namespace+"/"+w.Deployment+" does not exist: run vllm-hpa deploy"
		default:
			r.OK, r.Reason, r.Message = rolloutStatus(d)
		}
		results = append(results, r)
		tokens, err := tokenSecretResults(ctx, k, cfg, d)
		if err != nil {
			return nil, err
		}
		results = append(results, tokens...)
		slices, err := k.Dynamic.Resource(endpointSlicesGVR).Namespace(w.Namespace).List(ctx, listBy(discoveryv1.LabelServiceName+"="+cfg.Service.Name))
		if err != nil {
			return nil, err
		}
		r = step.Result{Step: s.name, Check: "service endpoints ready"}
		r.OK, r.Message = serviceEndpoints(items(slices))
		results = append(results, r)
		return results, nil
	}
	s.extraDeletes = func() []*unstructured.Unstructured {
		// The workload namespace, if deploy created it (deleteOwned checks
		// the labels and that nothing foreign is left in it).
		return []*unstructured.Unstructured{namespaceObject(cfg, s.name, w.Namespace)}
	}
	return s
}

// tokenSecretResults checks what the vLLM container reads from Secrets: the
// token Secret exists, holds a token under its key (not a placeholder such
// as a rendered copy would hold, and the configured token when one is
// given), and every Secret key the live Deployment's container references
// exists.
func tokenSecretResults(ctx context.Context, k *kube.Client, cfg *config.Config, d *appsv1.Deployment) ([]step.Result, error) {
	type ref struct{ name, key, env string }
	refs := []ref{{cfg.HFToken.SecretName, cfg.HFToken.SecretKey, cfg.HFToken.EnvName}}
	if d != nil {
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name != cfg.Workload.Container {
				continue
			}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && !(e.ValueFrom.SecretKeyRef.Optional != nil && *e.ValueFrom.SecretKeyRef.Optional) {
					r := ref{e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key, e.Name}
					if r.name != refs[0].name || r.key != refs[0].key {
						refs = append(refs, r)
					}
				}
			}
		}
	}
	var out []step.Result
	for i, r := range refs {
		res := step.Result{Step: "deploy", Check: "token secret holds a token"}
		if i > 0 {
			res.Check = "secret " + r.name + " key " + r.key + " exists"
		}
		sec, err := k.Typed.CoreV1().Secrets(cfg.Workload.Namespace).Get(ctx, r.name, getOpts)
		value, hasKey := []byte(nil), false
		if err == nil {
			value, hasKey = sec.Data[r.key]
		}
		switch {
		case notFound(err):
			res.Reason, res.Message = "NotFound", fmt.Sprintf("Secret %s/%s does not exist (the container reads %s from it): run vllm-hpa deploy", cfg.Workload.Namespace, r.name, r.env)
		case apierrors.IsForbidden(err):
			res.Reason, res.Message = "Forbidden", fmt.Sprintf("cannot read Secret %s/%s with these credentials, so the token is not proven", cfg.Workload.Namespace, r.name)
		case err != nil:
			return nil, err
		case !hasKey:
			res.Reason, res.Message = "KeyMissing", fmt.Sprintf("Secret %s/%s has no key %s (the container reads %s from it)", cfg.Workload.Namespace, r.name, r.key, r.env)
		case i > 0:
			res.OK, res.Message = true, fmt.Sprintf("%s from Secret %s/%s", r.env, r.name, r.key)
		case render.IsPlaceholderToken(string(value)):
			res.Reason, res.Message = "Placeholder", fmt.Sprintf("Secret %s/%s holds a placeholder, not a token (was a rendered copy applied over it?): run vllm-hpa deploy with HF_TOKEN or --hf-token-file", cfg.Workload.Namespace, r.name)
		case cfg.HFTokenValue() != "" && string(value) != cfg.HFTokenValue():
			res.Reason, res.Message = "Stale", fmt.Sprintf("Secret %s/%s holds another token than the one given (HF_TOKEN or --hf-token-file): run vllm-hpa deploy to update it", cfg.Workload.Namespace, r.name)
		default:
			res.OK, res.Message = true, fmt.Sprintf("%s/%s key %s (%d characters; value never shown)", cfg.Workload.Namespace, r.name, r.key, len(value))
		}
		out = append(out, res)
	}
	return out, nil
}

func serviceEndpoints(objs []*unstructured.Unstructured) (bool, string) {
	var slices []*discoveryv1.EndpointSlice
	for _, o := range objs {
		if es, err := convert[discoveryv1.EndpointSlice](o); err == nil {
			slices = append(slices, es)
		}
	}
	n := endpointsReady(slices)
	if n == 0 {
		return false, "the Service has no ready endpoints yet"
	}
	return true, fmt.Sprintf("%d ready endpoints", n)
}

// diagnoseAfter is how long a rollout may take before its pods and their
// events are watched to explain the wait: a rollout done sooner needs no
// explanation and costs no extra watches.
const diagnoseAfter = 2 * time.Second

// waitRollout waits for a Deployment's rollout by watch, unless it is
// already done in seen (the Deployment as last returned by the server);
// once it is slow, a watch on its pods (and their warning events) explains
// what holds it up.
func waitRollout(ctx context.Context, k *kube.Client, report step.Reporter, stepName, ns, name, podSelector string, seen []*unstructured.Unstructured) error {
	diag := &podDiagnoser{k: k, ns: ns, deployment: name, selector: podSelector, pods: map[string]string{}, events: map[string]string{}}
	dctx, stop := context.WithCancel(ctx)
	var deployReason string
	var mu sync.Mutex
	progress := func() {
		mu.Lock()
		defer mu.Unlock()
		parts := []string{}
		if deployReason != "" {
			parts = append(parts, deployReason)
		}
		if d := diag.summary(); d != "" {
			parts = append(parts, d)
		}
		if len(parts) > 0 {
			report.Waiting(stepName, "Deployment "+ns+"/"+name+": "+strings.Join(parts, "; "))
		}
	}
	watching := make(chan struct{}) // closed when the diagnosis starts
	diagDone := make(chan struct{})
	go func() {
		defer close(diagDone)
		select {
		case <-time.After(diagnoseAfter):
			close(watching)
			diag.run(dctx, false, progress)
		case <-dctx.Done():
		}
	}()
	// No progress line may follow the step's result.
	defer func() { stop(); <-diagDone }()
	err := kube.Until(ctx, "Deployment "+ns+"/"+name+" to be available",
		kube.Watch{Resource: k.Dynamic.Resource(deploymentsGVR).Namespace(ns), Name: name, Seen: seen},
		deletedWhileWaiting("Deployment "+ns+"/"+name, func(u *unstructured.Unstructured) (bool, string, error) {
			d, err := convert[appsv1.Deployment](u)
			if err != nil {
				return false, "", err
			}
			ok, reason, msg := rolloutStatus(d)
			if reason == "ProgressDeadlineExceeded" {
				return false, "", &step.Failed{Results: []step.Result{{Step: stepName, Check: "deployment available", Reason: reason, Message: msg + diag.suffix()}}}
			}
			return ok, reason + ": " + msg, nil
		}),
		func(r string) {
			mu.Lock()
			deployReason = r
			mu.Unlock()
			progress()
		})
	var te *kube.TimeoutError
	if errors.As(err, &te) {
		select {
		case <-watching:
		default:
			// Timed out before the diagnosis started: read the pods once,
			// so that a timeout always says why.
			c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			diag.run(c, true, func() {})
			cancel()
		}
		if d := diag.summary(); d != "" {
			te.LastReason += "; " + d
		}
	}
	return err
}

// deletedWhileWaiting adapts a single-object condition for a wait that
// follows the object's apply: the object exists, so its absence means it
// was deleted while waiting, which fails the wait.
func deletedWhileWaiting(what string, cond func(*unstructured.Unstructured) (bool, string, error)) kube.Condition {
	return func(objs []*unstructured.Unstructured) (bool, string, error) {
		if len(objs) == 0 {
			return false, "", fmt.Errorf("%s was deleted while waiting", what)
		}
		return cond(objs[0])
	}
}

// podDiagnoser watches a Deployment's pods and their warning events and
// keeps one diagnosis per pod that is not Ready.
type podDiagnoser struct {
	k                        *kube.Client
	ns, deployment, selector string

	mu     sync.Mutex
	pods   map[string]string // pod name -> "Reason: message" while not ready
	events map[string]string // pod name -> latest warning event
}

// run watches the pods and their events until ctx ends, calling changed on
// every change; with once it reads them once and returns.
func (p *podDiagnoser) run(ctx context.Context, once bool, changed func()) {
	prefix := p.deployment + "-"
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		kube.Until(ctx, "events", kube.Watch{Resource: p.k.Dynamic.Resource(eventsGVR).Namespace(p.ns)},
			func(objs []*unstructured.Unstructured) (bool, string, error) {
				latest := map[string]string{}
				for _, o := range objs {
					ev, err := convert[corev1.Event](o)
					if err != nil || ev.Type != corev1.EventTypeWarning || ev.InvolvedObject.Kind != "Pod" || !strings.HasPrefix(ev.InvolvedObject.Name, prefix) {
						continue
					}
					latest[ev.InvolvedObject.Name] = ev.Reason + ": " + eventHint(ev.Reason, ev.Message)
				}
				p.mu.Lock()
				p.events = latest
				p.mu.Unlock()
				changed()
				return once, "", nil
			}, nil)
	}()
	kube.Until(ctx, "pods", kube.Watch{Resource: p.k.Dynamic.Resource(podsGVR).Namespace(p.ns), LabelSelector: p.selector},
		func(objs []*unstructured.Unstructured) (bool, string, error) {
			diag := map[string]string{}
			for _, o := range objs {
				pod, err := convert[corev1.Pod](o)
				if err != nil {
					continue
				}
				if ready, reason, msg := podDiagnosis(pod); !ready {
					diag[pod.Name] = reason + ": " + eventHint(reason, msg)
				}
			}
			p.mu.Lock()
			p.pods = diag
			p.mu.Unlock()
			changed()
			return once, "", nil
		}, nil)
	wg.Wait()
}

func (p *podDiagnoser) summary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	merged := map[string]string{}
	for pod, d := range p.pods {
		merged[pod] = d
		// A warning event usually says more than the pod's phase.
		if ev, ok := p.events[pod]; ok && (strings.HasPrefix(d, "Pending") || strings.HasPrefix(d, "NotReady")) {
			merged[pod] = ev
		}
	}
	return summarize(merged)
}

func (p *podDiagnoser) suffix() string {
	if s := p.summary(); s != "" {
		return "; " + s
	}
	return ""
}

// eventHint adds what an operator should do about well-known failures.
func eventHint(reason, message string) string {
	lower := strings.ToLower(message)
	switch {
	case strings.Contains(lower, "quota"):
		return message + " (GPU quota: request more quota for the accelerator in this region, or choose another accelerator or region)"
	case strings.Contains(lower, "insufficient nvidia.com/gpu"):
		return message + " (no node with a free GPU: on Standard clusters add a GPU node pool of the configured accelerator; Autopilot provisions one, which takes minutes)"
	case reason == "ImagePullBackOff" || reason == "ErrImagePull":
		return message + " (check workload.image and that the cluster can pull it)"
	case reason == "CrashLoopBackOff":
		return message + " (see kubectl logs; for vLLM a wrong model id, a missing Hugging Face token or too little GPU memory are common)"
	case reason == "CreateContainerConfigError":
		return message + " (a referenced Secret or key is missing)"
	}
	return message
}

// --- monitor --------------------------------------------------------------

func newMonitorStep(cfg *config.Config, deps Deps) *objectsStep {
	s := &objectsStep{name: "monitor", cfg: cfg, deps: deps, timeout: cfg.Timeouts.Monitor}
	s.watchOne(gmp.Resource, cfg.Workload.Namespace, cfg.Monitoring.Name, "PodMonitoring", "to be configured", "podmonitoring configured",
		func(u *unstructured.Unstructured) (r step.Result, final bool) {
			pm, err := convert[gmp.PodMonitoring](u)
			if err != nil {
				r.Reason, r.Message = "Invalid", err.Error()
				return r, false
			}
			// False from the operator is final: waiting will not change it.
			r.OK, final, r.Reason, r.Message = podMonitoringStatus(pm)
			return r, final
		})
	return s
}

// watchOne sets a step's wait and check on one object of gvr: judge turns
// the live object into the check's result, and final says a failing result
// will not change by waiting.
func (s *objectsStep) watchOne(gvr schema.GroupVersionResource, ns, name, kind, goal, check string, judge func(*unstructured.Unstructured) (step.Result, bool)) {
	what := kind + " " + ns + "/" + name
	result := func(u *unstructured.Unstructured) (step.Result, bool) {
		r, final := judge(u)
		r.Step, r.Check = s.name, check
		return r, final
	}
	s.wait = func(ctx context.Context) error {
		var last step.Result
		err := kube.Until(ctx, what+" "+goal,
			kube.Watch{Resource: s.deps.Kube.Dynamic.Resource(gvr).Namespace(ns), Name: name, Seen: s.seen(gvr, ns, name)},
			deletedWhileWaiting(what, func(u *unstructured.Unstructured) (bool, string, error) {
				r, final := result(u)
				last = r
				if !r.OK && final {
					return false, "", &step.Failed{Results: []step.Result{r}}
				}
				return r.OK, r.Reason + ": " + r.Message, nil
			}), func(reason string) { s.deps.Report.Waiting(s.name, reason) })
		if err == nil {
			s.deps.Report.Result(last)
		}
		return err
	}
	s.check = func(ctx context.Context) ([]step.Result, error) {
		u, err := s.deps.Kube.Dynamic.Resource(gvr).Namespace(ns).Get(ctx, name, getOpts)
		if notFound(err) {
			return []step.Result{{Step: s.name, Check: check, Reason: "NotFound", Message: what + " does not exist: run vllm-hpa " + s.name}}, nil
		}
		if err != nil {
			return nil, missingAPI(err)
		}
		r, _ := result(u)
		return []step.Result{r}, nil
	}
}

// --- adapter --------------------------------------------------------------

func newAdapterStep(cfg *config.Config, deps Deps) *objectsStep {
	ns := cfg.Adapter.Namespace
	// The adapter is one per cluster: every instance on it uses the same.
	s := &objectsStep{name: "adapter", cfg: cfg, deps: deps, timeout: cfg.Timeouts.Adapter, shared: true}
	s.describeForeign = func(live *unstructured.Unstructured) string {
		if live.GetKind() != "APIService" {
			return ""
		}
		return "it serves " + apiServiceBackend(live) + ", another metrics provider's installation"
	}
	s.preflight = func(ctx context.Context, objs, live []*unstructured.Unstructured) error {
		// Only one provider can serve a metrics API: say so before taking
		// an APIService away from another adapter.
		var taken []string
		for i, obj := range objs {
			if obj.GetKind() != "APIService" || live[i] == nil {
				continue
			}
			svcNS, _, _ := unstructured.NestedString(live[i].Object, "spec", "service", "namespace")
			svcName, _, _ := unstructured.NestedString(live[i].Object, "spec", "service", "name")
			if svcNS == ns && svcName == adapterName {
				continue
			}
			taken = append(taken, fmt.Sprintf("APIService %s is served by %s", obj.GetName(), apiServiceBackend(live[i])))
		}
		if len(taken) == 0 {
			return nil
		}
		msg := strings.Join(taken, "; ") + "; applying would make the Stackdriver adapter serve it instead"
		if !deps.ForceConflicts {
			return exitcode.With(exitcode.Conflict, errors.New(msg+": remove the other provider or re-run with --force-conflicts to take it over"))
		}
		deps.Report.Action(s.name, "taking over (--force-conflicts): "+msg)
		return nil
	}
	s.prepare = func(obj, live *unstructured.Unstructured) error {
		// The adapter's identity is the identity step's, which sets it by
		// merge patch: an apply leaves it alone, unless an earlier version
		// of vllm-hpa applied it (then the apply must keep it, or it would
		// remove it).
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
	s.wait = func(ctx context.Context) error {
		if err := waitRollout(ctx, deps.Kube, deps.Report, s.name, ns, adapterName, adapterPods,
			s.seen(deploymentsGVR, ns, adapterName)); err != nil {
			return err
		}
		deps.Report.Result(step.Result{Step: s.name, Check: "adapter available", OK: true})
		var results []step.Result
		err := kube.Until(ctx, "the metrics APIServices to be Available",
			kube.Watch{Resource: deps.Kube.Dynamic.Resource(apiServicesGVR), LabelSelector: owner.SharedSelector(cfg.Instance), Seen: s.seen(apiServicesGVR, "", "")},
			func(objs []*unstructured.Unstructured) (bool, string, error) {
				results = apiServiceResults(s.name, objs)
				return allOK(results), firstFailure(results), nil
			}, func(r string) { deps.Report.Waiting(s.name, r) })
		if err == nil {
			for _, r := range results {
				deps.Report.Result(r)
			}
		}
		return err
	}
	s.check = func(ctx context.Context) ([]step.Result, error) {
		k := deps.Kube
		r := step.Result{Step: s.name, Check: "adapter available"}
		d, err := getTyped[appsv1.Deployment](ctx, k, deploymentsGVR, ns, adapterName)
		switch {
		case err != nil:
			return nil, err
		case d == nil:
			r.Reason, r.Message = "NotFound", "Deployment "+ns+"/"+adapterName+" does not exist: run vllm-hpa adapter"
		default:
			r.OK, r.Reason, r.Message = rolloutStatus(d)
		}
		list, err := k.Dynamic.Resource(apiServicesGVR).List(ctx, listBy(""))
		if err != nil {
			return nil, err
		}
		return append([]step.Result{r}, apiServiceResults(s.name, items(list))...), nil
	}
	return s
}

// apiServiceBackend names what serves an APIService.
func apiServiceBackend(live *unstructured.Unstructured) string {
	svcNS, _, _ := unstructured.NestedString(live.Object, "spec", "service", "namespace")
	svcName, _, _ := unstructured.NestedString(live.Object, "spec", "service", "name")
	if svcName == "" {
		return "kube-apiserver itself (a local APIService)"
	}
	return "Service " + svcNS + "/" + svcName
}

// apiServiceResults judges the three metrics APIServices among objs.
func apiServiceResults(stepName string, objs []*unstructured.Unstructured) []step.Result {
	byName := map[string]*unstructured.Unstructured{}
	for _, o := range objs {
		byName[o.GetName()] = o
	}
	var results []step.Result
	for _, a := range render.APIServices {
		name := a.Version + "." + a.Group
		r := step.Result{Step: stepName, Check: "apiservice " + name + " available"}
		u, ok := byName[name]
		if !ok {
			r.Reason, r.Message = "NotFound", "APIService "+name+" does not exist"
		} else if as, err := convert[apiregistrationv1.APIService](u); err != nil {
			r.Reason, r.Message = "Invalid", err.Error()
		} else {
			r.OK, r.Reason, r.Message = apiServiceStatus(as)
		}
		results = append(results, r)
	}
	return results
}

// --- hpa ------------------------------------------------------------------

func newHPAStep(cfg *config.Config, deps Deps) *objectsStep {
	s := &objectsStep{name: "hpa", cfg: cfg, deps: deps, timeout: cfg.Timeouts.HPA}
	s.watchOne(hpaGVR, cfg.Workload.Namespace, cfg.HPA.Name, "HPA", "to find its metric", "hpa scaling active",
		func(u *unstructured.Unstructured) (r step.Result, final bool) {
			h, err := convert[autoscalingv2.HorizontalPodAutoscaler](u)
			if err != nil {
				r.Reason, r.Message = "Invalid", err.Error()
				return r, false
			}
			var current string
			r.OK, r.Reason, r.Message, current = hpaStatus(h, cfg.AdapterMetricName())
			if current != "" {
				r.Message = fmt.Sprintf("current %s / target %s; %s", current, quantityString(cfg.HPA.Target), r.Message)
			}
			// Metrics can appear late: no HPA verdict is final.
			return r, false
		})
	return s
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
