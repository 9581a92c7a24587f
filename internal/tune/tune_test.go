package tune

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/vllm-hpa/vllm-hpa/internal/vllmsim"
)

// TestKneeOnTheSimulator: on a simulator whose decode step takes 40 ms
// plus 10 ms per running request, a time-per-token objective of 240 ms is
// met up to (240-40)/10 = 20 requests at once. tune finds the knee within
// 10% of that, and recommends 80% of the running gauge there. (The
// latencies are large so that a busy machine's few milliseconds of timer
// lag per token cannot move the knee by two levels.)
func TestKneeOnTheSimulator(t *testing.T) {
	sim := vllmsim.New(vllmsim.Config{Model: "m", TokenLatency: 40 * time.Millisecond, BatchLatency: 10 * time.Millisecond, OutputTokens: 6, MaxNumSeqs: 256})
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	var seen []int
	res, err := Run(context.Background(), Options{
		URL: srv.URL, Model: "m", Prompt: "hello", SLO: SLO{TPOT: 240 * time.Millisecond},
		Metric: "vllm:num_requests_running", StepDuration: 2 * time.Second, Warmup: 500 * time.Millisecond,
		MaxConcurrency: 64, Headroom: 0.8, RequestTimeout: time.Minute,
	}, func(l Level) { seen = append(seen, l.Concurrency) })
	if err != nil {
		t.Fatal(err)
	}
	const analytic = 20
	if k := res.Knee.Concurrency; k < analytic*9/10 || k > analytic*11/10 {
		t.Errorf("knee %d, want within 10%% of %d; levels %+v", k, analytic, res.Levels)
	}
	r := res.Recommendation
	if r.Metric != "vllm:num_requests_running" || r.Target < 0.7*float64(res.Knee.Concurrency) || r.Target > 0.85*float64(res.Knee.Concurrency) || !strings.Contains(r.Reasoning, "80%") {
		t.Errorf("recommendation %+v at knee %d", r, res.Knee.Concurrency)
	}
	t.Logf("levels measured in order %v; knee %d (analytic %d); target %g", seen, res.Knee.Concurrency, analytic, r.Target)
}

// TestRecommendWithoutQueue: scaling on the queue, where the server never
// queues below the knee, is called out and running is proposed instead.
func TestRecommendWithoutQueue(t *testing.T) {
	r := recommend(Options{Headroom: 0.8}, "vllm:num_requests_waiting", Level{Concurrency: 20, Running: 19.5}, 21)
	if r.Target != 0 || !strings.Contains(r.Reasoning, "--metric running") || !strings.Contains(r.Reasoning, "target 15 ") {
		t.Errorf("%+v", r)
	}
}

// TestNothingMeetsTheObjective: an objective even one request breaks is
// an error, with the level that shows why.
func TestNothingMeetsTheObjective(t *testing.T) {
	sim := vllmsim.New(vllmsim.Config{Model: "m", TokenLatency: 20 * time.Millisecond, OutputTokens: 3, MaxNumSeqs: 8})
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	res, err := Run(context.Background(), Options{URL: srv.URL, Model: "m", Prompt: "hi", SLO: SLO{TPOT: time.Millisecond},
		Metric: "vllm:num_requests_running", StepDuration: 500 * time.Millisecond, MaxConcurrency: 8, Headroom: 0.8, RequestTimeout: time.Minute}, nil)
	if err != ErrNoLevelMeetsSLO || len(res.Levels) != 1 || !strings.Contains(res.Levels[0].Why, "tpot p90") {
		t.Errorf("err %v, levels %+v", err, res.Levels)
	}
}

// A level the path to the server moved across (a port-forward whose pod
// the HPA scaled away) is measured again: its failures were the path's.
// Moves that never stop are not waited out forever.
func TestLevelCutByAMoveIsMeasuredAgain(t *testing.T) {
	sim := vllmsim.New(vllmsim.Config{Model: "m", TokenLatency: time.Millisecond, OutputTokens: 2, MaxNumSeqs: 8})
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	for _, c := range []struct {
		name         string
		movesFor     int // the first measurements a move cuts across
		wantMeasured int
	}{
		{"one move", 1, 2},
		{"moves all along", 100, 1 + MaxRemeasures},
		{"no move", 0, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			calls := 0
			o := Options{URL: srv.URL, Model: "m", Prompt: "hi", SLO: SLO{TPOT: time.Millisecond},
				Metric: "vllm:num_requests_running", StepDuration: 100 * time.Millisecond, MaxConcurrency: 1, Headroom: 0.8, RequestTimeout: time.Minute,
				// Each call is one read before or after a measurement: a
				// move happens during each of the first movesFor.
				Moves: func() int { calls++; return min(calls/2, c.movesFor) }}
			res, _ := Run(context.Background(), o, nil)
			if measured := calls / 2; measured != c.wantMeasured || len(res.Levels) != 1 {
				t.Errorf("level 1 measured %d times, %d levels reported; want %d and 1", measured, len(res.Levels), c.wantMeasured)
			}
		})
	}
}
