package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/localcluster"
	"github.com/vllm-hpa/vllm-hpa/internal/nativemetrics"
	"github.com/vllm-hpa/vllm-hpa/internal/vllmsim"
)

// nativeMetric is instance inst's native metric, as the HPA names it.
func nativeMetric(inst instance) string {
	return nativemetrics.MetricName(inst.name+"-vllm", "num-requests-running")
}

// servePods makes every pod of inst's testbed serve a vLLM simulator's
// /metrics (GKE scrapes the AutoscalingMetric's pods; monitor reads one).
func servePods(t *testing.T, inst instance) string {
	// Answers of 100 ms: long enough that the gauges tune samples see them.
	sim := vllmsim.New(vllmsim.Config{Model: "google/gemma-3-1b-it", TokenLatency: 20 * time.Millisecond, OutputTokens: 5, MaxNumSeqs: 8})
	srv := httptest.NewServer(sim.Handler())
	addr := strings.TrimPrefix(srv.URL, "http://")
	inst.tb.podServer.Store(&addr)
	t.Cleanup(func() { inst.tb.podServer.Store(nil); srv.Close() })
	return srv.URL
}

// hpaWatch records every state of the HPA the API server stores while a
// migration runs: how many of them had no valid metric.
type hpaWatch struct {
	mu       sync.Mutex
	states   int
	invalid  []string
	switched bool // the metric's name changed during the watch
	first    string
	lastRV   string // the resourceVersion of the last state seen
	stop     func()
}

// watchHPA records every state of the HPA from now on. The testbed's API
// server closes each watch after 5-10 s: a RetryWatcher resumes from the
// last state seen, so a slow run loses none.
func watchHPA(t *testing.T, inst instance) *hpaWatch {
	ctx, cancel := context.WithCancel(context.Background())
	hpas := inst.tb.cp.Client.AutoscalingV2().HorizontalPodAutoscalers(inst.namespace)
	only := "metadata.name=gemma-server-hpa"
	list, err := hpas.List(ctx, metav1.ListOptions{FieldSelector: only})
	if err != nil {
		t.Fatal(err)
	}
	w, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = only
			return hpas.Watch(ctx, o)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	hw := &hpaWatch{}
	for i := range list.Items { // the state now, as a watch from 0 would add it
		hw.record(&list.Items[i])
	}
	done := make(chan struct{})
	// Stop once the watch has delivered the HPA's state as it is now: on a
	// busy machine the last events arrive after the command returns.
	hw.stop = func() {
		defer func() { cancel(); w.Stop(); <-done }()
		h, err := inst.tb.cp.Client.AutoscalingV2().HorizontalPodAutoscalers(inst.namespace).Get(context.Background(), "gemma-server-hpa", metav1.GetOptions{})
		if err != nil {
			return
		}
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			hw.mu.Lock()
			seen := hw.lastRV == h.ResourceVersion
			hw.mu.Unlock()
			if seen {
				return
			}
		}
		t.Errorf("the watch did not deliver the HPA's state %s within a minute", h.ResourceVersion)
	}
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			if ev.Type != watch.Added && ev.Type != watch.Modified {
				continue
			}
			hw.record(ev.Object.(*autoscalingv2.HorizontalPodAutoscaler))
		}
	}()
	return hw
}

// record is one state of the HPA.
func (hw *hpaWatch) record(h *autoscalingv2.HorizontalPodAutoscaler) {
	name := h.Spec.Metrics[0].Pods.Metric.Name
	active := false
	for _, c := range h.Status.Conditions {
		if c.Type == autoscalingv2.ScalingActive && c.Status == corev1.ConditionTrue {
			active = true
		}
	}
	hw.mu.Lock()
	hw.lastRV = h.ResourceVersion
	hw.states++
	if hw.first == "" {
		hw.first = name
	}
	hw.switched = hw.switched || name != hw.first
	if !active {
		hw.invalid = append(hw.invalid, fmt.Sprintf("%s: %v", name, h.Status.Conditions))
	}
	hw.mu.Unlock()
}

