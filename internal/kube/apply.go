package kube

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
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

// Apply server-side applies obj with the vllm-hpa field manager. The
// server's answer says whether it created the object (201); live is the
// object as read before (nil if not seen), and an apply that left its
// resourceVersion as it was changed nothing. With force, fields owned by
// other managers are taken over; without it a conflict is a *ConflictError
// naming each field and its manager.
func (c *Client) Apply(ctx context.Context, obj, live *unstructured.Unstructured, force bool) (*unstructured.Unstructured, Action, error) {
	m, err := c.mapping(obj)
	if err != nil {
		return nil, "", err
	}
	body, err := obj.MarshalJSON()
	if err != nil {
		return nil, "", fmt.Errorf("apply %s: %w", Ref(obj), err)
	}
	// The dynamic client's own call, but keeping the HTTP status.
	req := c.raw.Patch(types.ApplyPatchType).AbsPath(resourcePath(m, obj)...).
		Param("fieldManager", FieldManager).Body(body)
	if force {
		req.Param("force", "true")
	}
	var code int
	res := req.Do(ctx).StatusCode(&code)
	raw, err := res.Raw()
	if err != nil {
		err = res.Error() // the server's Status, as an APIStatus error
		if ce := conflictError(obj, err); ce != nil {
			return nil, "", ce
		}
		return nil, "", fmt.Errorf("apply %s: %w", Ref(obj), err)
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
		ce.Conflicts = []FieldConflict{{Field: "(unknown)", Manager: status.Status().Message}}
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

// Owner is the set of labels that marks an object as vllm-hpa's for one
// stack instance. Deletes touch only objects that carry all of them.
type Owner map[string]string

// Owns reports whether obj carries every ownership label.
func (o Owner) Owns(obj *unstructured.Unstructured) bool {
	l := obj.GetLabels()
	for k, v := range o {
		if l[k] != v {
			return false
		}
	}
	return true
}

// Selector is the label selector matching owned objects.
func (o Owner) Selector() string {
	return labels.SelectorFromSet(labels.Set(o)).String()
}
