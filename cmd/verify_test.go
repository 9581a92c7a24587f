package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/iam/apiv1/iampb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/gcpfake"
	"github.com/vllm-hpa/vllm-hpa/internal/vllmsim"
)

const runningMetric = "prometheus.googleapis.com|vllm:num_requests_running|gauge"

// checks returns "section/check=ok" for every check of a verify run, and
// the reason of each failed one.
func checks(t *testing.T, out string) (map[string]bool, map[string]string) {
	t.Helper()
	var doc verifyJSON
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	ok, reason := map[string]bool{}, map[string]string{}
	for _, s := range doc.Steps {
		for _, c := range s.Checks {
			ok[s.Step+"/"+c.Check] = c.OK
			if !c.OK {
				reason[s.Step+"/"+c.Check] = c.Reason
			}
		}
	}
	return ok, reason
}

func TestVerifyEachCheck(t *testing.T) {
	g := startGCP(t)
	sim := httptest.NewServer(vllmsim.New(vllmsim.DefaultConfig()).Handler())
	defer sim.Close()
	inst := newInstance(t, "ver", "ver-ns")
	cp, metrics := inst.tb.cp, inst.tb.metrics
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	gcpMustRun(t, g, inst, "up")

	verifyRun := func(endpoint string) (int, map[string]bool, map[string]string, string) {
		code, out, errOut := gcpRun(t, g, inst, "verify", "-o", "json", "--endpoint", endpoint)
		ok, reason := checks(t, out)
		return code, ok, reason, errOut
	}
	code, ok, reason, errOut := verifyRun(sim.URL)
	want := []string{
		"deploy/deployment available", "deploy/token secret holds a token", "deploy/service endpoints ready",
		"metrics/vllm /metrics carries the gauges",
		"monitor/podmonitoring configured",
		"adapter/adapter available", "adapter/apiservice v1beta1.custom.metrics.k8s.io available",
		"adapter/apiservice v1beta2.custom.metrics.k8s.io available", "adapter/apiservice v1beta1.external.metrics.k8s.io available",
		"custom-metric/metric readable for every pod",
		"hpa/hpa scaling active",
		"identity/google service account exists", "identity/roles/monitoring.viewer binding", "identity/roles/iam.workloadIdentityUser binding", "identity/ksa annotation",
	}
	for _, w := range want {
		if !ok[w] {
			t.Errorf("%s not passing (reason %q)", w, reason[w])
		}
	}
	if code != 0 || len(ok) != len(want) {
		t.Fatalf("verify: exit %d, %d checks, want %d all passing:\n%s", code, len(ok), len(want), errOut)
	}

	ctx := context.Background()
	failing := []struct {
		check, reason string
		breakIt       func() (endpoint string, restore func())
	}{
		{"metrics/vllm /metrics carries the gauges", "GaugeMissing", func() (string, func()) {
			other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintln(w, "# TYPE vllm:num_requests_running gauge")
				fmt.Fprintln(w, `vllm:num_requests_running{model_name="google/gemma-3-1b-it"} 0`)
			}))
			return other.URL, other.Close
		}},
		{"monitor/podmonitoring configured", "ScrapeConfigError", func() (string, func()) {
			cp.Operator.Decide(func(*unstructured.Unstructured) (string, string, string, bool) {
				return "False", "ScrapeConfigError", "bad endpoint", false
			})
			nudgePodMonitoring(t, inst, "False")
			return sim.URL, func() { cp.Operator.Decide(nil); nudgePodMonitoring(t, inst, "True") }
		}},
		// The adapter's 404 has many causes: here every grant is seconds
		// old and the samples cannot be read (the kubeconfig context does
		// not name a GKE cluster), so IAM's propagation is the one named.
		// Each other cause is a row of identity's Judge table.
		{"custom-metric/metric readable for every pod", "IAMPropagating", func() (string, func()) {
			metrics.Delete(runningMetric)
			return sim.URL, func() { metrics.Set(runningMetric, "0") }
		}},
		{"adapter/adapter available", "ScaledToZero", func() (string, func()) {
			scaleAdapter(t, inst.tb, 0)
			return sim.URL, func() { scaleAdapter(t, inst.tb, 1); mustRun(t, inst, "adapter") }
		}},
		{"deploy/token secret holds a token", "NotFound", func() (string, func()) {
			cp.Client.CoreV1().Secrets(inst.namespace).Delete(ctx, "hf-secret", metav1.DeleteOptions{})
			return sim.URL, func() { mustRun(t, inst, "deploy") }
		}},
		{"hpa/hpa scaling active", "NotFound", func() (string, func()) {
			cp.Client.AutoscalingV2().HorizontalPodAutoscalers(inst.namespace).Delete(ctx, "gemma-server-hpa", metav1.DeleteOptions{})
			return sim.URL, func() { mustRun(t, inst, "hpa") }
		}},
		{"identity/roles/iam.workloadIdentityUser binding", "MemberMissing", func() (string, func()) {
			p := g.IAM.AccountPolicy(gsaEmail)
			p.Bindings = nil
			setAccountPolicy(t, g, p)
			return sim.URL, func() { gcpMustRun(t, g, inst, "identity") }
		}},
	}
	for _, f := range failing {
		t.Run(f.check, func(t *testing.T) {
			endpoint, restore := f.breakIt()
			code, ok, reason, errOut := verifyRun(endpoint)
			restore()
			if code != exitcode.CheckFailed {
				t.Errorf("exit %d, want %d:\n%s", code, exitcode.CheckFailed, errOut)
			}
			if ok[f.check] || reason[f.check] != f.reason {
				t.Errorf("%s: ok=%v reason %q, want %q:\n%s", f.check, ok[f.check], reason[f.check], f.reason, errOut)
			}
		})
	}
}

