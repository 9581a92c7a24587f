package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	corev1 "k8s.io/api/core/v1"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
)

// Action says what an apply did.
type Action string

const (
	Created    Action = "created"
	Configured Action = "configured"
	Unchanged  Action = "unchanged"
)

// Ref names an object as kubectl does: Kind namespace/name.
func Ref(obj *unstructured.Unstructured) string {
	if obj.GetNamespace() == "" {
		return obj.GetKind() + " " + obj.GetName()
	}
	return obj.GetKind() + " " + obj.GetNamespace() + "/" + obj.GetName()
}

// NoMatchError means the cluster does not serve an object's kind, e.g.
// PodMonitoring where Managed Prometheus is off.
type NoMatchError struct {
	GVK schema.GroupVersionKind
	Err error
}

func (e *NoMatchError) Error() string {
	return fmt.Sprintf("the cluster does not serve %s %s: %v", e.GVK.GroupVersion(), e.GVK.Kind, e.Err)
}
func (e *NoMatchError) Unwrap() error { return e.Err }

// Resource returns the dynamic client for obj's kind and namespace.
func (c *Client) Resource(obj *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	m, err := c.mapping(obj)
	if err != nil {
		return nil, err
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.Dynamic.Resource(m.Resource).Namespace(obj.GetNamespace()), nil
	}
	return c.Dynamic.Resource(m.Resource), nil
}

func (c *Client) mapping(obj *unstructured.Unstructured) (*meta.RESTMapping, error) {
	return c.mapper.mapping(obj.GroupVersionKind())
}

// GVR returns the resource of obj's kind.
func (c *Client) GVR(obj *unstructured.Unstructured) (schema.GroupVersionResource, error) {
	m, err := c.mapping(obj)
	if err != nil {
		return schema.GroupVersionResource{}, err
	}
	return m.Resource, nil
}

// List returns the objects of obj's kind in obj's namespace that match the
// label selector ("" for all). A kind the cluster has stopped serving since
// discovery was cached is a *NoMatchError, as it is when never served.
func (c *Client) List(ctx context.Context, obj *unstructured.Unstructured, selector string) ([]unstructured.Unstructured, error) {
	r, err := c.Resource(obj)
	if err != nil {
		return nil, err
	}
	list, err := r.List(ctx, metav1.ListOptions{LabelSelector: selector})
	if apierrors.IsNotFound(err) {
		// Listing never finds "no objects" as 404; the resource itself is
		// gone (e.g. the PodMonitoring CRD was removed): ask discovery again.
		c.mapper.reset()
		if _, merr := c.mapping(obj); merr != nil {
			return nil, merr
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", obj.GetKind(), err)
	}
	return list.Items, nil
}

// Get returns the live object, or nil when it does not exist.
func (c *Client) Get(ctx context.Context, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	r, err := c.Resource(obj)
	if err != nil {
		return nil, err
	}
	live, err := r.Get(ctx, obj.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", Ref(obj), err)
	}
	return live, nil
}

// ApplyOptions shape one apply.
type ApplyOptions struct {
	// Force takes over fields owned by other managers; without it a
	// conflict is a *ConflictError naming each field and its manager.
	Force bool
	// ResourceVersion, if set, makes the apply conditional on the object
	// being unchanged since it was read at that version (a shared object
	// whose users are counted on it): a *StaleError otherwise.
	ResourceVersion string
	// DryRun asks the API server to admit, validate and default the
	// apply, and persist nothing (dryRun=All).
	DryRun bool
}

// Apply server-side applies obj with the vllm-hpa field manager. The
// server's answer says whether it created the object (201); live is the
// object as read before (nil if not seen), and an apply that left its
// resourceVersion as it was changed nothing.
func (c *Client) Apply(ctx context.Context, obj, live *unstructured.Unstructured, o ApplyOptions) (*unstructured.Unstructured, Action, error) {
	m, err := c.mapping(obj)
	if err != nil {
		return nil, "", err
	}
	if o.ResourceVersion != "" {
		obj = obj.DeepCopy()
		obj.SetResourceVersion(o.ResourceVersion)
	}
	body, err := obj.MarshalJSON()
	if err != nil {
		return nil, "", fmt.Errorf("apply %s: %w", Ref(obj), err)
	}
	// The dynamic client's own call, but keeping the HTTP status.
	req := c.raw.Patch(types.ApplyPatchType).AbsPath(resourcePath(m, obj)...).
		Param("fieldManager", FieldManager).Body(body)
	if o.Force {
		req.Param("force", "true")
	}
	if o.DryRun {
		req.Param("dryRun", "All")
	}
	var code int
	res := req.Do(ctx).StatusCode(&code)
	raw, err := res.Raw()
	if err != nil {
		return nil, "", writeError("apply", obj, res.Error())
	}
	out := &unstructured.Unstructured{}
	if err := out.UnmarshalJSON(raw); err != nil {
		return nil, "", fmt.Errorf("apply %s: %w", Ref(obj), err)
	}
	switch {
	case code == http.StatusCreated:
		return out, Created, nil
	case live != nil && live.GetResourceVersion() == out.GetResourceVersion():
		return out, Unchanged, nil
	default:
		return out, Configured, nil
	}
}

// Release gives up every field vllm-hpa set on an object it adopted: an
// apply of the object's identity alone under the vllm-hpa field manager
// removes the fields only vllm-hpa owned (its labels and annotations
// among them) and leaves those another manager also owns, and the object.
func (c *Client) Release(ctx context.Context, obj *unstructured.Unstructured, resourceVersion string) (*unstructured.Unstructured, error) {
	bare := &unstructured.Unstructured{}
	bare.SetAPIVersion(obj.GetAPIVersion())
	bare.SetKind(obj.GetKind())
	bare.SetNamespace(obj.GetNamespace())
	bare.SetName(obj.GetName())
	out, _, err := c.Apply(ctx, bare, nil, ApplyOptions{ResourceVersion: resourceVersion})
	return out, err
}

// PatchMetadata changes labels and annotations of obj by a JSON merge patch
// (a nil value removes the key), guarded by resourceVersion when set.
func (c *Client) PatchMetadata(ctx context.Context, obj *unstructured.Unstructured, labels, annotations map[string]any, resourceVersion string) (*unstructured.Unstructured, error) {
	meta := map[string]any{}
	if len(labels) > 0 {
		meta["labels"] = labels
	}
	if len(annotations) > 0 {
		meta["annotations"] = annotations
	}
	body, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return nil, err
	}
	return c.MergePatch(ctx, obj, body, resourceVersion)
}

