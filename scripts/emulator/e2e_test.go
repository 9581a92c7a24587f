package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/iam/apiv1/iampb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/vllm-hpa/vllm-hpa/cmd"
	"github.com/vllm-hpa/vllm-hpa/internal/cmdutil"
	"github.com/vllm-hpa/vllm-hpa/internal/environ"
	"github.com/vllm-hpa/vllm-hpa/internal/gmp"
	"github.com/vllm-hpa/vllm-hpa/internal/iostreams"
	"github.com/vllm-hpa/vllm-hpa/internal/localcluster"
)

// The walkthrough end to end on the emulator: the real kube-apiserver,
// kube-controller-manager (HPA controller), the custom-metrics-apiserver
// adapter stand-in, port-forward through the API server, and the CLI as a
// user runs it. Intervals are shortened (2 s scrape and HPA sync, 5 s
// scale-down window) so the test takes about a minute.

type runResult struct {
	code        int
	out, errOut string
}

// cliEnvs are the environments vllm-hpa runs with in each top-level test
// (its emulator's settings): the tests run in parallel, each on an
// emulator of its own.
var cliEnvs sync.Map

// topLevel is the name of t's top-level test.
func topLevel(t *testing.T) string {
	name, _, _ := strings.Cut(t.Name(), "/")
	return name
}

func cliEnv(t *testing.T) map[string]string {
	env, _ := cliEnvs.Load(topLevel(t))
	m, _ := env.(map[string]string)
	return m
}

func vllmHPA(t *testing.T, args ...string) runResult {
	t.Helper()
	streams, out, errOut := iostreams.Test()
	// Each run's duration, in -v output: where a test's time goes.
	began := time.Now()
	code := cmd.Run(context.Background(), cmdutil.New(streams, environ.New(cliEnv(t), t.TempDir())), args)
	t.Logf("vllm-hpa %s: exit %d in %s", strings.Join(args, " "), code, time.Since(began).Round(10*time.Millisecond))
	return runResult{code, out.String(), errOut.String()}
}

func must(t *testing.T, args ...string) runResult {
	t.Helper()
	r := vllmHPA(t, args...)
	if r.code != 0 {
		t.Fatalf("vllm-hpa %v: exit %d\n%s\n%s", args, r.code, r.out, r.errOut)
	}
	return r
}

type verifyDoc struct {
	Steps []struct {
		Step   string `json:"step"`
		Checks []struct {
			Check  string `json:"check"`
			OK     bool   `json:"ok"`
			Reason string `json:"reason"`
		} `json:"checks"`
	} `json:"steps"`
	Timeline *struct {
		Rescales []struct {
			NewSize int32 `json:"newSize"`
		} `json:"rescales"`
		FirstScaleUp  *float64 `json:"firstScaleUpSeconds"`
		ScaledUpReady *float64 `json:"scaledUpReadySeconds"`
	} `json:"timeline"`
	Stages *struct {
		Stages []struct {
			Stage   string  `json:"stage"`
			Seconds float64 `json:"seconds"`
		} `json:"stages"`
		Biggest *struct {
			Stage string `json:"stage"`
		} `json:"biggest"`
	} `json:"stages"`
	ScaleDown *struct {
		Sent      int            `json:"sent"`
		Succeeded int            `json:"succeeded"`
		Failed    map[string]int `json:"failed"`
	} `json:"scaleDown"`
}

// failing returns "step/check: reason" for each failed check.
func failing(t *testing.T, out string) []string {
	var doc verifyDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var f []string
	for _, s := range doc.Steps {
		for _, c := range s.Checks {
			if !c.OK {
				f = append(f, s.Step+"/"+c.Check+": "+c.Reason)
			}
		}
	}
	return f
}

// k8sBin is the cached Kubernetes binaries' directory; without it the
// test is skipped (or fails, when make test requires it).
func k8sBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv(localcluster.BinDirEnv)
	if bin == "" {
		if os.Getenv(localcluster.RequireEnv) != "" {
			t.Fatalf("%s is not set", localcluster.BinDirEnv)
		}
		t.Skipf("%s is not set: run make test", localcluster.BinDirEnv)
	}
	return bin
}

// scaledUpAndDown reads verify --load's document: the rescales must go up
// to 3 and, after the peak, back to 1. The tail of load kept on until the
// removed pods stop may move the HPA again after that (verify proved the
// scale-down when it reached 1): a rescale after the return to 1 is the
// HPA's answer to the tail, not a failed scale-down.
func scaledUpAndDown(t *testing.T, r runResult) (doc verifyDoc, sizes []int32) {
	t.Helper()
	json.Unmarshal([]byte(r.out), &doc)
	if doc.Timeline == nil || doc.Timeline.FirstScaleUp == nil {
		t.Fatalf("no scale-up in the timeline:\n%s", r.errOut)
	}
	peak, backAfterPeak := int32(0), false
	for _, rs := range doc.Timeline.Rescales {
		sizes = append(sizes, rs.NewSize)
		if rs.NewSize > peak {
			peak, backAfterPeak = rs.NewSize, false
		}
		backAfterPeak = backAfterPeak || rs.NewSize == 1
	}
	if peak != 3 || !backAfterPeak {
		t.Errorf("rescales %v, want up to 3 and back to 1", sizes)
	}
	// A tail of the load ran through the scale-down, spread over the
	// pods by the Service; the pods removed drained it (verify fails
	// otherwise, with exit 3).
	if sd := doc.ScaleDown; sd == nil || sd.Sent == 0 || sd.Succeeded != sd.Sent || len(sd.Failed) != 0 {
		t.Errorf("scale-down tail %+v, want requests sent and none failed:\n%s", sd, r.errOut)
	} else {
		t.Logf("scale-down: %d requests through the Service, none failed", sd.Sent)
	}
	return doc, sizes
}