// nudgePodMonitoring changes the PodMonitoring so that the operator judges
// it again, and waits until its condition's status is want.
func nudgePodMonitoring(t *testing.T, inst instance, want string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pms := inst.tb.cp.Dynamic.Resource(gmpGVR).Namespace(inst.namespace)
	u, err := pms.Get(ctx, "gemma-pod-monitoring", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ann := u.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann["nudge"] += "x"
	u.SetAnnotations(ann)
	if _, err := pms.Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for ctx.Err() == nil {
		o, err := pms.Get(ctx, "gemma-pod-monitoring", metav1.GetOptions{})
		if err == nil {
			conds, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
			if len(conds) == 1 && conds[0].(map[string]any)["status"] == want {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the operator did not judge the PodMonitoring %s", want)
}

func scaleAdapter(t *testing.T, tb *testbed, n int32) {
	ctx := context.Background()
	cp := tb.cp
	s, err := cp.Client.AppsV1().Deployments("custom-metrics").GetScale(ctx, "custom-metrics-stackdriver-adapter", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.Replicas = n
	if _, err := cp.Client.AppsV1().Deployments("custom-metrics").UpdateScale(ctx, "custom-metrics-stackdriver-adapter", s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func setAccountPolicy(t *testing.T, g *gcpfake.GCP, p *iampb.Policy) {
	c, err := gcp.Dial(context.Background(), gcp.Options{}, gcp.Endpoints{IAM: g.IAMEndpoint, ResourceManager: g.ResourceManagerEndpoint, Container: g.ContainerEndpoint, ServiceUsage: g.ServiceUsageEndpoint, Monitoring: g.MonitoringEndpoint}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := gcp.AccountPolicy(c.IAM, "my-proj", gsaEmail).Set(context.Background(), p); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyLoadTimeline: the walkthrough's test on the real HPA controller.
// The metric the fake adapter serves is the simulator's requests in flight
// shared among the pods, so load at 10/s with 1 s answers keeps about 10
// running: 1 -> 3 replicas, and back to 1 when the load stops.
func TestVerifyLoadTimeline(t *testing.T) {
	inst := newInstance(t, "timeline", "timeline-ns")
	metrics := inst.tb.metrics
	g := startGCP(t)
	sim := vllmsim.New(vllmsim.Config{Model: "google/gemma-3-1b-it", TokenLatency: 20 * time.Millisecond, OutputTokens: 50, MaxNumSeqs: 256})
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	metrics.SetFunc(runningMetric, func(pods int) string {
		inflight := sim.Received.Load() - sim.Completed.Load() - sim.Failed.Load()
		return fmt.Sprintf("%dm", inflight*1000/int64(max(pods, 1)))
	})
	defer metrics.Set(runningMetric, "0")
	// The new pods answer their first-answer probes (through the pod proxy).
	servePods(t, inst)
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	// A short scale-down window, so the test need not wait 30s; not none:
	// verify reads the new pods' stages once they are Ready, and with no
	// window a loaded machine let the HPA remove them first (stages
	// without pods, rescales 3 1 2 1, with 4 emulators beside).
	env := map[string]string{"VLLM_HPA_HPA_SCALE_DOWN_STABILIZATION": "5s"}
	run := func(args ...string) (int, string, string) {
		for k, v := range g.Env() {
			env[k] = v
		}
		return kubeRunEnv(t, inst, env, args...)
	}
	if code, out, errOut := run("up"); code != 0 {
		t.Fatalf("up: %d\n%s\n%s", code, out, errOut)
	}
	report := filepath.Join(t.TempDir(), "timeline.json")
	code, out, errOut := run("verify", "-o", "json", "--endpoint", srv.URL, "--load", "--rate", "10", "--expect-replicas", "3", "--scale-down", "--wait-timeout", "90s", "--report", report)
	if code != 0 {
		t.Fatalf("verify --load: exit %d\n%s\n%s", code, out, errOut)
	}
	var doc verifyJSON
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatal(err)
	}
	tl := doc.Timeline
	if tl == nil || tl.FirstScaleUp == nil || tl.ScaledUpReady == nil || tl.FirstScaleDown == nil {
		t.Fatalf("timeline lacks the scale-up, its readiness or the scale-down: %+v", tl)
	}
	var sizes []int32
	for _, r := range tl.Rescales {
		sizes = append(sizes, r.NewSize)
		if !strings.Contains(r.Message, "above target") && !strings.Contains(r.Message, "below target") && !strings.Contains(r.Message, "All metrics below target") {
			t.Errorf("rescale reason: %q", r.Message)
		}
	}
	// Up (in one or more steps as the load ramps up) and back to 1.
	peak := int32(0)
	for _, s := range sizes {
		peak = max(peak, s)
	}
	// An open-loop burst on a busy machine can briefly hold 13 in flight
	// (4 replicas); more than the HPA's maximum never.
	if len(sizes) < 2 || sizes[0] <= 1 || peak < 3 || peak > 5 || sizes[len(sizes)-1] != 1 {
		t.Errorf("rescales %v, want a scale-up to at least 3 and back to 1", sizes)
	}
	if doc.Load == nil || doc.Load.Sent == 0 || doc.Load.Succeeded != doc.Load.Sent {
		t.Errorf("load summary: %+v", doc.Load)
	}
	// The scale-up stage by stage, up to the new pods' first answers.
	var stageNames []string
	if doc.Stages != nil {
		for _, st := range doc.Stages.Stages {
			stageNames = append(stageNames, st.Name)
		}
	}
	if !slices.Contains(stageNames, "first answer") || !slices.Contains(stageNames, "hpa decision") || doc.Stages.Biggest == nil {
		t.Errorf("stages %v; want the decision through the first answer, and the biggest named", stageNames)
	}
	if b, err := os.ReadFile(report); err != nil || !strings.Contains(string(b), `"firstScaleUpSeconds"`) || !strings.Contains(string(b), `"firstAnswerSeconds"`) {
		t.Errorf("report file: %v %s", err, b)
	}
	if !strings.Contains(errOut, "load start -> first scale-up") || !strings.Contains(errOut, "ready   ") {
		t.Errorf("no timeline chart on stderr:\n%s", errOut)
	}
	t.Logf("load start -> first scale-up %s, -> scaled-up pods Ready %s, -> first scale-down %s; rescales %v",
		tl.FirstScaleUp, tl.ScaledUpReady, tl.FirstScaleDown, sizes)

	// Ctrl+C while the load runs: exit 130, never a pass, and the load's
	// summary still in the document.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Cancelled once the load is under way (10 requests received).
	received := sim.Received.Load()
	go func() {
		for sim.Received.Load() < received+10 && ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
	}()
	code, out, errOut = kubeRunCtx(t, ctx, inst, env, "verify", "-o", "json", "--endpoint", srv.URL, "--load", "--rate", "10", "--expect-replicas", "3", "--wait-timeout", "90s")
	doc = verifyJSON{}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("interrupted verify --load: %v\n%s", err, out)
	}
	if code != exitcode.Interrupted || doc.OK || doc.ExitCode != code || doc.Load == nil || doc.Load.EndedBy != "interrupted" {
		t.Errorf("interrupted verify --load: exit %d, document ok=%v exitCode=%d load=%+v\n%s", code, doc.OK, doc.ExitCode, doc.Load, errOut)
	}
}
