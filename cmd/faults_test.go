package cmd

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vllm-hpa/vllm-hpa/internal/gcpfake"
	"github.com/vllm-hpa/vllm-hpa/internal/kubetest"
)

// faultRuns is how many up+cleanup rounds TestFaults makes: 20 under
// `make test-faults` (VLLM_HPA_FAULT_RUNS), 2 in the ordinary suite.
func faultRuns() int {
	if n, err := strconv.Atoi(os.Getenv("VLLM_HPA_FAULT_RUNS")); err == nil && n > 0 {
		return n
	}
	return 2
}

// TestFaults: with 10% of Kubernetes API requests answered 500, 429 or a
// reset connection and watches closed at random, and 10% of Google API calls
// failing UNAVAILABLE or ABORTED while 5 other writers change the project
// policy, `up` and `cleanup` still complete, every time, and no foreign IAM
// member is lost.
func TestFaults(t *testing.T) {
	kubetest.Skip(t, cp, cpErr)
	fp, err := cp.StartFaultProxy(0.10)
	if err != nil {
		t.Fatal(err)
	}
	defer fp.Close()
	g := startGCP(t)
	gcpFaults := func(method string) error {
		if rand.Float64() >= 0.10 {
			return nil
		}
		if rand.IntN(2) == 0 {
			return status.Error(codes.Unavailable, "injected: service unavailable")
		}
		return status.Error(codes.Aborted, "injected: aborted")
	}
	g.IAM.Faults, g.Projects.Faults = gcpFaults, gcpFaults
	inst := instance{"faults", "faults-ns"}
	env := map[string]string{
		"VLLM_HPA_KUBE_KUBECONFIG":            fp.Kubeconfig,
		"VLLM_HPA_ENDPOINTS_IAM":              g.IAMEndpoint,
		"VLLM_HPA_ENDPOINTS_RESOURCE_MANAGER": g.ResourceManagerEndpoint,
		"VLLM_HPA_ENDPOINTS_CONTAINER":        g.ContainerEndpoint,
	}
	t.Cleanup(func() { kubeRun(t, inst, cleanupKube...) })
	runs, ok := faultRuns(), 0
	var foreignLost int
	for i := 0; i < runs; i++ {
		stats := runWriters(t, g, 5, func() {
			for _, args := range [][]string{{"up"}, {"cleanup"}} {
				code, out, errOut := kubeRunEnv(t, inst, env, args...)
				if code != 0 {
					t.Errorf("run %d: %v exit %d\n%s\n%s", i+1, args, code, out, tail(errOut, 40))
					return
				}
			}
			ok++
		})
		final := g.Projects.Policy("my-proj")
		for w := 0; w < 5; w++ {
			if !gcpfake.HasMember(final, "roles/viewer", fmt.Sprintf("user:writer%d@example.com", w)) {
				foreignLost++
			}
		}
		if gcpfake.HasMember(final, "roles/monitoring.viewer", gsaMember) {
			t.Errorf("run %d: our member left after cleanup", i+1)
		}
		_ = stats
	}
	if left := ownedObjects(t, inst); len(left) != 0 {
		t.Errorf("objects left: %v", keys(left))
	}
	if ok != runs || foreignLost != 0 {
		t.Errorf("%d of %d rounds completed; %d foreign members lost", ok, runs, foreignLost)
	}
	t.Logf("%d/%d up+cleanup rounds completed through the faults; Kubernetes requests %d (500: %d, 429: %d, resets: %d, watches closed: %d); foreign IAM members lost: %d",
		ok, runs, fp.Requests.Load(), fp.Errors500.Load(), fp.Errors429.Load(), fp.Resets.Load(), fp.WatchesClosed.Load(), foreignLost)
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestBadInputChangesNothing: every bad-input case, given to `up` against a
// counting proxy in front of kube-apiserver and the GCP fakes, exits 2
// naming the field, and not one request reaches either.
func TestBadInputChangesNothing(t *testing.T) {
	kubetest.Skip(t, cp, cpErr)
	counter, err := cp.StartFaultProxy(0) // breaks nothing, counts everything
	if err != nil {
		t.Fatal(err)
	}
	defer counter.Close()
	g := startGCP(t)
	n := 0
	for _, c := range badInputCases() {
		if c.args[0] != "render" {
			continue
		}
		args := append([]string{"up"}, c.args[1:]...)
		env := map[string]string{
			"HF_TOKEN":                            "hf_testTOKEN",
			"VLLM_HPA_KUBE_KUBECONFIG":            counter.Kubeconfig,
			"VLLM_HPA_ENDPOINTS_IAM":              g.IAMEndpoint,
			"VLLM_HPA_ENDPOINTS_RESOURCE_MANAGER": g.ResourceManagerEndpoint,
			"VLLM_HPA_ENDPOINTS_CONTAINER":        g.ContainerEndpoint,
		}
		for k, v := range c.env {
			env[k] = v
		}
		dir := t.TempDir()
		if c.file != "" {
			writeFile(t, dir, "vllm-hpa.yaml", c.file)
		}
		code, _, errOut := run(t, dir, env, args...)
		if c.name == "render unknown step" {
			continue // a render-only case
		}
		n++
		if code != 2 || !strings.Contains(errOut, c.field) {
			t.Errorf("%s: up exit %d, want 2 naming %q:\n%s", c.name, code, c.field, errOut)
		}
	}
	if counter.Requests.Load() != 0 || g.Mutations() != 0 || g.IAM.Counters.Reads.Load()+g.Projects.Counters.Reads.Load() != 0 {
		t.Errorf("bad input reached the servers: %d Kubernetes requests, %d GCP mutations", counter.Requests.Load(), g.Mutations())
	}
	if n < 40 {
		t.Errorf("only %d bad-input cases against up", n)
	}
	t.Logf("%d bad-input cases: all exit 2 naming the field; Kubernetes requests %d, GCP calls %d", n, counter.Requests.Load(), g.Mutations())
}

// TestKilledUpRecovers: vllm-hpa is SIGKILLed at random points during `up`;
// each time the next `up` completes, and cleanup leaves nothing behind.
func TestKilledUpRecovers(t *testing.T) {
	kubetest.Skip(t, cp, cpErr)
	g := startGCP(t)
	bin := buildCLI(t)
	inst := instance{"killed", "killed-ns"}
	env := append(os.Environ(),
		"HF_TOKEN=hf_testTOKEN", "VLLM_HPA_KUBE_KUBECONFIG="+cp.Kubeconfig, "VLLM_HPA_PROJECT=my-proj",
		"VLLM_HPA_INSTANCE="+inst.name, "VLLM_HPA_WORKLOAD_NAMESPACE="+inst.namespace,
		"VLLM_HPA_ENDPOINTS_IAM="+g.IAMEndpoint, "VLLM_HPA_ENDPOINTS_RESOURCE_MANAGER="+g.ResourceManagerEndpoint, "VLLM_HPA_ENDPOINTS_CONTAINER="+g.ContainerEndpoint)
	t.Cleanup(func() { kubeRun(t, inst, cleanupKube...) })
	runs := faultRuns()
	var points []string
	for i := 0; i < runs; i++ {
		// Kill somewhere in the first 8 s of up (which takes about 8 s).
		delay := time.Duration(rand.IntN(8000)) * time.Millisecond
		c := exec.Command(bin, "up")
		c.Env = env
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		timer := time.AfterFunc(delay, func() { c.Process.Kill() })
		c.Wait()
		timer.Stop()
		points = append(points, delay.Round(10*time.Millisecond).String())
		c = exec.Command(bin, "up")
		c.Env = env
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("run %d: up after a kill at %s failed: %v\n%s", i+1, delay, err, tail(string(out), 30))
		}
		c = exec.Command(bin, "cleanup")
		c.Env = env
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("run %d: cleanup failed: %v\n%s", i+1, err, tail(string(out), 30))
		}
		if left := ownedObjects(t, inst); len(left) != 0 {
			t.Fatalf("run %d: cleanup left %v", i+1, keys(left))
		}
	}
	t.Logf("%d kills (at %s into up): each next up completed and cleanup left nothing", runs, strings.Join(points, ", "))
}

