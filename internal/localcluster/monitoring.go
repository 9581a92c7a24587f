package localcluster

import (
	"context"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/vllm-hpa/vllm-hpa/internal/gmp"
)

// MonitoringOperator stands in for the Managed Prometheus operator: it
// writes each PodMonitoring's status the way the real one does, with
// observedGeneration and the ConfigurationCreateSuccess condition.
type MonitoringOperator struct {
	Dynamic dynamic.Interface

	mu sync.Mutex
	// decide returns the condition for a PodMonitoring; nil means True.
	decide func(pm *unstructured.Unstructured) (status, reason, message string, skip bool)
}

// Decide sets how the operator judges PodMonitorings from now on: the
// status (True/False/Unknown), reason and message to report, or skip to
// leave the status alone (an operator that is not running).
func (o *MonitoringOperator) Decide(f func(pm *unstructured.Unstructured) (status, reason, message string, skip bool)) {
	o.mu.Lock()
	o.decide = f
	o.mu.Unlock()
}

// Run watches PodMonitorings until ctx ends.
func (o *MonitoringOperator) Run(ctx context.Context) {
	f := dynamicinformer.NewDynamicSharedInformerFactory(o.Dynamic, 0)
	inf := f.ForResource(gmp.Resource).Informer()
	handle := func(obj any) {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			o.reconcile(ctx, u)
		}
	}
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: handle, UpdateFunc: func(_, obj any) { handle(obj) }})
	f.Start(ctx.Done())
	<-ctx.Done()
	f.Shutdown()
}

func (o *MonitoringOperator) reconcile(ctx context.Context, pm *unstructured.Unstructured) {
	o.mu.Lock()
	decide := o.decide
	o.mu.Unlock()
	status, reason, message := "True", "", ""
	if decide != nil {
		var skip bool
		if status, reason, message, skip = decide(pm); skip {
			return
		}
	}
	observed, _, _ := unstructured.NestedInt64(pm.Object, "status", "observedGeneration")
	conds, _, _ := unstructured.NestedSlice(pm.Object, "status", "conditions")
	if observed == pm.GetGeneration() && len(conds) == 1 {
		c, _ := conds[0].(map[string]any)
		if c["status"] == status && c["reason"] == orNil(reason) && c["message"] == orNil(message) {
			return // up to date; do not loop on our own update
		}
	}
	now := time.Now().UTC().Format(time.RFC3339)
	cond := map[string]any{"type": gmp.ConditionConfigurationCreateSuccess, "status": status, "lastUpdateTime": now, "lastTransitionTime": now}
	if reason != "" {
		cond["reason"] = reason
	}
	if message != "" {
		cond["message"] = message
	}
	u := pm.DeepCopy()
	// Only the operator's own fields: endpointStatuses belong to the
	// collectors (target status).
	_ = unstructured.SetNestedField(u.Object, pm.GetGeneration(), "status", "observedGeneration")
	_ = unstructured.SetNestedSlice(u.Object, []any{cond}, "status", "conditions")
	_, _ = o.Dynamic.Resource(gmp.Resource).Namespace(pm.GetNamespace()).UpdateStatus(ctx, u, metav1.UpdateOptions{})
}

func orNil(s string) any {
	if s == "" {
		return nil
	}
	return s
}
