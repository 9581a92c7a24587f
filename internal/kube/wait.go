package kube

import (
	"context"
	"errors"
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"k8s.io/klog/v2"
)

// Condition inspects the current set of watched objects (sorted by the
// store, possibly empty) and says whether the wait is over. reason says why
// not yet, for progress output; an error ends the wait at once.
type Condition func(objs []*unstructured.Unstructured) (done bool, reason string, err error)

// TimeoutError is a wait that ran out of time; it names the last reason the
// condition gave. It wraps context.DeadlineExceeded.
type TimeoutError struct {
	What       string
	LastReason string
}

func (e *TimeoutError) Error() string {
	if e.LastReason == "" {
		return "timed out waiting for " + e.What
	}
	return fmt.Sprintf("timed out waiting for %s: %s", e.What, e.LastReason)
}
func (e *TimeoutError) Unwrap() error { return context.DeadlineExceeded }

// Watch selects what to watch: one resource, optionally one name or a label
// selector.
type Watch struct {
	Resource      dynamic.ResourceInterface
	Name          string // only this object
	LabelSelector string
	FieldSelector string // with Name, both must hold
	// Seen are the watched objects as the server just returned them (from
	// an apply): when the condition already holds on them, the wait is over
	// without a watch. Otherwise the watch decides, from fresh state.
	Seen []*unstructured.Unstructured
}

// Until watches w (by list and watch, re-listing when the server closes the
// watch) and evaluates cond on every change until it is done, it fails, or
// ctx ends. progress, if not nil, gets each new reason.
func Until(ctx context.Context, what string, w Watch, cond Condition, progress func(reason string)) error {
	if len(w.Seen) > 0 {
		if done, _, err := cond(w.Seen); done && err == nil {
			return nil
		}
	}
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			w.options(&o)
			return w.Resource.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			w.options(&o)
			return w.Resource.Watch(ctx, o)
		},
	}
	var store cache.Store
	var last string
	eval := func() (bool, error) {
		var objs []*unstructured.Unstructured
		for _, item := range store.List() {
			objs = append(objs, item.(*unstructured.Unstructured))
		}
		done, reason, err := cond(objs)
		if reason != last && reason != "" {
			last = reason
			if progress != nil && !done {
				progress(reason)
			}
		}
		return done, err
	}
	err := untilWithSync(ctx, lw, func(s cache.Store) (bool, error) {
		store = s
		return eval()
	}, func(watch.Event) (bool, error) { return eval() })
	if err == nil {
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			return &TimeoutError{What: what, LastReason: last}
		}
		return fmt.Errorf("waiting for %s: %w", what, ctxErr)
	}
	return err
}

func (w Watch) options(o *metav1.ListOptions) {
	var fs []string
	if w.Name != "" {
		fs = append(fs, fields.OneTermEqualSelector("metadata.name", w.Name).String())
	}
	if w.FieldSelector != "" {
		fs = append(fs, w.FieldSelector)
	}
	o.FieldSelector = strings.Join(fs, ",")
	if w.LabelSelector != "" {
		o.LabelSelector = w.LabelSelector
	}
}

// untilWithSync is client-go's watchtools.UntilWithSync, except that it
// learns that the informer has synced from its channel: UntilWithSync polls
// for that every 100 ms, which made every wait last at least 100 ms (a
// quarter of a re-run's time) although the server answers in a few.
func untilWithSync(ctx context.Context, lw cache.ListerWatcher, precondition func(cache.Store) (bool, error), condition watchtools.ConditionFunc) error {
	store, informer, watcher, stopped := watchtools.NewIndexerInformerWatcherWithLogger(klog.FromContext(ctx), lw, &unstructured.Unstructured{})
	defer func() { <-stopped }() // the informer's goroutines are gone before we return
	defer watcher.Stop()
	select {
	case <-informer.HasSyncedChecker().Done():
	case <-ctx.Done():
		return ctx.Err()
	}
	if done, err := precondition(store); err != nil || done {
		return err
	}
	_, err := watchtools.UntilWithoutRetry(ctx, watcher, condition)
	return err
}
