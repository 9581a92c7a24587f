package output

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

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
	// A running activity's live line: the spinner on a terminal, a
	// heartbeat elsewhere; then Ctrl+C.
	r.StepStarted("load")
	r.Status("sent 10, ok 10, failed 0, 10.0/s, in flight 3; metric 2.5, replicas 1 ready of 1")
	advance(31 * time.Second)
	r.Tick()
	r.Status("sent 320, ok 318, failed 2, 10.0/s, in flight 9; metric 7.9, replicas 1 ready of 2")
	advance(31 * time.Second)
	r.Tick()
	r.Status("")
	r.StepDone("load", fmt.Errorf("load: %w", context.Canceled))
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
			streams.Width = 72      // whose live line is cut to its width
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
			if tc.tty {
				// No live line is wider than the terminal.
				for _, l := range strings.Split(got, "\r") {
					l = strings.TrimPrefix(strings.SplitN(l, "\n", 2)[0], "\x1b[K")
					if n := utf8.RuneCountInString(stripANSI(l)); n >= streams.Width {
						t.Errorf("a live line of %d columns on a %d-column terminal: %q", n, streams.Width, l)
					}
				}
			} else if !strings.Contains(got, "  … 31s: sent 10, ok 10") {
				t.Errorf("no heartbeat of the live status on a non-terminal:\n%s", got)
			}
			if len(steps) != 3 || steps[0].Status != "ok" || steps[1].Status != "failed" || steps[2].Status != "interrupted" || len(steps[0].Actions) != 2 {
				t.Errorf("records: %+v", steps)
			}
		})
	}
}

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*[A-Za-z]")

func stripANSI(s string) string { return ansi.ReplaceAllString(s, "") }

func TestTruncate(t *testing.T) {
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"longer than ten", 10, "longer th…"},
		{"…ünïcödé wörds", 5, "…ünï…"},
		{"anything", 0, ""},
	} {
		if got := truncate(c.in, c.n); got != c.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}