// testOptions are the fast profile with the short intervals the tests
// use: a 2 s HPA sync, pods that start in 1 s, a new service account
// unseen by IAM for 1 s (still a wait of up's, not one of 5 s each time);
// lean, as every emulator the tests start.
func testOptions(t *testing.T) Options {
	o := DefaultOptions()
	o.Dir, o.Bin = t.TempDir(), k8sBin(t)
	o.HPASyncPeriod, o.ImagePull, o.NativeInterval = 2*time.Second, time.Second, 2*time.Second
	o.Google.NewAccountWindow = time.Second
	o.Lean = true
	return o
}

// startEmulator starts an emulator with o for the test's length.
func startEmulator(t *testing.T, o Options) *Emulator {
	t.Helper()
	e, err := Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	t.Logf("emulator started in %s", e.Started.Round(time.Millisecond))
	return e
}

// useEmulator points vllm-hpa at e: its settings, a 2 s scrape, a 5 s
// scale-down stabilization, a home and caches of the test's own, then env.
func useEmulator(t *testing.T, e *Emulator, extra map[string]string) {
	env := map[string]string{
		"HOME":                                  t.TempDir(),
		"KUBECACHEDIR":                          t.TempDir(), // not the user's ~/.kube
		"VLLM_HPA_MONITORING_INTERVAL":          "2s",
		"VLLM_HPA_HPA_SCALE_DOWN_STABILIZATION": "5s",
	}
	for _, m := range []map[string]string{e.Env, extra} {
		for k, v := range m {
			env[k] = v
		}
	}
	cliEnvs.Store(topLevel(t), env)
}

