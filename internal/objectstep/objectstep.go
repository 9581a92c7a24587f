// Package objectstep is what every step made of Kubernetes objects shares:
// render the step's objects, prove whose each existing one is, apply them in
// order by server-side apply (refusing what is someone else's), wait for the
// step's conditions, and, for cleanup, decide and carry out each removal.
// A step embeds *Step and passes itself as the hooks: the optional
// interfaces below are how it adds what is its own (a check before the
// first write, an adjustment before applying, its wait).
package objectstep

import (
	"context"
	"encoding/json"
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

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/owner"
	"github.com/vllm-hpa/vllm-hpa/internal/render"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// Base is the shared part of a step made of rendered Kubernetes objects.
type Base struct {
	name    string
	cfg     *config.Config
	deps    step.Deps
	report  step.Reporter
	timeout time.Duration
	shared  bool
	hooks   any // the concrete step: see the hook interfaces
	// applied are the objects as the server answered this run's applies.
	applied []*unstructured.Unstructured
}

// Options shape a Step.
type Options struct {
	// Timeout bounds the step's wait for its conditions.
	Timeout time.Duration
	// Shared: the step's objects are cluster-wide parts every instance on
	// the cluster uses (the adapter), counted per instance on the objects.
	Shared bool
}

// The hooks a concrete step may implement.
type (
	// BeforeWriter runs after every object was read and judged and before
	// the first write; it may refuse (e.g. an APIService served by another
	// provider).
	BeforeWriter interface {
		BeforeWrite(ctx context.Context, objs, live []*unstructured.Unstructured) error
	}
	// Preparer adjusts an object just before it is applied.
	Preparer interface {
		Prepare(obj, live *unstructured.Unstructured) error
	}
	// Waiter blocks until the step's conditions hold, within the step's
	// timeout.
	Waiter interface {
		Wait(ctx context.Context) error
	}
	// ForeignDescriber adds what an operator should know about an existing
	// object the step will not touch (e.g. which Service an APIService
	// sends to).
	ForeignDescriber interface {
		DescribeForeign(live *unstructured.Unstructured) string
	}
	// ExtraDeleter lists objects cleanup deletes after the rendered ones
	// (the workload namespace, when vllm-hpa created it).
	ExtraDeleter interface {
		ExtraDeletes() []*unstructured.Unstructured
	}
	// AfterApplier runs right after each object is applied, before the
	// next (deploy grants the model bucket to the vLLM pods' KSA once it
	// exists, and records the grant on it, before their Deployment).
	AfterApplier interface {
		AfterApply(ctx context.Context, applied *unstructured.Unstructured) error
	}
	// ApplyRetrier says which failed applies another read may cure (a
	// field another manager took between the read and the apply).
	ApplyRetrier interface {
		RetryApply(err error) bool
	}
)

// New is the shared part of step name; hooks is the concrete step.
func New(name string, cfg *config.Config, deps step.Deps, o Options, hooks any) *Base {
	return &Base{name: name, cfg: cfg, deps: deps, report: deps.Reporter(), timeout: o.Timeout, shared: o.Shared, hooks: hooks}
}

// Name is the step's name.
func (s *Base) Name() string { return s.name }

// Shared reports whether the step's objects are shared by every instance.
func (s *Base) Shared() bool { return s.shared }

// Config is the step's configuration.
func (s *Base) Config() *config.Config { return s.cfg }

// Deps are the step's clients.
func (s *Base) Deps() step.Deps { return s.deps }

// Report is where the step's progress goes.
func (s *Base) Report() step.Reporter { return s.report }

// Objects are the step's rendered objects, in apply order.
func (s *Base) Objects() ([]*unstructured.Unstructured, error) {
	return render.Objects(s.cfg, s.name, s.shared)
}

// Plan lists the objects Apply would apply.
func (s *Base) Plan(ctx context.Context) (*step.Plan, error) {
	objs, err := s.Objects()
	if err != nil {
		return nil, err
	}
	return &step.Plan{Step: s.name, Objects: objs}, nil
}

// Kube is the Kubernetes connection, or an error without one.
func (s *Base) Kube() (*kube.Client, error) {
	if s.deps.Kube == nil {
		return nil, errors.New("no Kubernetes connection")
	}
	return s.deps.Kube, nil
}

func (s *Base) judge(live *unstructured.Unstructured) owner.Judgement {
	return owner.Judge(live, s.cfg.Instance, s.shared)
}

// Apply reads every object, refuses what is not provably this instance's,
// applies them in order, and waits for the step's conditions.
func (s *Base) Apply(ctx context.Context) error {
	k, err := s.Kube()
	if err != nil {
		return err
	}
	objs, err := s.Objects()
	if err != nil {
		return err
	}
	// Read what exists first: a missing API (no PodMonitoring CRD) or an
	// object vllm-hpa may not touch is found before anything is written,
	// and each apply can tell whether it changed anything.
	s.applied = nil
	live, err := s.readLive(ctx, k, objs)
	if err != nil {
		return MissingAPI(err)
	}
	if err := s.refuseForeign(objs, live); err != nil {
		return err
	}
	if b, ok := s.hooks.(BeforeWriter); ok {
		if err := b.BeforeWrite(ctx, objs, live); err != nil {
			return err
		}
	}
	for i, obj := range objs {
		// Ctrl+C stops between API calls, never in the middle of one.
		if err := ctx.Err(); err != nil {
			return err
		}
		if live[i] != nil && live[i].GetDeletionTimestamp() != nil {
			// An object on its way out (a cleanup that just ran: a
			// namespace, a Deployment whose pods are ending) takes nothing
			// new: wait until it is gone, then create it again.
			ref := kube.Ref(obj)
			s.report.Waiting(s.name, ref+" is being deleted (a cleanup ran, or runs now): created again once it is gone")
			wctx, cancel := context.WithTimeout(ctx, s.timeout)
			err := waitGone(wctx, k, obj, live[i].GetUID(), func(reason string) { s.report.Waiting(s.name, reason) })
			cancel()
			if err != nil {
				return fmt.Errorf("%s is being deleted and is not gone after %s (the step's timeout): %w", ref, s.timeout, err)
			}
			// Read again: whatever took the name meanwhile (another
			// instance's up, someone else's object) is judged as any
			// existing object is.
			if live[i], err = k.Get(ctx, obj); err != nil {
				return err
			}
			if err := s.refuseForeign(objs[i:i+1], live[i:i+1]); err != nil {
				return err
			}
		}
		if obj.GetKind() == "Namespace" && live[i] != nil && s.judge(live[i]).Verdict != owner.Mine && s.judge(live[i]).Verdict != owner.Shared {
			s.report.Action(s.name, kube.Ref(obj)+" exists and is not vllm-hpa's: used as it is (never labelled, never deleted)")
			continue
		}
		out, action, err := s.applyOwned(ctx, k, obj, live[i])
		if err != nil {
			return err
		}
		s.applied = append(s.applied, out)
		s.report.Action(s.name, kube.Ref(obj)+" "+string(action))
		if a, ok := s.hooks.(AfterApplier); ok {
			if err := a.AfterApply(ctx, out); err != nil {
				return err
			}
		}
	}
	w, ok := s.hooks.(Waiter)
	if !ok {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return w.Wait(wctx)
}

// refuseForeign stops the step, before anything is written, when an object
// it would write exists and is not provably this instance's (or a shared
// part of vllm-hpa's): someone else's (unless --adopt), or another
// instance's. Namespaces are never refused: one that exists is used as is.
func (s *Base) refuseForeign(objs, live []*unstructured.Unstructured) error {
	var foreign, other []string
	for i, obj := range objs {
		if obj.GetKind() == "Namespace" {
			continue
		}
		switch j := s.judge(live[i]); j.Verdict {
		case owner.Foreign:
			if !s.deps.Adopt {
				what := owner.Describe(live[i]) + ", " + j.Owner
				if d, ok := s.hooks.(ForeignDescriber); ok {
					if more := d.DescribeForeign(live[i]); more != "" {
						what += "; " + more
					}
				}
				foreign = append(foreign, what)
			}
		case owner.Other:
			other = append(other, kube.Ref(obj)+" belongs to "+j.Owner)
		}
	}
	var msgs []string
	if len(foreign) > 0 {
		msgs = append(msgs, fmt.Sprintf("%s: not created by vllm-hpa, so it is not changed:\n  %s\nchoose other names, remove them, or take them over with --adopt (cleanup then removes only vllm-hpa's labels and fields from them, never the objects)",
			plural(len(foreign), "object exists", "objects exist"), strings.Join(foreign, "\n  ")))
	}
	if len(other) > 0 {
		msgs = append(msgs, fmt.Sprintf("%s of another vllm-hpa instance:\n  %s\nuse another --namespace or other names for instance %s, or run as that instance (--instance)",
			plural(len(other), "object is", "objects are"), strings.Join(other, "\n  "), s.cfg.Instance))
	}
	if len(msgs) == 0 {
		return nil
	}
	return exitcode.With(exitcode.Conflict, errors.New(strings.Join(msgs, "\n")))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// maxStaleRetries bounds the re-reads of a shared object that other
// instances keep changing under a conditional apply.
const maxStaleRetries = 10

// applyOwned stamps obj with this instance's ownership (keeping the other
// users of a shared object, and marking an object it adopts) and applies
// it. A shared object is applied on condition that it is as read, so that
// two instances updating its users at once cannot drop each other; a
// stale read is read again.
func (s *Base) applyOwned(ctx context.Context, k *kube.Client, rendered, live *unstructured.Unstructured) (*unstructured.Unstructured, kube.Action, error) {
	for attempt := 0; ; attempt++ {
		obj := rendered.DeepCopy()
		j := s.judge(live)
		if j.Verdict == owner.Other || (j.Verdict == owner.Foreign && !s.deps.Adopt && obj.GetKind() != "Namespace") {
			// Taken by someone else since it was read.
			return nil, "", s.refuseForeign([]*unstructured.Unstructured{obj}, []*unstructured.Unstructured{live})
		}
		owner.Stamp(obj, s.cfg.Instance, s.name, s.shared, j.Adopted || j.Verdict == owner.Foreign, j.Users)
		if p, ok := s.hooks.(Preparer); ok {
			if err := p.Prepare(obj, live); err != nil {
				return nil, "", err
			}
		}
		if err := keepRestore(obj, live, j); err != nil {
			return nil, "", err
		}
		opts := kube.ApplyOptions{Force: s.deps.ForceConflicts}
		if s.shared && live != nil {
			opts.ResourceVersion = live.GetResourceVersion()
		}
		out, action, err := s.applyOne(ctx, k, obj, live, opts)
		retry := kube.IsStale(err)
		if r, ok := s.hooks.(ApplyRetrier); ok && err != nil && r.RetryApply(err) {
			retry = true
		}
		if !retry || attempt >= maxStaleRetries {
			return out, action, err
		}
		if err := Uninterrupted(ctx, func(ctx context.Context) (err error) {
			live, err = k.Get(ctx, obj)
			return err
		}); err != nil {
			return nil, "", err
		}
	}
}

// keepRestore records, on an object being adopted, how to put back what
// this apply changes (owner.RestoreAnnotation), and keeps the record of an
// object adopted earlier.
func keepRestore(obj, live *unstructured.Unstructured, j owner.Judgement) error {
	var restore string
	switch {
	case j.Verdict == owner.Foreign && live != nil:
		if p := owner.RestorePatch(obj.Object, live.Object); p != nil {
			b, err := json.Marshal(p)
			if err != nil {
				return err
			}
			restore = string(b)
		}
	case j.Adopted && live != nil:
		restore = live.GetAnnotations()[owner.RestoreAnnotation]
	}
	if restore == "" {
		return nil
	}
	a := obj.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[owner.RestoreAnnotation] = restore
	obj.SetAnnotations(a)
	return nil
}

// readLive returns the live state of objs (nil where not found), whoever
// owns them: with one list per resource type and namespace where a step
// has several objects of a type, and a read by name where it has one (so
// that no other Secret is ever read).
func (s *Base) readLive(ctx context.Context, k *kube.Client, objs []*unstructured.Unstructured) ([]*unstructured.Unstructured, error) {
	type resource struct{ apiVersion, kind, namespace string }
	count := map[resource]int{}
	for _, obj := range objs {
		count[resource{obj.GetAPIVersion(), obj.GetKind(), obj.GetNamespace()}]++
	}
	lists := map[resource]map[string]*unstructured.Unstructured{}
	live := make([]*unstructured.Unstructured, len(objs))
	for i, obj := range objs {
		r := resource{obj.GetAPIVersion(), obj.GetKind(), obj.GetNamespace()}
		if count[r] == 1 {
			var err error
			if live[i], err = k.Get(ctx, obj); err != nil {
				return nil, err
			}
			continue
		}
		byName, ok := lists[r]
		if !ok {
			items, err := k.List(ctx, obj, "")
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
// first, labelled as this instance's so that cleanup may remove it again
// (a namespace the step renders itself comes first in its order).
func (s *Base) applyOne(ctx context.Context, k *kube.Client, obj, live *unstructured.Unstructured, opts kube.ApplyOptions) (*unstructured.Unstructured, kube.Action, error) {
	var out *unstructured.Unstructured
	var action kube.Action
	apply := func(ctx context.Context) (err error) {
		out, action, err = k.Apply(ctx, obj, live, opts)
		return err
	}
	err := Uninterrupted(ctx, apply)
	// A cleanup (this instance's, or one racing this run) is deleting the
	// namespace: once it is gone, it is created again. The API server's
	// admission reads namespaces from a cache that may still hold it,
	// terminating, a moment after it is gone (make test saw the apply
	// refused again): asked again, briefly.
	var goneAt time.Time
	for kube.IsNamespaceTerminating(err) {
		if err := s.awaitNamespaceGone(ctx, k, obj.GetNamespace()); err != nil {
			return nil, "", err
		}
		if goneAt.IsZero() {
			goneAt = time.Now()
		} else if time.Since(goneAt) > admissionLag {
			break
		} else {
			select {
			case <-ctx.Done():
				return nil, "", ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
		err = Uninterrupted(ctx, apply)
	}
	if ns := obj.GetNamespace(); kube.IsNamespaceMissing(err, ns) {
		nsObj := NamespaceObject(s.cfg, s.name, ns)
		if err := Uninterrupted(ctx, func(ctx context.Context) error {
			_, _, err := k.Apply(ctx, nsObj, nil, kube.ApplyOptions{})
			return err
		}); err != nil {
			return nil, "", err
		}
		s.report.Action(s.name, kube.Ref(nsObj)+" created")
		if err := ctx.Err(); err != nil {
			return nil, "", err
		}
		err = Uninterrupted(ctx, apply)
	}
	return out, action, err
}

// admissionLag bounds how long after a namespace is gone the API server
// may still refuse content in it as terminating (its admission cache).
const admissionLag = 10 * time.Second

// awaitNamespaceGone waits, up to timeouts.cleanup, until namespace ns,
// being deleted, is gone.
func (s *Base) awaitNamespaceGone(ctx context.Context, k *kube.Client, ns string) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeouts.Cleanup)
	defer cancel()
	why := "namespace " + ns + " is being deleted (a cleanup ran, or runs now): waiting until it is gone to create it again"
	s.report.Waiting(s.name, why)
	err := kube.Until(ctx, "namespace "+ns+" to be deleted",
		kube.Watch{Resource: k.Dynamic.Resource(kube.NamespacesGVR), Name: ns},
		func(objs []*unstructured.Unstructured) (bool, string, error) {
			if len(objs) == 0 {
				return true, "", nil
			}
			// Why it is not gone yet, as the namespace controller says
			// (an API that does not answer discovery holds it forever).
			return false, "namespace " + ns + " is being deleted" + finalizerNote(objs[0]) + ": waiting until it is gone to create it again", nil
		},
		func(r string) { s.report.Waiting(s.name, r) })
	if err != nil {
		return fmt.Errorf("namespace %s is being deleted and is not gone after %s (timeouts.cleanup): %w", ns, s.cfg.Timeouts.Cleanup, err)
	}
	return nil
}

// Seen returns the objects of resource gvr in namespace ns that this run
// applied, as the server answered (where the step's waits start), only the
// one named unless name is "".
func (s *Base) Seen(gvr schema.GroupVersionResource, ns, name string) []*unstructured.Unstructured {
	var objs []*unstructured.Unstructured
	for _, o := range s.applied {
		if r, err := s.deps.Kube.GVR(o); err == nil && r == gvr && o.GetNamespace() == ns && (name == "" || o.GetName() == name) {
			objs = append(objs, o)
		}
	}
	return objs
}

// NamespaceObject is a namespace a step creates because it is missing:
// this instance's.
func NamespaceObject(cfg *config.Config, stepName, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("v1")
	u.SetKind("Namespace")
	u.SetName(name)
	u.SetLabels(owner.Labels(cfg.Instance, stepName, false))
	return u
}

// MissingAPI turns "the cluster does not serve this kind" into a failed
// precondition with the fix.
func MissingAPI(err error) error {
	var nm *kube.NoMatchError
	if errors.As(err, &nm) && nm.GVK.Group == "monitoring.googleapis.com" {
		return exitcode.With(exitcode.Precondition, fmt.Errorf("%w: Managed Prometheus is not enabled on this cluster; enable it with: gcloud container clusters update CLUSTER --location LOCATION --enable-managed-prometheus", err))
	}
	if nm != nil {
		return exitcode.With(exitcode.Precondition, err)
	}
	return err
}

// Uninterrupted runs one API call to its end even when ctx is cancelled by
// Ctrl+C, so that an interrupted run stops between calls and what it
// reports as done is done; the call is still bounded in time.
func Uninterrupted(ctx context.Context, call func(context.Context) error) error {
	limit := time.Minute
	if deadline, ok := ctx.Deadline(); ok {
		// Under a command's --timeout: a little beyond it to finish the
		// write, not a minute.
		limit = min(limit, max(time.Until(deadline), 0)+uninterruptedGrace)
	}
	c, cancel := context.WithTimeout(context.WithoutCancel(ctx), limit)
	defer cancel()
	return call(c)
}

// uninterruptedGrace is how long past a command's deadline a write begun
// before it may take to finish.
const uninterruptedGrace = 10 * time.Second

// --- cleanup ----------------------------------------------------------------

// removal is what cleanup does to one object.
type removal struct {
	obj    *unstructured.Unstructured // as rendered
	live   *unstructured.Unstructured // as found; nil when absent
	action string                     // step.Remove*
	reason string
}

// PlanDelete reads each of the step's objects and decides, without
// changing anything, what cleanup would do to it.
func (s *Base) PlanDelete(ctx context.Context, pending step.Pending) (*step.Plan, error) {
	k, err := s.Kube()
	if err != nil {
		return nil, err
	}
	rs, err := s.planRemovals(ctx, k, pending)
	if err != nil {
		return nil, err
	}
	p := &step.Plan{Step: s.name}
	for _, r := range rs {
		p.Removals = append(p.Removals, step.Removal{Object: kube.Ref(r.obj), Action: r.action, Reason: r.reason})
	}
	return p, nil
}

// planRemovals decides, in deletion order (the reverse of applying), the
// fate of each object; pending collects what will be deleted, so that a
// namespace is judged as it will be once they are gone.
func (s *Base) planRemovals(ctx context.Context, k *kube.Client, pending step.Pending) ([]removal, error) {
	order, err := s.deletionOrder()
	if err != nil {
		return nil, err
	}
	var out []removal
	for _, obj := range order {
		live, err := k.Get(ctx, obj)
		var nm *kube.NoMatchError
		if errors.As(err, &nm) {
			live, err = nil, nil // the kind is not served, so nothing of ours can exist
		}
		if err != nil {
			return nil, err
		}
		r := removal{obj: obj, live: live}
		r.action, r.reason = s.decideRemoval(ctx, k, obj, live, pending)
		if r.action == step.RemoveDelete {
			pending[string(live.GetUID())] = true
		}
		out = append(out, r)
	}
	return out, nil
}

// decideRemoval is cleanup's rule for one object: delete only what this
// instance created (a shared part only when no other instance uses it),
// release what it adopted, and keep everything else.
func (s *Base) decideRemoval(ctx context.Context, k *kube.Client, obj, live *unstructured.Unstructured, pending step.Pending) (string, string) {
	if live == nil {
		return step.RemoveAbsent, ""
	}
	j := s.judge(live)
	switch {
	case j.Verdict == owner.Foreign:
		return step.RemoveKeep, "not created by vllm-hpa (" + j.Owner + ")"
	case j.Verdict == owner.Other:
		return step.RemoveKeep, "belongs to " + j.Owner
	case j.Verdict == owner.Shared:
		return step.RemoveKeep, "used by " + strings.Join(j.Users, ", ") + ", not by instance " + s.cfg.Instance
	case s.shared && len(j.Users) > 1:
		return step.RemoveUnuse, "still used by " + strings.Join(owner.Others(j.Users, s.cfg.Instance), ", ")
	case j.Adopted:
		return step.RemoveRelease, "adopted, not created by vllm-hpa"
	case live.GetKind() == "Namespace":
		if why := s.namespaceResidents(ctx, k, live.GetName(), pending); why != "" {
			return step.RemoveKeep, why
		}
	}
	return step.RemoveDelete, ""
}

// ownershipMarks are the labels of live that say it is vllm-hpa's, each
// set to nil for a merge patch that removes them.
func ownershipMarks(live *unstructured.Unstructured) map[string]any {
	marks := map[string]any{}
	for k := range live.GetLabels() {
		if k == owner.ManagedByLabel || k == owner.InstanceLabel || k == owner.StepLabel || strings.HasPrefix(k, owner.UserLabelPrefix) {
			marks[k] = nil
		}
	}
	return marks
}

// namespaceResidents says why namespace ns must stay, or "" when it holds
// nothing but what Kubernetes puts in every namespace and what this
// cleanup deletes (with what depends on it, by owner references): every
// namespaced resource type is listed, and a list that cannot be read
// keeps the namespace.
func (s *Base) namespaceResidents(ctx context.Context, k *kube.Client, ns string, pending step.Pending) string {
	items, err := k.ScanNamespace(ctx, ns)
	if err != nil {
		return err.Error()
	}
	byUID := map[types.UID]*unstructured.Unstructured{}
	for i := range items {
		byUID[items[i].GetUID()] = &items[i]
	}
	// goingAway: deleted by this cleanup, or every owner is going away (the
	// garbage collector deletes it). memo also guards against owner cycles.
	memo := map[types.UID]bool{}
	services := map[string]*unstructured.Unstructured{}
	for i := range items {
		if items[i].GetKind() == "Service" && items[i].GetAPIVersion() == "v1" {
			services[items[i].GetName()] = &items[i]
		}
	}
	var goingAway func(o *unstructured.Unstructured) bool
	goingAway = func(o *unstructured.Unstructured) bool {
		uid := o.GetUID()
		if v, ok := memo[uid]; ok {
			return v
		}
		memo[uid] = false
		if o.GetKind() == "Endpoints" && o.GetAPIVersion() == "v1" {
			// The endpoints controller's copy of a Service (with its
			// labels, without an owner reference) goes with the Service.
			svc := services[o.GetName()]
			v := svc == nil || goingAway(svc)
			memo[uid] = v
			return v
		}
		refs := o.GetOwnerReferences()
		// Deleted by this cleanup, or already on its way out as vllm-hpa's
		// (a Deployment deleted in the foreground stays until its pods
		// have ended).
		v := pending[string(uid)] || (o.GetDeletionTimestamp() != nil && s.ours(o))
		if !v && len(refs) > 0 {
			v = true
			for _, ref := range refs {
				owner := byUID[ref.UID]
				if owner == nil {
					var err error
					if owner, err = k.OwnerLookup(ctx, ns, ref); err != nil {
						v = false // cannot tell: it stays
						break
					}
					if owner == nil {
						continue // absent: its dependents are collected
					}
				}
				// An owner deleted with --cascade=orphan leaves its
				// dependents behind.
				if !goingAway(owner) || slices.Contains(owner.GetFinalizers(), metav1.FinalizerOrphanDependents) {
					v = false
					break
				}
			}
		}
		memo[uid] = v
		return v
	}
	var residents []string
	for i := range items {
		o := &items[i]
		if builtIn(o) || goingAway(o) {
			continue
		}
		what := o.GetKind() + " " + o.GetName()
		if s.ours(o) {
			what += " (vllm-hpa's, not part of this cleanup)"
		}
		residents = append(residents, what)
	}
	if len(residents) == 0 {
		return ""
	}
	if len(residents) > 5 {
		residents = append(residents[:5], fmt.Sprintf("and %d more", len(residents)-5))
	}
	return "holds objects vllm-hpa did not create or does not delete now: " + strings.Join(residents, ", ")
}

// ours: o carries vllm-hpa's labels and this instance's judge finds it
// its own or shared.
func (s *Base) ours(o *unstructured.Unstructured) bool {
	j := s.judge(o)
	return o.GetLabels()[owner.ManagedByLabel] == owner.ManagedByValue && (j.Verdict == owner.Mine || j.Verdict == owner.Shared)
}

// builtIn: what Kubernetes (and GKE) create in every namespace.
func builtIn(o *unstructured.Unstructured) bool {
	switch o.GetKind() + "/" + o.GetName() {
	case "ServiceAccount/default", "ConfigMap/kube-root-ca.crt", "ResourceQuota/gke-resource-quotas":
		return true
	}
	return false
}

// deletionOrder is the reverse of the apply order, then the step's extra
// deletions.
func (s *Base) deletionOrder() ([]*unstructured.Unstructured, error) {
	objs, err := s.Objects()
	if err != nil {
		return nil, err
	}
	var order []*unstructured.Unstructured
	for i := len(objs) - 1; i >= 0; i-- {
		order = append(order, objs[i])
	}
	if x, ok := s.hooks.(ExtraDeleter); ok {
		order = append(order, x.ExtraDeletes()...)
	}
	return order, nil
}

// Delete carries out the step's removals in order and waits until each
// deleted object is gone.
func (s *Base) Delete(ctx context.Context) error {
	k, err := s.Kube()
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, s.cfg.Timeouts.Cleanup)
	defer cancel()
	order, err := s.deletionOrder()
	if err != nil {
		return err
	}
	for _, obj := range order {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.removeOne(dctx, k, obj); err != nil {
			return err
		}
	}
	return nil
}

// DeleteObjects removes objs (objects of the step no longer wanted, such as
// another backend's) by cleanup's rules, saying why; what is absent, or of
// a kind the cluster does not serve, is passed over in silence.
func (s *Base) DeleteObjects(ctx context.Context, objs []*unstructured.Unstructured, why string) error {
	k, err := s.Kube()
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, s.cfg.Timeouts.Cleanup)
	defer cancel()
	for _, obj := range objs {
		live, err := k.Get(dctx, obj)
		var nm *kube.NoMatchError
		switch {
		case errors.As(err, &nm):
			continue
		case apierrors.IsForbidden(err):
			s.report.Action(s.name, kube.Ref(obj)+" not checked (the caller may not read it): "+why)
			continue
		case err != nil:
			return err
		case live == nil:
			continue
		}
		s.report.Action(s.name, kube.Ref(obj)+": "+why)
		if err := s.removeOne(dctx, k, obj); err != nil {
			return err
		}
	}
	return nil
}

// removeOne reads obj, decides its fate and carries it out; a shared
// object changed by another instance meanwhile is read and decided again.
func (s *Base) removeOne(ctx context.Context, k *kube.Client, obj *unstructured.Unstructured) error {
	ref := kube.Ref(obj)
	for attempt := 0; ; attempt++ {
		live, err := k.Get(ctx, obj)
		var nm *kube.NoMatchError
		if errors.As(err, &nm) {
			return nil // the kind is not served, so nothing of ours can exist
		}
		if err != nil {
			return err
		}
		action, reason := s.decideRemoval(ctx, k, obj, live, step.Pending{})
		switch action {
		case step.RemoveAbsent:
			s.report.Action(s.name, ref+" already absent")
			return nil
		case step.RemoveKeep:
			if j := s.judge(live); s.shared && j.Verdict == owner.Mine {
				// A shared part kept for what it holds: this instance no
				// longer uses it.
				err = Uninterrupted(ctx, func(ctx context.Context) error {
					_, err := k.PatchMetadata(ctx, live, map[string]any{owner.UserLabel(s.cfg.Instance): nil, owner.InstanceLabel: nil}, nil, live.GetResourceVersion())
					return err
				})
				if err == nil {
					s.report.Action(s.name, ref+" left in place: "+reason+" (instance "+s.cfg.Instance+" no longer counted)")
				}
				break
			}
			s.report.Action(s.name, ref+" left in place: "+reason)
			return nil
		case step.RemoveUnuse:
			err = Uninterrupted(ctx, func(ctx context.Context) error {
				_, err := k.PatchMetadata(ctx, live, map[string]any{owner.UserLabel(s.cfg.Instance): nil, owner.InstanceLabel: nil}, nil, live.GetResourceVersion())
				return err
			})
			if err == nil {
				s.report.Action(s.name, ref+" kept: "+reason+" (instance "+s.cfg.Instance+" no longer counted)")
			}
		case step.RemoveRelease:
			err = Uninterrupted(ctx, func(ctx context.Context) error {
				rv := live.GetResourceVersion()
				if patch := live.GetAnnotations()[owner.RestoreAnnotation]; patch != "" {
					// First put back what adopting it changed.
					restored, err := k.MergePatch(ctx, live, []byte(patch), rv)
					if err != nil {
						return err
					}
					rv = restored.GetResourceVersion()
				}
				_, err := k.Release(ctx, live, rv)
				if apierrors.IsInvalid(err) {
					// A field only vllm-hpa held (taken with
					// --force-conflicts) is required: keep the fields,
					// remove the marks.
					_, err = k.PatchMetadata(ctx, live, ownershipMarks(live), map[string]any{owner.AdoptedAnnotation: nil, owner.RestoreAnnotation: nil}, "")
				}
				return err
			})
			if err == nil {
				s.report.Action(s.name, ref+" kept ("+reason+"): vllm-hpa's labels and fields removed")
			}
		case step.RemoveDelete:
			return s.deleteAndWait(ctx, k, obj, live)
		}
		if apierrors.IsNotFound(err) {
			// Deleted since it was read (another cleanup at the same
			// time): gone is what this cleanup wanted.
			s.report.Action(s.name, ref+" already absent (deleted meanwhile)")
			return nil
		}
		if !kube.IsStale(err) || attempt >= maxStaleRetries {
			return err
		}
	}
}

// deleteAndWait deletes exactly the object that was judged (by UID) and
// waits until it is gone (unless --wait=false).
func (s *Base) deleteAndWait(ctx context.Context, k *kube.Client, obj, live *unstructured.Unstructured) error {
	ref := kube.Ref(obj)
	if live.GetDeletionTimestamp() == nil {
		r, err := k.Resource(obj)
		if err != nil {
			return err
		}
		uid := live.GetUID()
		propagation := propagationOf(obj)
		err = Uninterrupted(ctx, func(ctx context.Context) error {
			return r.Delete(ctx, obj.GetName(), metav1.DeleteOptions{
				Preconditions:     &metav1.Preconditions{UID: &uid},
				PropagationPolicy: &propagation,
			})
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("delete %s: %w", ref, err)
		}
	}
	if s.deps.NoWait {
		s.report.Action(s.name, ref+" deleting (not waited for: --wait=false)")
		return nil
	}
	uid := live.GetUID()
	if obj.GetKind() == "Namespace" && s.deps.Namespaces != nil {
		// Bounded as if waited for now: timeouts.cleanup from the
		// deletion.
		deadline := time.Now().Add(s.cfg.Timeouts.Cleanup)
		s.report.Waiting(s.name, ref+" is being deleted: waited for after the last step's deletions")
		s.deps.Namespaces.Add(func(ctx context.Context) error {
			ctx, cancel := context.WithDeadline(ctx, deadline)
			defer cancel()
			if err := s.awaitGone(ctx, k, obj, uid); err != nil {
				return fmt.Errorf("%s (deleted by step %s): %w", ref, s.name, err)
			}
			return nil
		})
		return nil
	}
	return s.awaitGone(ctx, k, obj, uid)
}

// awaitGone waits until the deleted object is gone and says so.
func (s *Base) awaitGone(ctx context.Context, k *kube.Client, obj *unstructured.Unstructured, uid types.UID) error {
	if err := waitGone(ctx, k, obj, uid, func(reason string) { s.report.Waiting(s.name, reason) }); err != nil {
		return err
	}
	s.report.Action(s.name, kube.Ref(obj)+" deleted")
	return nil
}

// propagationOf is how obj's deletion reaches what it owns. A Deployment
// goes in the foreground: it is gone only once its ReplicaSets and pods
// are (the drain ran, the containers ended), so the wait says what it
// waits for, and the namespace deleted after it is empty of pods. Deleted
// with pods still running, a namespace waits in the namespace controller's
// queue for half their terminationGracePeriodSeconds (45 s by default:
// 23 s) however soon they end, and is emptied a second time. Everything
// else goes in the background, as kubectl deletes it.
func propagationOf(obj *unstructured.Unstructured) metav1.DeletionPropagation {
	if obj.GroupVersionKind().GroupKind() == (schema.GroupKind{Group: "apps", Kind: "Deployment"}) {
		return metav1.DeletePropagationForeground
	}
	return metav1.DeletePropagationBackground
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
		if slices.Equal(f, []string{metav1.FinalizerDeleteDependents}) {
			return " (in the foreground: what it owns goes first, a Deployment's pods as their grace period allows)"
		}
		return " (finalizers: " + strings.Join(f, ", ") + ")"
	}
	if o.GetKind() == "Namespace" {
		// The namespace controller says when it cannot go on: an API that
		// does not answer discovery, or contents it cannot delete.
		conds, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if m["status"] == "True" && (m["type"] == "NamespaceDeletionDiscoveryFailure" || m["type"] == "NamespaceDeletionContentFailure" || m["type"] == "NamespaceDeletionGroupVersionParsingFailure") {
				return fmt.Sprintf(" (the namespace controller cannot finish: %v)", m["message"])
			}
		}
		return " (the namespace controller is removing its contents)"
	}
	return ""
}

// Judge turns one live object into a check's result; final says a failing
// result will not change by waiting (e.g. the operator said False).
type Judge func(live *unstructured.Unstructured) (r step.Result, final bool)

// One names the single object a step waits for and checks.
type One struct {
	GVR       schema.GroupVersionResource
	Namespace string
	Name      string
	Kind      string // for messages
	Goal      string // e.g. "to be configured", for the wait's messages
	Check     string // the check's name
	Judge     Judge
}

func (o One) what() string { return o.Kind + " " + o.Namespace + "/" + o.Name }

func (s *Base) result(o One, u *unstructured.Unstructured) (step.Result, bool) {
	r, final := o.Judge(u)
	r.Step, r.Check = s.name, o.Check
	return r, final
}

// WaitOne waits, by watch, until o's object passes its judge and reports
// the passing result; a final failure ends the wait as a failed check.
func (s *Base) WaitOne(ctx context.Context, o One) error {
	r, _, err := s.AwaitOne(ctx, o)
	if err == nil {
		s.report.Result(r)
	}
	return err
}

// AwaitOne is WaitOne that returns the passing result and the object it
// judged instead of reporting it, for a step whose wait goes on past this
// object.
func (s *Base) AwaitOne(ctx context.Context, o One) (step.Result, *unstructured.Unstructured, error) {
	k, err := s.Kube()
	if err != nil {
		return step.Result{}, nil, err
	}
	var last step.Result
	var judged *unstructured.Unstructured
	err = kube.Until(ctx, o.what()+" "+o.Goal,
		kube.Watch{Resource: k.Dynamic.Resource(o.GVR).Namespace(o.Namespace), Name: o.Name, Seen: s.Seen(o.GVR, o.Namespace, o.Name)},
		kube.Existing(o.what(), func(u *unstructured.Unstructured) (bool, string, error) {
			r, final := s.result(o, u)
			last, judged = r, u
			if !r.OK && final {
				return false, "", &step.Failed{Results: []step.Result{r}}
			}
			return r.OK, r.Reason + ": " + r.Message, nil
		}), func(reason string) { s.report.Waiting(s.name, reason) })
	return last, judged, err
}

// CheckOne reads o's object and judges it.
func (s *Base) CheckOne(ctx context.Context, o One) ([]step.Result, error) {
	k, err := s.Kube()
	if err != nil {
		return nil, err
	}
	u, err := k.Dynamic.Resource(o.GVR).Namespace(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return []step.Result{{Step: s.name, Check: o.Check, Reason: "NotFound", Message: o.what() + " does not exist: run vllm-hpa " + s.name}}, nil
	}
	if err != nil {
		return nil, MissingAPI(err)
	}
	r, _ := s.result(o, u)
	return []step.Result{r}, nil
}
