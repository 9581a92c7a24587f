package stack

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// objectsStep is a step made of rendered Kubernetes objects: apply them in
// order by server-side apply, wait for the step's conditions, check them,
// and delete (only what carries the ownership labels) in reverse.
type objectsStep struct {
	name    string
	cfg     *config.Config
	deps    Deps
	timeout time.Duration

	// preflight runs after every object was read and before the first
	// write; it may refuse (e.g. an APIService owned by another provider).
	preflight func(ctx context.Context, objs, live []*unstructured.Unstructured) error
	// prepare adjusts an object just before it is applied.
	prepare func(obj, live *unstructured.Unstructured) error
	// wait blocks until the step's conditions hold.
	wait func(ctx context.Context) error
	// check reads the step's state.
	check func(ctx context.Context) ([]step.Result, error)
	// readForeign are kinds whose live objects are read whatever their
	// owner (by default only vllm-hpa's are read before applying).
	readForeign []string
	// applied are the objects as the server answered this run's applies.
	applied []*unstructured.Unstructured
	// extraDeletes are deleted after the rendered objects (the workload
	// namespace, when vllm-hpa created it).
	extraDeletes func() []*unstructured.Unstructured
}

func (s *objectsStep) Name() string { return s.name }

func (s *objectsStep) Plan(ctx context.Context) (*step.Plan, error) {
	objs, err := render.Objects(s.cfg, s.name)
	if err != nil {
		return nil, err
	}
	return &step.Plan{Step: s.name, Objects: objs}, nil
}

func (s *objectsStep) kube() (*kube.Client, error) {
	if s.deps.Kube == nil {
		return nil, errors.New("no Kubernetes connection")
	}
	return s.deps.Kube, nil
}

