package cmd

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vllm-hpa/vllm-hpa/internal/gcpfake"
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
	inst := newInstance(t, "faults", "faults-ns")
	fp, err := inst.tb.cp.StartFaultProxy(0.10)
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
	env := map[string]string{
		"VLLM_HPA_KUBE_KUBECONFIG": fp.Kubeconfig,
	}
	maps.Copy(env, g.Env())
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
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

// TestKilledUpRecovers: vllm-hpa is SIGKILLed at random points during `up`;
// each time the next `up` completes, and cleanup leaves nothing behind.
func TestKilledUpRecovers(t *testing.T) {
	g := startGCP(t)
	inst := newInstance(t, "killed", "killed-ns")
	cp := inst.tb.cp
	env := append(os.Environ(),
		"HF_TOKEN=hf_testTOKEN", "VLLM_HPA_KUBE_KUBECONFIG="+cp.Kubeconfig, "VLLM_HPA_PROJECT=my-proj",
		"VLLM_HPA_INSTANCE="+inst.name, "VLLM_HPA_WORKLOAD_NAMESPACE="+inst.namespace)
	env = append(env, g.EnvList()...)
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	runs := faultRuns()
	var points []string
	for i := 0; i < runs; i++ {
		// Kill somewhere in the first 8 s of up (which takes about 8 s).
		delay := time.Duration(rand.IntN(8000)) * time.Millisecond
		c := cliCommand(env, "up")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		timer := time.AfterFunc(delay, func() { c.Process.Kill() })
		c.Wait()
		timer.Stop()
		points = append(points, delay.Round(10*time.Millisecond).String())
		c = cliCommand(env, "up")
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("run %d: up after a kill at %s failed: %v\n%s", i+1, delay, err, tail(string(out), 30))
		}
		c = cliCommand(env, "cleanup")
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("run %d: cleanup failed: %v\n%s", i+1, err, tail(string(out), 30))
		}
		if left := ownedObjects(t, inst); len(left) != 0 {
			t.Fatalf("run %d: cleanup left %v", i+1, keys(left))
		}
	}
	t.Logf("%d kills (at %s into up): each next up completed and cleanup left nothing", runs, strings.Join(points, ", "))
}

// cliEnv makes the test binary run as vllm-hpa (see TestMain): the tests
// that kill or interrupt vllm-hpa run it as a process without building it.
const cliEnv = "VLLM_HPA_TEST_RUN_AS_CLI"

// cliCommand is vllm-hpa as a process, with env.
func cliCommand(env []string, args ...string) *exec.Cmd {
	c := exec.Command(os.Args[0], args...)
	c.Env = append(env, cliEnv+"=1")
	return c
}

// TestTokenNeverShown: the Hugging Face token, planted in the environment
// and in a token file, appears in no output of real runs at any verbosity,
// in text or JSON.
func TestTokenNeverShown(t *testing.T) {
	const token = "hf_PLANTEDsecretTOKEN42"
	g := startGCP(t)
	inst := newInstance(t, "token", "token-ns")
	cp := inst.tb.cp
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	file := writeFile(t, t.TempDir(), "token", token)
	for _, env := range []map[string]string{{"HF_TOKEN": token}, {"HF_TOKEN": "", "VLLM_HPA_HF_TOKEN_FILE": file}} {
		for k, v := range g.Env() {
			env[k] = v
		}
		for _, args := range [][]string{
			{"deploy", "-vv"}, {"deploy", "-vv", "-o", "json"}, {"up", "-v", "-o", "yaml"}, {"verify", "-vv", "-o", "json"},
			{"status", "-vv"}, {"config", "view", "-vv"}, {"render", "-vv", "-o", "json"}, {"up", "--dry-run", "-vv", "-o", "json"},
			{"cleanup", "-vv"},
		} {
			_, out, errOut := kubeRunEnv(t, inst, env, args...)
			if strings.Contains(out+errOut, token) {
				t.Errorf("%v: the token appears in the output", args)
			}
			// Nor the kubeconfig's credential (a bearer token, as a
			// GKE cluster's gcloud plugin gives), even at -vv.
			if strings.Contains(out+errOut, cp.Config.BearerToken) {
				t.Errorf("%v: the kubeconfig's bearer token appears in the output", args)
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