// MergePatch applies a JSON merge patch to obj, guarded by resourceVersion
// when set.
func (c *Client) MergePatch(ctx context.Context, obj *unstructured.Unstructured, patch []byte, resourceVersion string) (*unstructured.Unstructured, error) {
	r, err := c.Resource(obj)
	if err != nil {
		return nil, err
	}
	if resourceVersion != "" {
		var p map[string]any
		if err := json.Unmarshal(patch, &p); err != nil {
			return nil, fmt.Errorf("patch %s: %w", Ref(obj), err)
		}
		meta, _ := p["metadata"].(map[string]any)
		if meta == nil {
			meta = map[string]any{}
		}
		meta["resourceVersion"] = resourceVersion
		p["metadata"] = meta
		if patch, err = json.Marshal(p); err != nil {
			return nil, err
		}
	}
	out, err := r.Patch(ctx, obj.GetName(), types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager})
	if err != nil {
		return nil, writeError("patch", obj, err)
	}
	return out, nil
}

// StaleError is a conditional write refused because the object changed
// since it was read: read it again and redo the change.
type StaleError struct {
	Object string
	Err    error
}

func (e *StaleError) Error() string {
	return fmt.Sprintf("%s changed while vllm-hpa was updating it: %v", e.Object, e.Err)
}
func (e *StaleError) Unwrap() error { return e.Err }

// IsStale reports whether err is a *StaleError.
func IsStale(err error) bool {
	var s *StaleError
	return errors.As(err, &s)
}

// writeError classifies a failed write: a field conflict, a stale
// resourceVersion, or any other error naming the object.
func writeError(verb string, obj *unstructured.Unstructured, err error) error {
	if ce := conflictError(obj, err); ce != nil {
		return ce
	}
	if apierrors.IsConflict(err) {
		return &StaleError{Object: Ref(obj), Err: err}
	}
	return fmt.Errorf("%s %s: %w", verb, Ref(obj), err)
}

// resourcePath is the API path of obj, as the dynamic client builds it.
func resourcePath(m *meta.RESTMapping, obj *unstructured.Unstructured) []string {
	p := []string{"/apis", m.Resource.Group, m.Resource.Version}
	if m.Resource.Group == "" {
		p = []string{"/api", m.Resource.Version}
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		p = append(p, "namespaces", obj.GetNamespace())
	}
	return append(p, m.Resource.Resource, obj.GetName())
}