// TestNativeBackend: up --backend native builds the native route alone
// (the AutoscalingMetric, the HPA on autoscaling.gke.io|...) with no
// adapter and no Google credentials; verify checks it; moving to the
// adapter and back switches the HPA first and then retires the other
// route, and the HPA never stores a state without a valid metric; a step
// command without --backend, or up with hpa skipped, moves nothing.
func TestNativeBackend(t *testing.T) {
	inst := newInstance(t, "native", "native-ns")
	g := startGCP(t)
	server := servePods(t, inst)
	metrics := inst.tb.metrics
	metrics.Set(nativeMetric(inst), "1")
	metrics.Set(runningMetric, "1")
	t.Cleanup(func() {
		metrics.Delete(nativeMetric(inst))
		metrics.Set(runningMetric, "0")
		gcpRun(t, g, inst, "cleanup")
	})
	k := inst.tb.cp

	// Native, from nothing: no Google credentials needed at all.
	code, out, errOut := kubeRun(t, inst, "up", "--backend", "native", "-o", "json")
	if code != 0 {
		t.Fatalf("up --backend native: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "not used with hpa.backend native") {
		t.Errorf("up does not say the adapter and identity are not used:\n%s", out)
	}
	am, err := k.Dynamic.Resource(nativemetrics.Resource).Namespace(inst.namespace).Get(context.Background(), "native-vllm", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("no AutoscalingMetric: %v", err)
	}
	if g, ok := nativemetrics.Find(am, "num-requests-running"); !ok || g.PrometheusName != "vllm:num_requests_running" || g.Selector["app"] != "gemma-server" {
		t.Errorf("AutoscalingMetric declares %+v", g)
	}
	if got := hpaMetric(t, inst); got != nativeMetric(inst) {
		t.Errorf("HPA metric %q, want %q", got, nativeMetric(inst))
	}
	if _, err := k.Client.AppsV1().Deployments("custom-metrics").Get(context.Background(), "custom-metrics-stackdriver-adapter", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the native route created the adapter (%v)", err)
	}
	if g.Mutations() != 0 {
		t.Errorf("the native route made %d Google API changes", g.Mutations())
	}
	code, out, errOut = kubeRun(t, inst, "verify", "--backend", "native", "--endpoint", server, "-o", "json")
	if code != 0 {
		t.Fatalf("verify --backend native: exit %d\n%s\n%s", code, out, errOut)
	}
	var doc verifyJSON
	strict(t, out, &doc)
	checks := map[string]bool{}
	for _, s := range doc.Steps {
		for _, c := range s.Checks {
			checks[s.Step+"/"+c.Check] = c.OK
		}
	}
	for _, want := range []string{"monitor/autoscalingmetric serves the gauge", "custom-metric/metric read by the HPA", "adapter/adapter not used", "identity/identity not used", "hpa/hpa scaling active"} {
		if !checks[want] {
			t.Errorf("verify: %s not passed: %v", want, checks)
		}
	}

	// A step command without --backend does not move the HPA off its
	// route: it refuses, saying how to keep or move it.
	code, out, _ = kubeRun(t, inst, "hpa", "-o", "json")
	var refused result
	json.Unmarshal([]byte(out), &refused)
	if code != exitcode.Precondition || !strings.Contains(refused.Error, "give --backend native to keep it") || hpaMetric(t, inst) != nativeMetric(inst) {
		t.Errorf("hpa without --backend on a native stack: exit %d, %s", code, refused.Error)
	}

	// A combined strategy whose gauge the AutoscalingMetric does not
	// declare yet: refused before the HPA is written, with the fix.
	code, out, _ = kubeRun(t, inst, "hpa", "--backend", "native", "--metric", "running+kv-cache", "-o", "json")
	var undeclared result
	json.Unmarshal([]byte(out), &undeclared)
	if code != exitcode.Precondition || !strings.Contains(undeclared.Error, "does not declare gauge kv-cache-usage-perc") ||
		!strings.Contains(undeclared.Error, "monitor --backend native --metric running+kv-cache") || hpaMetric(t, inst) != nativeMetric(inst) {
		t.Errorf("hpa with an undeclared gauge: exit %d, %s", code, undeclared.Error)
	}

	// A plain verify checks the route the HPA reads; one told to check
	// the other fails, and says which route the HPA reads.
	if code, out, errOut := kubeRun(t, inst, "verify", "--endpoint", server, "-o", "json"); code != 0 || !strings.Contains(out, "hpa.backend not given: the HPA reads autoscaling.gke.io") {
		t.Errorf("plain verify on a native stack: exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = kubeRun(t, inst, "verify", "--backend", "adapter", "--endpoint", server, "-o", "json")
	var wrong result
	json.Unmarshal([]byte(out), &wrong)
	if code == 0 || !strings.Contains(wrong.Error, "run verify with --backend native") {
		t.Errorf("verify --backend adapter on a native stack: exit %d, %s", code, wrong.Error)
	}

	// tune --apply sets its recommendation on the HPA through the hpa step.
	// Without --backend: the HPA's own route. Levels of 2 s: tune reads
	// the gauges every 500 ms within a level, and on a loaded machine 1 s
	// levels left the knee's level without a sample that saw a request
	// (make test: "averaged 0 at the knee").
	code, out, errOut = kubeRun(t, inst, "tune", "--apply", "--endpoint", server, "--slo-ttft", "5s",
		"--max-concurrency", "4", "--step-duration", "2s", "--warmup", "0s", "-o", "json")
	var tuned tuneJSON
	strict(t, out, &tuned)
	if code != 0 || !tuned.Applied || tuned.Recommendation == nil {
		t.Fatalf("tune --apply: exit %d\n%s\n%s", code, out, errOut)
	}
	h, err := k.Client.AutoscalingV2().HorizontalPodAutoscalers(inst.namespace).Get(context.Background(), "gemma-server-hpa", metav1.GetOptions{})
	if err != nil || h.Spec.Metrics[0].Pods.Target.AverageValue.AsApproximateFloat64() != tuned.Recommendation.Target {
		t.Errorf("after tune --apply the HPA's target is %v, want %v (%v)", h.Spec.Metrics[0].Pods.Target.AverageValue, tuned.Recommendation.Target, err)
	}

	// tune --from-report derives the behaviour from a measured scale-up
	// (a 324 s cold start) and --apply sets it on the HPA: no scale-up
	// stabilization, a scale-down window of 5m30s.
	report := filepath.Join(t.TempDir(), "timeline.json")
	if err := os.WriteFile(report, []byte(measuredReport), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = kubeRun(t, inst, "tune", "--from-report", report, "--apply", "-o", "json")
	strict(t, out, &tuned)
	if code != 0 || !tuned.Applied || tuned.Behavior == nil || time.Duration(tuned.Behavior.ScaleDownStabilization) != 330*time.Second {
		t.Fatalf("tune --from-report --apply: exit %d\n%s\n%s", code, out, errOut)
	}
	h, err = k.Client.AutoscalingV2().HorizontalPodAutoscalers(inst.namespace).Get(context.Background(), "gemma-server-hpa", metav1.GetOptions{})
	if err != nil || h.Spec.Behavior == nil || *h.Spec.Behavior.ScaleDown.StabilizationWindowSeconds != 330 || *h.Spec.Behavior.ScaleUp.StabilizationWindowSeconds != 0 {
		t.Errorf("after tune --from-report --apply the HPA's behaviour is %+v (%v)", h.Spec.Behavior, err)
	}
	if code, out, _ := kubeRun(t, inst, "tune", "--from-report", report); code != 0 || !strings.Contains(out, "scale-down: a stabilization window of 5m30s (was 30s)") || !strings.Contains(out, "scale-down-stabilization: 5m30s") {
		t.Errorf("tune --from-report, text: exit %d\n%s", code, out)
	}

	// To the adapter: the adapter and the identity come up, the HPA
	// switches, then the AutoscalingMetric goes.
	w := watchHPA(t, inst)
	gcpMustRun(t, g, inst, "up", "--backend", "adapter")
	w.stop()
	if got := hpaMetric(t, inst); got != runningMetric {
		t.Errorf("HPA metric %q after the move to the adapter", got)
	}
	if _, err := k.Dynamic.Resource(nativemetrics.Resource).Namespace(inst.namespace).Get(context.Background(), "native-vllm", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the AutoscalingMetric is still there after the move to the adapter (%v)", err)
	}
	w.check(t, "native -> adapter")

	// With hpa skipped nothing is retired: the HPA still reads the
	// adapter's metric.
	gcpMustRun(t, g, inst, "up", "--backend", "native", "--skip", "hpa")
	if _, err := k.Client.AppsV1().Deployments("custom-metrics").Get(context.Background(), "custom-metrics-stackdriver-adapter", metav1.GetOptions{}); err != nil || hpaMetric(t, inst) != runningMetric {
		t.Errorf("up --backend native --skip hpa retired the adapter the HPA reads (%v, %s)", err, hpaMetric(t, inst))
	}

	// And back: the HPA switches, then the adapter and identity go (this
	// instance was their only user).
	w = watchHPA(t, inst)
	out = gcpMustRun(t, g, inst, "up", "--backend", "native")
	w.stop()
	if got := hpaMetric(t, inst); got != nativeMetric(inst) {
		t.Errorf("HPA metric %q after the move to native", got)
	}
	if _, err := k.Client.AppsV1().Deployments("custom-metrics").Get(context.Background(), "custom-metrics-stackdriver-adapter", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the adapter is still there after the move to native (%v)\n%s", err, out)
	}
	if g.IAM.Account("metrics-adapter-gsa@my-proj.iam.gserviceaccount.com") != nil {
		t.Errorf("the Google service account is still there after the move to native:\n%s", out)
	}
	w.check(t, "adapter -> native")
}

// check: the HPA's metric changed, and no stored state lacked a valid
// metric.
func (w *hpaWatch) check(t *testing.T, what string) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.switched {
		t.Errorf("%s: the watch saw no switch of the HPA's metric (%d states)", what, w.states)
	}
	// The controller writes status only when it changes, so one stored
	// state without a valid metric could stand for many syncs: none is
	// allowed.
	if len(w.invalid) > 0 {
		t.Errorf("%s: %d of %d HPA states without a valid metric:\n%s", what, len(w.invalid), w.states, strings.Join(w.invalid, "\n"))
	}
	t.Logf("%s: %d HPA states, %d without a valid metric", what, w.states, len(w.invalid))
}

func hpaMetric(t *testing.T, inst instance) string {
	t.Helper()
	h, err := inst.tb.cp.Client.AutoscalingV2().HorizontalPodAutoscalers(inst.namespace).Get(context.Background(), "gemma-server-hpa", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return h.Spec.Metrics[0].Pods.Metric.Name
}

// TestNativeMetricLimit: GKE serves at most 50 unique metrics per node,
// counted per node over the AutoscalingMetrics whose pods run there. On
// the node the vLLM pods run on, 50 gauges of others refuse a native
// stack (exit 5, naming the node) before anything changes; 49 leave room.
// Gauges whose pods run on no node count nowhere.
func TestNativeMetricLimit(t *testing.T) {
	inst := newInstance(t, "limit", "limit-ns")
	ctx := context.Background()
	k := inst.tb.cp
	ns := "others-metrics"
	if _, err := k.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// The AutoscalingMetrics go at once, not when the namespace
		// controller gets to them: the next test on this control plane
		// counts what is left.
		k.Dynamic.Resource(nativemetrics.Resource).Namespace(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
		k.Client.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, metav1.ListOptions{})
		k.Client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	})
	servePods(t, inst)
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	mustRun(t, inst, "deploy")
	// Another workload's pod, on the vLLM pods' node (the testbed has one).
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: ns, Labels: map[string]string{"app": "other"}},
		Spec: corev1.PodSpec{NodeName: localcluster.NodeName, Containers: []corev1.Container{{Name: "c", Image: "other"}}}}
	if _, err := k.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	declare := func(name, app string, gauges int) {
		var metrics []any
		for g := range gauges {
			metrics = append(metrics, map[string]any{"gauge": map[string]any{"name": fmt.Sprintf("g%d", g), "prometheusMetricName": fmt.Sprintf("g%d", g)}})
		}
		am := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": nativemetrics.GroupVersion, "kind": "AutoscalingMetric",
			"metadata": map[string]any{"name": name, "namespace": ns},
			"spec": map[string]any{"metrics": []any{map[string]any{"pod": map[string]any{
				"selector":   map[string]any{"matchLabels": map[string]any{"app": app}},
				"containers": []any{map[string]any{"endpoint": map[string]any{"port": int64(9090)}, "metrics": metrics}},
			}}}},
		}}
		if _, err := k.Dynamic.Resource(nativemetrics.Resource).Namespace(ns).Create(ctx, am, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	declare("on-the-node", "other", 50)
	declare("on-no-node", "nobody", 50) // selects no pod: counts on no node
	code, out, errOut := kubeRun(t, inst, "monitor", "--backend", "native", "-o", "json")
	if code != exitcode.Precondition || !strings.Contains(out, "the pods on node "+localcluster.NodeName+" already emit 50 unique metrics") || !strings.Contains(out, "at most 50 per node") {
		t.Errorf("50 gauges on the node: exit %d\n%s\n%s", code, out, errOut)
	}
	if list, _ := k.Dynamic.Resource(nativemetrics.Resource).Namespace(inst.namespace).List(ctx, metav1.ListOptions{}); len(list.Items) != 0 {
		t.Errorf("the refused run created %d AutoscalingMetrics", len(list.Items))
	}
	if err := k.Dynamic.Resource(nativemetrics.Resource).Namespace(ns).Delete(ctx, "on-the-node", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	declare("on-the-node", "other", 49)
	if code, out, errOut := kubeRun(t, inst, "up", "--backend", "native", "--skip", "hpa", "-o", "json"); code != 0 {
		t.Errorf("49 gauges on the node: exit %d\n%s\n%s", code, out, errOut)
	}
}

// TestAutoBackendByDiscovery: without the container API (a plain
// kubeconfig), auto is native where the API server serves
// AutoscalingMetric and the adapter where it does not, and says why.
func TestAutoBackendByDiscovery(t *testing.T) {
	inst := newInstance(t, "auto", "auto-ns")
	servePods(t, inst)
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	if code, out, errOut := kubeRun(t, inst, "deploy"); code != 0 {
		t.Fatalf("deploy: exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut := kubeRun(t, inst, "monitor", "--backend", "auto", "-o", "json")
	if code != 0 || !strings.Contains(out, "hpa.backend auto: native, as the cluster serves") {
		t.Fatalf("auto on a cluster with AutoscalingMetric: exit %d\n%s\n%s", code, out, errOut)
	}
	// The same cluster without the CRD (restored for the next test).
	ctx := context.Background()
	crds := inst.tb.cp.Dynamic.Resource(crdGVR)
	crd, err := crds.Get(ctx, "autoscalingmetrics.autoscaling.gke.io", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := crds.Delete(ctx, crd.GetName(), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := inst.tb.cp.InstallCRD(ctx, nativemetrics.CRD); err != nil {
			t.Error(err)
		}
	})
	waitGone(t, func() bool {
		_, err := crds.Get(ctx, crd.GetName(), metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	// A discovery cache of its own: this is a cluster that never served
	// the kind, not one that stopped in the last hours.
	fresh := map[string]string{"KUBECACHEDIR": t.TempDir()}
	code, out, errOut = kubeRunEnv(t, inst, fresh, "monitor", "--backend", "auto", "-o", "json")
	if code != 0 || !strings.Contains(out, "hpa.backend auto: adapter, as the cluster does not serve") {
		t.Errorf("auto on a cluster without AutoscalingMetric: exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = kubeRunEnv(t, inst, fresh, "monitor", "--backend", "native", "-o", "json")
	var doc result
	json.Unmarshal([]byte(out), &doc)
	if code != exitcode.Precondition || !strings.Contains(doc.Error, "--hpa-profile=performance") {
		t.Errorf("native on a cluster without AutoscalingMetric: exit %d, %s", code, doc.Error)
	}
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

func waitGone(t *testing.T, gone func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if gone() {
			return
		}
	}
	t.Fatal("still there after 30 s")
}
