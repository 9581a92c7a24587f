package kube

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Resources vllm-hpa reads by name.
var (
	DeploymentsGVR     = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	PodsGVR            = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	NamespacesGVR      = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	EventsGVR          = schema.GroupVersionResource{Version: "v1", Resource: "events"}
	EndpointSlicesGVR  = schema.GroupVersionResource{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"}
	APIServicesGVR     = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
	HPAsGVR            = schema.GroupVersionResource{Group: "autoscaling", Version: "v2", Resource: "horizontalpodautoscalers"}
	ServiceAccountsGVR = schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}
)

// Convert turns an object read through the dynamic client into its typed
// form.
func Convert[T any](u *unstructured.Unstructured) (*T, error) {
	var out T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetTyped reads one object as T, or nil when it does not exist.
func GetTyped[T any](ctx context.Context, k *Client, gvr schema.GroupVersionResource, ns, name string) (*T, error) {
	u, err := k.Dynamic.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return Convert[T](u)
}

// Items are a list's objects.
func Items(list *unstructured.UnstructuredList) []*unstructured.Unstructured {
	out := make([]*unstructured.Unstructured, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out
}

// Existing adapts a single-object condition for a wait that follows the
// object's apply: the object exists, so its absence means it was deleted
// while waiting, which fails the wait.
func Existing(what string, cond func(*unstructured.Unstructured) (bool, string, error)) Condition {
	return func(objs []*unstructured.Unstructured) (bool, string, error) {
		if len(objs) == 0 {
			return false, "", fmt.Errorf("%s was deleted while waiting", what)
		}
		return cond(objs[0])
	}
}
