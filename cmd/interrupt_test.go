package cmd

import (
	"bufio"
	"maps"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
)

// TestInterruptedUpResumes sends SIGINT to a real vllm-hpa process while
// `up` runs against the test control plane: it stops between API calls,
// exits 130 and says what was done and what is left; the next `up`
// completes.
func TestInterruptedUpResumes(t *testing.T) {
	g := startGCP(t)
	inst := newInstance(t, "sigint", "sigint-ns")
	cp := inst.tb.cp
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	env := append(os.Environ(),
		"HF_TOKEN=hf_testTOKEN", "VLLM_HPA_KUBE_KUBECONFIG="+cp.Kubeconfig, "VLLM_HPA_PROJECT=my-proj",
		"VLLM_HPA_INSTANCE="+inst.name, "VLLM_HPA_WORKLOAD_NAMESPACE="+inst.namespace)
	env = append(env, g.EnvList()...)

	c := cliCommand(env, "up", "-o", "json")
	stderr, _ := c.StderrPipe()
	var stdout strings.Builder
	c.Stdout = &stdout
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	sc := bufio.NewScanner(stderr)
	sent := false
	for sc.Scan() {
		line := sc.Text()
		log.WriteString(line + "\n")
		// Interrupt as the adapter step starts applying.
		if !sent && strings.Contains(line, "Namespace custom-metrics created") {
			c.Process.Signal(syscall.SIGINT)
			sent = true
		}
	}
	err := c.Wait()
	code := c.ProcessState.ExitCode()
	if !sent || code != exitcode.Interrupted {
		t.Fatalf("exit %d (%v), want %d after SIGINT; stderr:\n%s", code, err, exitcode.Interrupted, log.String())
	}
	// Its document says what was done, what was running (interrupted,
	// not failed) and what is left.
	var doc runJSON
	strict(t, stdout.String(), &doc)
	status := map[string]string{}
	for _, s := range doc.Steps {
		status[s.Step] = s.Status
	}
	want := map[string]string{"preconditions": "ok", "deploy": "ok", "monitor": "ok", "adapter": "interrupted", "identity": "not-run", "hpa": "not-run"}
	if doc.OK || doc.ExitCode != exitcode.Interrupted || !maps.Equal(status, want) {
		t.Errorf("document of an interrupted up: ok=%v exitCode=%d steps %v, want %v", doc.OK, doc.ExitCode, status, want)
	}

	// The next up completes, and skips what was done.
	c = cliCommand(env, "up", "-o", "json")
	out, err := c.Output()
	if err != nil {
		t.Fatalf("second up: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `"Deployment sigint-ns/vllm-gemma-deployment unchanged"`) || !strings.Contains(string(out), `"ok": true`) {
		t.Errorf("second up did not resume:\n%s", out)
	}
}