func (s *objectsStep) Apply(ctx context.Context) error {
	k, err := s.kube()
	if err != nil {
		return err
	}
	objs, err := render.Objects(s.cfg, s.name)
	if err != nil {
		return err
	}
	// Read what exists first: a missing API (no PodMonitoring CRD) or a
	// foreign owner is found before anything is written, and each apply can
	// tell whether it changed anything.
	s.applied = nil
	live, err := s.readLive(ctx, k, objs)
	if err != nil {
		return missingAPI(err)
	}
	if s.preflight != nil {
		if err := s.preflight(ctx, objs, live); err != nil {
			return err
		}
	}
	for i, obj := range objs {
		// Ctrl+C stops between API calls, never in the middle of one.
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.prepare != nil {
			if err := s.prepare(obj, live[i]); err != nil {
				return err
			}
		}
		out, action, err := s.applyOne(ctx, k, obj, live[i])
		if err != nil {
			return err
		}
		s.applied = append(s.applied, out)
		s.deps.Report.Action(s.name, kube.Ref(obj)+" "+string(action))
	}
	if s.wait == nil {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return s.wait(wctx)
}

// readLive returns the live state of objs (nil where not found) with one
// list per resource type and namespace rather than a read per object:
// vllm-hpa's objects by the ownership labels, and the kinds in readForeign
// whole, because their preflight or prepare must see other owners' objects.
func (s *objectsStep) readLive(ctx context.Context, k *kube.Client, objs []*unstructured.Unstructured) ([]*unstructured.Unstructured, error) {
	type resource struct{ apiVersion, kind, namespace string }
	lists := map[resource]map[string]*unstructured.Unstructured{}
	live := make([]*unstructured.Unstructured, len(objs))
	for i, obj := range objs {
		r := resource{obj.GetAPIVersion(), obj.GetKind(), obj.GetNamespace()}
		byName, ok := lists[r]
		if !ok {
			selector := owner(s.cfg).Selector()
			if slices.Contains(s.readForeign, r.kind) {
				selector = ""
			}
			items, err := k.List(ctx, obj, selector)
			if err != nil {
				return nil, err
			}
			byName = map[string]*unstructured.Unstructured{}
			for j := range items {
				byName[items[j].GetName()] = &items[j]
			}
			lists[r] = byName
		}
		live[i] = byName[obj.GetName()]
	}
	return live, nil
}

// applyOne applies obj. A namespace the server says is missing is created
// first, labelled as vllm-hpa's so that cleanup may remove it again (a
// namespace the step renders itself comes first in its order and exists).
func (s *objectsStep) applyOne(ctx context.Context, k *kube.Client, obj, live *unstructured.Unstructured) (*unstructured.Unstructured, kube.Action, error) {
	var out *unstructured.Unstructured
	var action kube.Action
	apply := func(ctx context.Context) (err error) {
		out, action, err = k.Apply(ctx, obj, live, s.deps.ForceConflicts)
		return err
	}
	err := uninterrupted(ctx, apply)
	if ns := obj.GetNamespace(); kube.IsNamespaceMissing(err, ns) {
		nsObj := namespaceObject(s.cfg, s.name, ns)
		if err := uninterrupted(ctx, func(ctx context.Context) error {
			_, _, err := k.Apply(ctx, nsObj, nil, false)
			return err
		}); err != nil {
			return nil, "", err
		}
		s.deps.Report.Action(s.name, kube.Ref(nsObj)+" created")
		if err := ctx.Err(); err != nil {
			return nil, "", err
		}
		err = uninterrupted(ctx, apply)
	}
	return out, action, err
}

// seen returns the objects of resource gvr in namespace ns that this run
// applied, as the server answered (where the step's waits start), only the
// one named unless name is "".
func (s *objectsStep) seen(gvr schema.GroupVersionResource, ns, name string) []*unstructured.Unstructured {
	var objs []*unstructured.Unstructured
	for _, o := range s.applied {
		if r, err := s.deps.Kube.GVR(o); err == nil && r == gvr && o.GetNamespace() == ns && (name == "" || o.GetName() == name) {
			objs = append(objs, o)
		}
	}
	return objs
}

func namespaceObject(cfg *config.Config, stepName, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("Namespace")
	u.SetName(name)
	u.SetLabels(ownerLabels(cfg, stepName))
	return u
}

func ownerLabels(cfg *config.Config, stepName string) map[string]string {
	return map[string]string{
		render.ManagedByLabel: render.ManagedByValue,
		render.InstanceLabel:  cfg.Instance,
		render.StepLabel:      stepName,
	}
}

// owner is what deletes require of an object: vllm-hpa's label and this
// instance's.
func owner(cfg *config.Config) kube.Owner {
	return kube.Owner{render.ManagedByLabel: render.ManagedByValue, render.InstanceLabel: cfg.Instance}
}

// missingAPI turns "the cluster does not serve this kind" into a failed
// precondition with the fix.
func missingAPI(err error) error {
	var nm *kube.NoMatchError
	if errors.As(err, &nm) && nm.GVK.Group == "monitoring.googleapis.com" {
		return exitcode.With(exitcode.Precondition, fmt.Errorf("%w: Managed Prometheus is not enabled on this cluster; enable it with: gcloud container clusters update CLUSTER --location LOCATION --enable-managed-prometheus", err))
	}
	if nm != nil {
		return exitcode.With(exitcode.Precondition, err)
	}
	return err
}

func (s *objectsStep) Check(ctx context.Context) ([]step.Result, error) {
	if _, err := s.kube(); err != nil {
		return nil, err
	}
	return s.check(ctx)
}

// Delete removes the step's objects in reverse order, only those carrying
// the ownership labels, and waits until each is gone.
func (s *objectsStep) Delete(ctx context.Context) error {
	k, err := s.kube()
	if err != nil {
		return err
	}
	objs, err := render.Objects(s.cfg, s.name)
	if err != nil {
		return err
	}
	var order []*unstructured.Unstructured
	for i := len(objs) - 1; i >= 0; i-- {
		order = append(order, objs[i])
	}
	if s.extraDeletes != nil {
		order = append(order, s.extraDeletes()...)
	}
	dctx, cancel := context.WithTimeout(ctx, s.cfg.Timeouts.Cleanup)
	defer cancel()
	for _, obj := range order {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.deleteOwned(dctx, k, obj); err != nil {
			return err
		}
	}
	return nil
}

// uninterrupted runs one API call to its end even when ctx is cancelled by
// Ctrl+C, so that an interrupted run stops between calls and what it
// reports as done is done; the call is still bounded in time.
func uninterrupted(ctx context.Context, call func(context.Context) error) error {
	c, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	return call(c)
}

func (s *objectsStep) deleteOwned(ctx context.Context, k *kube.Client, obj *unstructured.Unstructured) error {
	live, err := k.Get(ctx, obj)
	var nm *kube.NoMatchError
	if errors.As(err, &nm) {
		return nil // the kind is not served, so nothing of ours can exist
	}
	if err != nil {
		return err
	}
	ref := kube.Ref(obj)
	if live == nil {
		s.deps.Report.Action(s.name, ref+" already absent")
		return nil
	}
	if !owner(s.cfg).Owns(live) {
		s.deps.Report.Action(s.name, ref+" not created by vllm-hpa (instance "+s.cfg.Instance+"): left in place")
		return nil
	}
	if live.GetDeletionTimestamp() == nil {
		if obj.GetKind() == "Namespace" {
			foreign, err := foreignObjects(ctx, k, obj.GetName(), owner(s.cfg))
			if err != nil {
				return err
			}
			if len(foreign) > 0 {
				s.deps.Report.Action(s.name, fmt.Sprintf("%s holds objects vllm-hpa did not create (%s): left in place", ref, strings.Join(foreign, ", ")))
				return nil
			}
		}
		r, err := k.Resource(obj)
		if err != nil {
			return err
		}
		uid := live.GetUID()
		background := metav1.DeletePropagationBackground
		err = uninterrupted(ctx, func(ctx context.Context) error {
			return r.Delete(ctx, obj.GetName(), metav1.DeleteOptions{
				// Delete exactly the object that was checked, not a newer one.
				Preconditions:     &metav1.Preconditions{UID: &uid},
				PropagationPolicy: &background,
			})
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("delete %s: %w", ref, err)
		}
	}
	if err := waitGone(ctx, k, obj, live.GetUID(), func(reason string) { s.deps.Report.Waiting(s.name, reason) }); err != nil {
		return err
	}
	s.deps.Report.Action(s.name, ref+" deleted")
	return nil
}

// waitGone watches until the object with uid no longer exists.
func waitGone(ctx context.Context, k *kube.Client, obj *unstructured.Unstructured, uid types.UID, progress func(string)) error {
	r, err := k.Resource(obj)
	if err != nil {
		return err
	}
	return kube.Until(ctx, kube.Ref(obj)+" to be deleted", kube.Watch{Resource: r, Name: obj.GetName()},
		func(objs []*unstructured.Unstructured) (bool, string, error) {
			for _, o := range objs {
				if o.GetUID() == uid {
					return false, kube.Ref(obj) + " is being deleted" + finalizerNote(o), nil
				}
			}
			return true, "", nil
		}, progress)
}

func finalizerNote(o *unstructured.Unstructured) string {
	if f := o.GetFinalizers(); len(f) > 0 {
		return " (finalizers: " + strings.Join(f, ", ") + ")"
	}
	if o.GetKind() == "Namespace" {
		return " (the namespace controller is removing its contents)"
	}
	return ""
}

// foreignObjects lists objects in namespace ns that vllm-hpa did not create
// and that are not derived from its objects (owner references) or made by
// Kubernetes for every namespace.
func foreignObjects(ctx context.Context, k *kube.Client, ns string, o kube.Owner) ([]string, error) {
	lists, err := k.Discovery.ServerPreferredNamespacedResources()
	if err != nil && !discovery.IsGroupDiscoveryFailedError(err) {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	var foreign []string
	for _, list := range lists {
		gv, err := schema.ParseGroupVersion(list.GroupVersion)
		if err != nil {
			continue
		}
		for _, res := range list.APIResources {
			if !hasVerb(res.Verbs, "list") || strings.Contains(res.Name, "/") || skipResource(gv.Group, res.Name) {
				continue
			}
			items, err := k.Dynamic.Resource(gv.WithResource(res.Name)).Namespace(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err) || apierrors.IsForbidden(err) {
					continue
				}
				return nil, fmt.Errorf("list %s in %s: %w", res.Name, ns, err)
			}
			for i := range items.Items {
				item := &items.Items[i]
				if o.Owns(item) || len(item.GetOwnerReferences()) > 0 || builtIn(res.Kind, item.GetName()) {
					continue
				}
				foreign = append(foreign, res.Kind+" "+item.GetName())
			}
		}
	}
	return foreign, nil
}

func hasVerb(verbs []string, v string) bool {
	for _, x := range verbs {
		if x == v {
			return true
		}
	}
	return false
}

// skipResource: events are history, not content; Endpoints mirror Services.
func skipResource(group, resource string) bool {
	return resource == "events" || (group == "" && resource == "endpoints")
}

// builtIn: objects Kubernetes creates in every namespace.
func builtIn(kind, name string) bool {
	return (kind == "ServiceAccount" && name == "default") || (kind == "ConfigMap" && name == "kube-root-ca.crt")
}