func buildCLI(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "vllm-hpa")
	if out, err := exec.Command("go", "build", "-o", bin, "..").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// TestTokenNeverShown: the Hugging Face token, planted in the environment
// and in a token file, appears in no output of real runs at any verbosity,
// in text or JSON.
func TestTokenNeverShown(t *testing.T) {
	kubetest.Skip(t, cp, cpErr)
	const token = "hf_PLANTEDsecretTOKEN42"
	g := startGCP(t)
	inst := instance{"token", "token-ns"}
	t.Cleanup(func() { kubeRun(t, inst, cleanupKube...) })
	file := writeFile(t, t.TempDir(), "token", token)
	for _, env := range []map[string]string{{"HF_TOKEN": token}, {"HF_TOKEN": "", "VLLM_HPA_HF_TOKEN_FILE": file}} {
		env["VLLM_HPA_ENDPOINTS_IAM"], env["VLLM_HPA_ENDPOINTS_RESOURCE_MANAGER"], env["VLLM_HPA_ENDPOINTS_CONTAINER"] = g.IAMEndpoint, g.ResourceManagerEndpoint, g.ContainerEndpoint
		for _, args := range [][]string{
			{"deploy", "-vv"}, {"deploy", "-vv", "-o", "json"}, {"up", "-v", "-o", "yaml"}, {"verify", "-vv", "-o", "json"},
			{"status", "-vv"}, {"config", "view", "-vv"}, {"render", "-vv", "-o", "json"}, {"up", "--dry-run", "-vv", "-o", "json"},
			{"cleanup", "-vv"},
		} {
			_, out, errOut := kubeRunEnv(t, inst, env, args...)
			if strings.Contains(out+errOut, token) {
				t.Errorf("%v: the token appears in the output", args)
			}
		}
	}
	// It did reach the Secret, where it belongs.
	kubeRunEnv(t, inst, map[string]string{"HF_TOKEN": token}, "deploy")
	s, err := cp.Client.CoreV1().Secrets(inst.namespace).Get(context.Background(), "hf-secret", metav1.GetOptions{})
	if err != nil || string(s.Data["hf_token"]) != token {
		t.Errorf("the Secret does not hold the token: %v", err)
	}
}