func TestWalkthroughOnEmulator(t *testing.T) {
	parallel(t)
	o := testOptions(t)
	o.NativeInterval = DefaultOptions().NativeInterval
	e := startEmulator(t, o)
	useEmulator(t, e, nil)
	ctx := context.Background()

	// The emulated cluster is Autopilot, which streams the public Docker
	// Hub image: up says so.
	if r := must(t, "up"); !strings.Contains(r.errOut, "image start") || !strings.Contains(r.errOut, "Autopilot streams vllm/vllm-openai") {
		t.Errorf("up does not say how the GPU nodes get the image:\n%s", r.errOut)
	}
	objects, mutations := owned(t, e), e.GCP.Mutations()
	if len(objects) != 18 { // the whole stack; the default namespace is not ours
		t.Errorf("%d owned objects after up, want 18: %v", len(objects), objects)
	}
	// up twice changes nothing.
	must(t, "up")
	if after := owned(t, e); fmt.Sprint(after) != fmt.Sprint(objects) {
		t.Errorf("second up changed objects:\nbefore %v\nafter  %v", objects, after)
	}
	if e.GCP.Mutations() != mutations {
		t.Errorf("second up made %d mutating GCP calls", e.GCP.Mutations()-mutations)
	}
	// status says how the GPU nodes get the image, with deploy's checks.
	var status struct {
		Steps []struct {
			Step   string `json:"step"`
			Checks []struct {
				Check   string `json:"check"`
				Message string `json:"message"`
			} `json:"checks"`
		} `json:"steps"`
	}
	if err := json.Unmarshal([]byte(must(t, "status", "-o", "json").out), &status); err != nil {
		t.Fatal(err)
	}
	imageSaid := false
	for _, st := range status.Steps {
		for _, c := range st.Checks {
			imageSaid = imageSaid || (st.Step == "deploy" && c.Check == "image start" && strings.Contains(c.Message, "Autopilot streams"))
		}
	}
	if !imageSaid {
		t.Errorf("status does not say how the GPU nodes get the image: %+v", status.Steps)
	}

	// The walkthrough's test: load that keeps about 10 requests running
	// (10/s, 1 s answers), target 4: 1 -> 3, and back to 1.
	r := must(t, "verify", "-o", "json", "--load", "--rate", "10", "--expect-replicas", "3", "--scale-down", "--wait-timeout", "2m")
	doc, sizes := scaledUpAndDown(t, r)
	// The scale-up stage by stage, from the metric to the new pod's first
	// answer.
	var names, took []string
	if doc.Stages != nil {
		for _, s := range doc.Stages.Stages {
			names = append(names, s.Stage)
			took = append(took, fmt.Sprintf("%s +%.1fs", s.Stage, s.Seconds))
		}
	}
	t.Logf("stages: %s", strings.Join(took, ", "))
	for _, want := range []string{"metric above target", "hpa decision", "pod created", "scheduled", "image pulled", "container started", "ready", "first answer"} {
		if !contains(names, want) {
			t.Errorf("stage %q missing from %v\n%s", want, names, r.errOut)
		}
	}
	if doc.Stages == nil || doc.Stages.Biggest == nil || !strings.Contains(r.errOut, "biggest stage: ") {
		t.Errorf("no biggest stage named:\n%s", r.errOut)
	}
	t.Logf("rescales %v; load start -> first scale-up %.1fs, -> pods Ready %.1fs (bound: scrape 2s + HPA sync 2s + pod start 1s)",
		sizes, *doc.Timeline.FirstScaleUp, *doc.Timeline.ScaledUpReady)

	// verify names the right check when something breaks.
	t.Run("adapter scaled to 0", func(t *testing.T) {
		scale(t, e, 0)
		r := vllmHPA(t, "verify", "-o", "json")
		scale(t, e, 1)
		must(t, "adapter")
		if r.code != 3 || !contains(failing(t, r.out), "adapter/adapter available: ScaledToZero") {
			t.Errorf("exit %d, failing %v", r.code, failing(t, r.out))
		}
	})
	t.Run("identity binding removed", func(t *testing.T) {
		email := "metrics-adapter-gsa@my-proj.iam.gserviceaccount.com"
		setAccountPolicy(t, e, email, &iampb.Policy{Etag: e.GCP.IAM.AccountPolicy(email).Etag})
		r := vllmHPA(t, "verify", "-o", "json")
		must(t, "identity")
		if r.code != 3 || !contains(failing(t, r.out), "identity/roles/iam.workloadIdentityUser binding: MemberMissing") {
			t.Errorf("exit %d, failing %v", r.code, failing(t, r.out))
		}
	})
	t.Run("podmonitoring selector matches nothing", func(t *testing.T) {
		pms := e.CP.Dynamic.Resource(gmp.Resource).Namespace("default")
		if _, err := pms.Patch(ctx, "gemma-pod-monitoring", types.MergePatchType,
			[]byte(`{"spec":{"selector":{"matchLabels":{"app":"nothing"}}}}`), metav1.PatchOptions{FieldManager: "kubectl-edit"}); err != nil {
			t.Fatal(err)
		}
		// Target status is off, as on GKE by default: the check lists the
		// pods the selector matches, and finds none.
		r := vllmHPA(t, "verify", "-o", "json")
		must(t, "monitor", "--force-conflicts")
		if r.code != 3 || !contains(failing(t, r.out), "monitor/podmonitoring configured: NoPods") {
			t.Errorf("exit %d, failing %v", r.code, failing(t, r.out))
		}
	})

	// cleanup leaves zero owned objects and no IAM member of ours.
	must(t, "cleanup")
	if left := owned(t, e); len(left) != 0 {
		t.Errorf("cleanup left %v", left)
	}
	for _, b := range e.GCP.Projects.Policy("my-proj").Bindings {
		for _, m := range b.Members {
			if strings.Contains(m, "metrics-adapter-gsa") || strings.Contains(m, "svc.id.goog") {
				t.Errorf("cleanup left IAM member %s (%s)", m, b.Role)
			}
		}
	}
	if e.GCP.IAM.Account("metrics-adapter-gsa@my-proj.iam.gserviceaccount.com") != nil {
		t.Error("cleanup left the Google service account")
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// owned lists objects with vllm-hpa's labels (not derived ones).
func owned(t *testing.T, e *Emulator) map[string]string {
	lists, _ := e.CP.Client.Discovery().ServerPreferredResources()
	out := map[string]string{}
	for _, l := range lists {
		gv, _ := schema.ParseGroupVersion(l.GroupVersion)
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") {
				continue
			}
			items, err := e.CP.Dynamic.Resource(gv.WithResource(r.Name)).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=vllm-hpa"})
			if err != nil {
				continue
			}
			for _, it := range items.Items {
				if len(it.GetOwnerReferences()) == 0 {
					out[it.GetKind()+" "+it.GetNamespace()+"/"+it.GetName()] = it.GetResourceVersion()
				}
			}
		}
	}
	return out
}

func scale(t *testing.T, e *Emulator, n int32) {
	ctx := context.Background()
	s, err := e.CP.Client.AppsV1().Deployments("custom-metrics").GetScale(ctx, "custom-metrics-stackdriver-adapter", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.Replicas = n
	if _, err := e.CP.Client.AppsV1().Deployments("custom-metrics").UpdateScale(ctx, "custom-metrics-stackdriver-adapter", s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func setAccountPolicy(t *testing.T, e *Emulator, email string, p *iampb.Policy) {
	if _, err := e.GCP.IAM.SetIamPolicy(context.Background(), &iampb.SetIamPolicyRequest{Resource: "projects/my-proj/serviceAccounts/" + email, Policy: p}); err != nil {
		t.Fatal(err)
	}
}