// IsNamespaceMissing reports whether err is the server refusing an object
// because its namespace ns does not exist.
func IsNamespaceMissing(err error, ns string) bool {
	var status apierrors.APIStatus
	if !apierrors.IsNotFound(err) || !errors.As(err, &status) {
		return false
	}
	d := status.Status().Details
	return d != nil && d.Kind == "namespaces" && d.Name == ns
}

// IsNamespaceTerminating reports whether err is the server refusing a new
// object because its namespace is being deleted.
func IsNamespaceTerminating(err error) bool {
	return apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause)
}

// FieldConflict is one field another manager owns.
type FieldConflict struct {
	Field   string `json:"field"`
	Manager string `json:"manager"`
}

// ConflictError is a server-side apply conflict.
type ConflictError struct {
	Object    string
	Conflicts []FieldConflict
	Err       error
}

func (e *ConflictError) Error() string {
	var parts []string
	for _, c := range e.Conflicts {
		parts = append(parts, fmt.Sprintf("%s (owned by %q)", c.Field, c.Manager))
	}
	return fmt.Sprintf("apply %s: conflict on %s; another manager changed these fields: re-run with --force-conflicts to take them over",
		e.Object, strings.Join(parts, ", "))
}
func (e *ConflictError) Unwrap() error { return e.Err }

// ExitCode makes a conflict exit with exitcode.Conflict.
func (e *ConflictError) ExitCode() int { return exitcode.Conflict }

func conflictError(obj *unstructured.Unstructured, err error) *ConflictError {
	var status apierrors.APIStatus
	if !apierrors.IsConflict(err) || !errors.As(err, &status) {
		return nil
	}
	ce := &ConflictError{Object: Ref(obj), Err: err}
	if d := status.Status().Details; d != nil {
		for _, cause := range d.Causes {
			if cause.Type != metav1.CauseTypeFieldManagerConflict {
				continue
			}
			ce.Conflicts = append(ce.Conflicts, FieldConflict{Field: cause.Field, Manager: managerOf(cause.Message)})
		}
	}
	if len(ce.Conflicts) == 0 {
		return nil // not a field conflict: a stale resourceVersion
	}
	return ce
}

// managerOf extracts the manager from a conflict cause's message, which
// reads: conflict with "MANAGER" [using VERSION]...
func managerOf(msg string) string {
	if _, rest, ok := strings.Cut(msg, `conflict with "`); ok {
		if m, _, ok := strings.Cut(rest, `"`); ok {
			return m
		}
	}
	return msg
}

// OwnedByOthers reports whether a field manager other than vllm-hpa's
// applies owns the field at path (e.g. "spec", "replicas": the HPA
// controller's or kubectl's scale).
func OwnedByOthers(live *unstructured.Unstructured, path ...string) bool {
	for _, mf := range live.GetManagedFields() {
		if (mf.Manager == FieldManager && mf.Operation == metav1.ManagedFieldsOperationApply) || mf.FieldsV1 == nil {
			continue
		}
		if owns(mf.FieldsV1.Raw, path) {
			return true
		}
	}
	return false
}

// owns reports whether a managed fields set holds path.
func owns(raw []byte, path []string) bool {
	var node map[string]any
	if json.Unmarshal(raw, &node) != nil {
		return false
	}
	for _, p := range path {
		next, ok := node["f:"+p].(map[string]any)
		if !ok {
			return false
		}
		node = next
	}
	return true
}

// ConflictOnlyOn reports whether err is a server-side apply conflict on
// the one field (e.g. ".spec.replicas") and no other.
func ConflictOnlyOn(err error, field string) bool {
	var ce *ConflictError
	if !errors.As(err, &ce) {
		return false
	}
	for _, c := range ce.Conflicts {
		if c.Field != field {
			return false
		}
	}
	return len(ce.Conflicts) > 0
}

// AppliedByUs reports whether vllm-hpa's server-side applies own the field
// at path (e.g. "metadata", "annotations", "iam.gke.io/gcp-service-account")
// of live, as its managedFields record.
func AppliedByUs(live *unstructured.Unstructured, path ...string) bool {
	for _, mf := range live.GetManagedFields() {
		if mf.Manager == FieldManager && mf.Operation == metav1.ManagedFieldsOperationApply && mf.FieldsV1 != nil && owns(mf.FieldsV1.Raw, path) {
			return true
		}
	}
	return false
}
