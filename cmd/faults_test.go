package cmd

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

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
