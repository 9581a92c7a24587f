package behavior_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vllm-hpa/vllm-hpa/internal/behavior"
	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/stages"
	"github.com/vllm-hpa/vllm-hpa/internal/units"
)

func secs(s float64) units.Seconds { return units.Seconds(time.Duration(s * float64(time.Second))) }

// report is a scale-up decided at decision whose slowest pod's last stage
// (name) ended at end.
func report(decision, end float64, name string) *stages.Report {
	d := secs(decision)
	return &stages.Report{Decision: &d, Stages: []stages.Stage{{Name: "hpa decision", At: d}, {Name: name, At: secs(end), Seconds: secs(end - decision)}}}
}

func TestRecommend(t *testing.T) {
	defaults := config.Default().HPA
	long := defaults
	long.ScaleDownStabilization = 10 * time.Minute
	slow := defaults
	slow.ScaleUpStabilization, slow.ScaleUpPercent = time.Minute, 50
	for _, tc := range []struct {
		name    string
		report  *stages.Report
		hpa     config.HPA
		down    time.Duration
		changes map[string]string
		reason  string
	}{
		// GKE's published cold start on the adapter route: 5.4 minutes
		// from the decision to the first answer.
		{name: "gke cold start", report: report(85, 85+324, "first answer"), hpa: defaults, down: 5*time.Minute + 30*time.Second,
			changes: map[string]string{"hpa.scale-down-stabilization": "5m30s"}, reason: "a stabilization window of 5m30s (was 30s)"},
		{name: "window already longer", report: report(85, 400, "first answer"), hpa: long, down: 10 * time.Minute,
			changes: map[string]string{}, reason: "already covers the cold start"},
		{name: "exactly a sync period", report: report(10, 25, "first answer"), hpa: defaults, down: 30 * time.Second, changes: map[string]string{}, reason: "15s from the HPA's decision"},
		{name: "slow scale-up undone", report: report(10, 130, "first answer"), hpa: slow, down: 2 * time.Minute,
			changes: map[string]string{"hpa.scale-up-stabilization": "0s", "hpa.scale-up-percent": "100", "hpa.scale-down-stabilization": "2m0s"}, reason: "no stabilization and up to 100% more pods"},
		{name: "capped at the HPA's hour", report: report(0, 7200, "first answer"), hpa: defaults, down: time.Hour,
			changes: map[string]string{"hpa.scale-down-stabilization": "1h0m0s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := behavior.Recommend(tc.report, tc.hpa)
			if err != nil {
				t.Fatal(err)
			}
			if time.Duration(r.ScaleDownStabilization) != tc.down || r.ScaleUpStabilization != 0 || r.ScaleUpPercent < 100 {
				t.Errorf("down %s, up stabilization %s, up %d%%; want down %s, 0s, >= 100%%", r.ScaleDownStabilization, r.ScaleUpStabilization, r.ScaleUpPercent, tc.down)
			}
			if fmt.Sprint(r.Changes) != fmt.Sprint(tc.changes) {
				t.Errorf("changes %v, want %v", r.Changes, tc.changes)
			}
			if !strings.Contains(strings.Join(r.Reasoning, "\n"), tc.reason) {
				t.Errorf("reasoning %q lacks %q", r.Reasoning, tc.reason)
			}
			h := tc.hpa
			r.Apply(&h)
			if h.ScaleDownStabilization != tc.down || h.ScaleUpStabilization != 0 {
				t.Errorf("applied: %+v", h)
			}
		})
	}
	// The slowest pod never answered (verify gave up waiting): its cold
	// start is only bounded below, and a window sized on it too short.
	for name, r := range map[string]*stages.Report{"nil": nil, "no decision": {Stages: []stages.Stage{{Name: "first answer"}}}, "no stages": report(10, 20, "x"),
		"never answered": report(10, 200, "ready")} {
		if name == "no stages" {
			r.Stages = nil
		}
		if _, err := behavior.Recommend(r, defaults); !errors.Is(err, behavior.ErrNoScaleUp) {
			t.Errorf("%s: %v, want ErrNoScaleUp", name, err)
		}
	}
}
