package kube

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
)

// IncompleteScanError says a namespace's contents could not all be read, so
// nothing may be concluded about what it holds.
type IncompleteScanError struct {
	Namespace string
	Reasons   []string
}

func (e *IncompleteScanError) Error() string {
	return fmt.Sprintf("cannot read everything in namespace %s: %s", e.Namespace, strings.Join(e.Reasons, "; "))
}

// notContent are resources whose objects are views or history of other
// objects, never content of their own: events, and the resource metrics
// API's pod metrics (one per pod, which is listed itself).
func notContent(group, resource string) bool {
	return resource == "events" || group == "metrics.k8s.io"
}

// ScanNamespace lists every object in namespace ns, across every namespaced
// resource type that discovery (read fresh: a CRD installed since the cache
// was written counts) lists with the list verb. Any group whose discovery
// failed, and any list that failed or was forbidden, makes the scan
// incomplete: an *IncompleteScanError naming each.
func (c *Client) ScanNamespace(ctx context.Context, ns string) ([]unstructured.Unstructured, error) {
	c.Discovery.Invalidate()
	lists, err := c.Discovery.ServerPreferredNamespacedResources()
	inc := &IncompleteScanError{Namespace: ns}
	if err != nil {
		if !discovery.IsGroupDiscoveryFailedError(err) {
			return nil, fmt.Errorf("discovery: %w", err)
		}
		for gv, gerr := range err.(*discovery.ErrGroupDiscoveryFailed).Groups {
			inc.Reasons = append(inc.Reasons, fmt.Sprintf("the API %s did not answer discovery (%v)", gv, gerr))
		}
	}
	var out []unstructured.Unstructured
	for _, list := range lists {
		gv, err := schema.ParseGroupVersion(list.GroupVersion)
		if err != nil {
			continue
		}
		for _, res := range list.APIResources {
			if strings.Contains(res.Name, "/") || !hasVerb(res.Verbs, "list") || notContent(gv.Group, res.Name) {
				continue
			}
			items, err := c.Dynamic.Resource(gv.WithResource(res.Name)).Namespace(ns).List(ctx, metav1.ListOptions{})
			switch {
			case err == nil:
				out = append(out, items.Items...)
			case apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err):
				// Served no more since discovery, or not listable after all.
			case apierrors.IsForbidden(err):
				inc.Reasons = append(inc.Reasons, fmt.Sprintf("listing %s is forbidden to these credentials", gv.WithResource(res.Name).GroupResource()))
			default:
				inc.Reasons = append(inc.Reasons, fmt.Sprintf("listing %s failed: %v", gv.WithResource(res.Name).GroupResource(), err))
			}
		}
	}
	if len(inc.Reasons) > 0 {
		sort.Strings(inc.Reasons)
		return nil, inc
	}
	return out, nil
}

// OwnerLookup finds an object an ownerReference names that is not among a
// namespace's scanned objects (a cluster-scoped owner): nil when it does
// not exist.
func (c *Client) OwnerLookup(ctx context.Context, ns string, ref metav1.OwnerReference) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(ref.APIVersion)
	u.SetKind(ref.Kind)
	u.SetNamespace(ns) // used only if the kind is namespaced
	u.SetName(ref.Name)
	live, err := c.Get(ctx, u)
	if err != nil {
		var nm *NoMatchError
		if errors.As(err, &nm) {
			return nil, nil // a kind no longer served owns nothing that lives
		}
		return nil, err
	}
	if live == nil || live.GetUID() != types.UID(ref.UID) {
		return nil, nil
	}
	return live, nil
}

func hasVerb(verbs []string, v string) bool {
	for _, x := range verbs {
		if x == v {
			return true
		}
	}
	return false
}
