package stack

import (
	"context"
	"math"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/vllm-hpa/vllm-hpa/internal/kube"
)

var getOpts = metav1.GetOptions{}

func listBy(selector string) metav1.ListOptions { return metav1.ListOptions{LabelSelector: selector} }

func notFound(err error) bool { return apierrors.IsNotFound(err) }

// getTyped reads one object as T, or nil when it does not exist.
func getTyped[T any](ctx context.Context, k *kube.Client, gvr schema.GroupVersionResource, ns, name string) (*T, error) {
	u, err := k.Dynamic.Resource(gvr).Namespace(ns).Get(ctx, name, getOpts)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return convert[T](u)
}

func items(list *unstructured.UnstructuredList) []*unstructured.Unstructured {
	out := make([]*unstructured.Unstructured, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out
}

func quantityString(x float64) string {
	if x == math.Trunc(x) {
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return strconv.FormatFloat(x, 'f', 3, 64)
}
