package output

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vllm-hpa/vllm-hpa/internal/iostreams"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

var update = flag.Bool("update", false, "rewrite golden files")

// script drives a recorder through a typical run with a fake clock.
func script(r *Progress, advance func(time.Duration)) {
	r.StepStarted("deploy")
	r.Action("deploy", "Secret default/hf-secret created")
	r.Action("deploy", "Deployment default/vllm-gemma-deployment created")
	advance(time.Second)
	r.Waiting("deploy", "Deployment default/vllm-gemma-deployment: Progressing: 0 of 1 updated replicas available")
	advance(time.Second)
	r.Tick()
	advance(31 * time.Second)
	r.Tick()
	r.Waiting("deploy", "Deployment default/vllm-gemma-deployment: Progressing: 0 of 1 updated replicas available")
	advance(time.Second)
	r.Waiting("deploy", "Deployment default/vllm-gemma-deployment: Progressing: 0 of 1 updated replicas available; 1 pod Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu")
	advance(2 * time.Second)
	r.Tick()
	r.Result(step.Result{Step: "deploy", Check: "deployment available", OK: true, Message: "1/1 replicas available"})
	r.StepDone("deploy", nil)
	r.StepStarted("hpa")
	advance(500 * time.Millisecond)
	r.Result(step.Result{Step: "hpa", Check: "hpa scaling active", Reason: "FailedGetPodsMetric", Message: "unable to get metric"})
	r.StepDone("hpa", errors.New("check failed"))
	r.Close()
}

func TestProgressGolden(t *testing.T) {
	for _, tc := range []struct {
		name    string
		tty     bool
		noColor bool
	}{
		{"terminal", true, false},
		{"terminal-no-color", true, true},
		{"plain", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			streams, _, errOut := iostreams.Test()
			streams.ErrTTY = tc.tty // a fake terminal
			if tc.noColor {
				streams.DisableColor()
			}
			now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
			r := newProgress(streams, func() time.Time { return now })
			script(r, func(d time.Duration) { now = now.Add(d) })
			got := errOut.String()
			path := filepath.Join("testdata", "progress-"+tc.name+".golden")
			if *update {
				os.WriteFile(path, []byte(got), 0o644)
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (go test ./internal/output -update)", err)
			}
			if got != string(want) {
				t.Errorf("progress differs from %s:\n got: %q\nwant: %q", path, got, want)
			}
			if !tc.tty && strings.ContainsAny(got, "\x1b\r") {
				t.Errorf("control characters on a non-terminal: %q", got)
			}
			if tc.noColor && strings.Contains(got, "\x1b[3") {
				t.Errorf("colour with NO_COLOR: %q", got)
			}
			if !tc.tty && !strings.Contains(got, "still waiting (32s)") {
				t.Errorf("no heartbeat after 30s of waiting on a non-terminal:\n%s", got)
			}
			// Recorded for --output json whatever the terminal.
			steps := r.Steps()
			if len(steps) != 2 || steps[0].Status != "ok" || steps[1].Status != "failed" || len(steps[0].Actions) != 2 {
				t.Errorf("records: %+v", steps)
			}
		})
	}
}
