package localcluster

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/vllm-hpa/vllm-hpa/internal/gmp"
)

// MonitoringOperator stands in for the Managed Prometheus operator: it
// writes each PodMonitoring's status the way the real one does, with
// observedGeneration and the ConfigurationCreateSuccess condition; and,
// where the OperatorConfig gmp-public/config enables target status and
// WriteTargets is set, its endpointStatuses: [] when the selector matches
// no target, one entry per endpoint with the Running pods it selects
// (counted healthy) otherwise. With target status off it writes none.
type MonitoringOperator struct {
	Dynamic dynamic.Interface
	Client  kubernetes.Interface
	// WriteTargets: the stand-in reports targets itself (the tests). The
	// emulator leaves them to its collector, which scrapes for real.
	WriteTargets bool

	mu sync.Mutex
	// decide returns the condition for a PodMonitoring; nil means True.
	decide func(pm *unstructured.Unstructured) (status, reason, message string, skip bool)
	pms    cache.Store
}

// Decide sets how the operator judges PodMonitorings from now on: the
// status (True/False/Unknown), reason and message to report, or skip to
// leave the status alone (an operator that is not running).
func (o *MonitoringOperator) Decide(f func(pm *unstructured.Unstructured) (status, reason, message string, skip bool)) {
	o.mu.Lock()
	o.decide = f
	o.mu.Unlock()
}

// SetTargetStatus enables or disables target status in gmp-public/config,
// as an operator of the cluster does with kubectl edit.
func (o *MonitoringOperator) SetTargetStatus(ctx context.Context, enabled bool) error {
	return setTargetStatus(ctx, o.Dynamic, enabled)
}

func setTargetStatus(ctx context.Context, d dynamic.Interface, enabled bool) error {
	oc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gmp.GroupVersion.String(), "kind": "OperatorConfig",
		"metadata": map[string]any{"name": gmp.OperatorConfigName, "namespace": gmp.OperatorConfigNamespace},
		"features": map[string]any{"targetStatus": map[string]any{"enabled": enabled}},
	}}
	body, _ := oc.MarshalJSON()
	force := true
	_, err := d.Resource(gmp.OperatorConfigResource).Namespace(gmp.OperatorConfigNamespace).Patch(ctx, gmp.OperatorConfigName, "application/apply-patch+yaml", body, metav1.PatchOptions{FieldManager: "gke", Force: &force})
	return err
}

// targetStatusOn reads gmp-public/config.
func (o *MonitoringOperator) targetStatusOn(ctx context.Context) bool {
	oc, err := o.Dynamic.Resource(gmp.OperatorConfigResource).Namespace(gmp.OperatorConfigNamespace).Get(ctx, gmp.OperatorConfigName, metav1.GetOptions{})
	return err == nil && gmp.TargetStatusEnabled(oc.Object)
}

// Run watches PodMonitorings (and, for their targets, pods) until ctx ends.
func (o *MonitoringOperator) Run(ctx context.Context) {
	f := dynamicinformer.NewDynamicSharedInformerFactory(o.Dynamic, 0)
	inf := f.ForResource(gmp.Resource).Informer()
	o.mu.Lock()
	o.pms = inf.GetStore()
	o.mu.Unlock()
	handle := func(obj any) {
		if u, ok := obj.(*unstructured.Unstructured); ok {
			o.reconcile(ctx, u)
		}
	}
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: handle, UpdateFunc: func(_, obj any) { handle(obj) }})
	f.Start(ctx.Done())
	if o.WriteTargets && o.Client != nil {
		// A pod that starts or stops changes its PodMonitorings' targets.
		pf := informers.NewSharedInformerFactory(o.Client, 0)
		podChanged := func(obj any) {
			pod, ok := obj.(*corev1.Pod)
			if !ok {
				if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					pod, _ = tomb.Obj.(*corev1.Pod)
				}
			}
			if pod == nil {
				return
			}
			for _, item := range inf.GetStore().List() {
				if u := item.(*unstructured.Unstructured); u.GetNamespace() == pod.Namespace {
					o.reconcile(ctx, u)
				}
			}
		}
		pf.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: podChanged, UpdateFunc: func(_, obj any) { podChanged(obj) }, DeleteFunc: podChanged})
		pf.Start(ctx.Done())
		defer pf.Shutdown()
	}
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
	u := pm.DeepCopy()
	observed, _, _ := unstructured.NestedInt64(pm.Object, "status", "observedGeneration")
	conds, _, _ := unstructured.NestedSlice(pm.Object, "status", "conditions")
	upToDate := false
	if observed == pm.GetGeneration() && len(conds) == 1 {
		c, _ := conds[0].(map[string]any)
		upToDate = c["status"] == status && c["reason"] == orNil(reason) && c["message"] == orNil(message)
	}
	if !upToDate {
		now := time.Now().UTC().Format(time.RFC3339)
		cond := map[string]any{"type": gmp.ConditionConfigurationCreateSuccess, "status": status, "lastUpdateTime": now, "lastTransitionTime": now}
		if reason != "" {
			cond["reason"] = reason
		}
		if message != "" {
			cond["message"] = message
		}
		_ = unstructured.SetNestedField(u.Object, pm.GetGeneration(), "status", "observedGeneration")
		_ = unstructured.SetNestedSlice(u.Object, []any{cond}, "status", "conditions")
	}
	targetsChanged := false
	if o.WriteTargets {
		old, had, _ := unstructured.NestedSlice(pm.Object, "status", "endpointStatuses")
		if o.targetStatusOn(ctx) {
			targets := o.targets(ctx, pm)
			if !had || !reflect.DeepEqual(normalize(old), normalize(targets)) {
				_ = unstructured.SetNestedSlice(u.Object, targets, "status", "endpointStatuses")
				targetsChanged = true
			}
		} else if had {
			unstructured.RemoveNestedField(u.Object, "status", "endpointStatuses")
			targetsChanged = true
		}
	}
	if upToDate && !targetsChanged {
		return // do not loop on our own update
	}
	_, _ = o.Dynamic.Resource(gmp.Resource).Namespace(pm.GetNamespace()).UpdateStatus(ctx, u, metav1.UpdateOptions{})
}

// targets are a PodMonitoring's endpointStatuses: an entry per endpoint
// only when its selector matches Running pods (their count, all healthy).
func (o *MonitoringOperator) targets(ctx context.Context, u *unstructured.Unstructured) []any {
	var pm gmp.PodMonitoring
	if runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &pm) != nil || o.Client == nil {
		return []any{}
	}
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil {
		return []any{}
	}
	pods, err := o.Client.CoreV1().Pods(pm.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return []any{}
	}
	var active int64
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			active++
		}
	}
	out := []any{}
	if active == 0 {
		return out
	}
	for _, ep := range pm.Spec.Endpoints {
		out = append(out, map[string]any{
			"name":          fmt.Sprintf("PodMonitoring/%s/%s/%s", pm.Namespace, pm.Name, ep.Port.String()),
			"activeTargets": active, "unhealthyTargets": int64(0),
		})
	}
	return out
}

// normalize drops what changes without meaning (timestamps) and numbers'
// types, for comparing target lists.
func normalize(v []any) string { return fmt.Sprint(v) }

func orNil(s string) any {
	if s == "" {
		return nil
	}
	return s
}
