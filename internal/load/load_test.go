package load_test

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vllm-hpa/vllm-hpa/internal/load"
	"github.com/vllm-hpa/vllm-hpa/internal/vllmsim"
)

const model = "google/gemma-3-1b-it"

// The load generator against the simulator on loopback: the achieved rate
// is within 2% of the target, and the summary's counts equal the
// simulator's own.
func TestAchievedRate(t *testing.T) {
	for _, tc := range []struct {
		rate     float64
		duration time.Duration
	}{
		{1, 6 * time.Second},
		{100, 3 * time.Second},
		// Higher rates measure the machine more than the pacing; see
		// BenchmarkOpenLoop and scripts/bench-load.sh.
	} {
		t.Run(time.Duration(float64(time.Second)/tc.rate).String(), func(t *testing.T) {
			if raceDetector && tc.rate > 1 {
				// The race detector's slowdown, beside control planes on
				// 2 cores, stalled the pacer (85/s of 100): the machine was
				// measured, not the pacing. make test runs this case
				// without the detector as well.
				t.Skip("pacing at 100/s is measured without the race detector")
			}
			sim := vllmsim.New(vllmsim.Config{Model: model, OutputTokens: 1, MaxNumSeqs: 10000})
			srv := httptest.NewServer(sim.Handler())
			defer srv.Close()
			sum, err := load.Run(context.Background(), load.Options{URL: srv.URL, Model: model, Prompt: load.DefaultPrompt, Rate: tc.rate, Duration: tc.duration}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if dev := math.Abs(sum.AchievedRate-tc.rate) / tc.rate; dev > 0.02 {
				t.Errorf("achieved %.2f/s against %.0f/s (%.1f%% off)", sum.AchievedRate, tc.rate, dev*100)
			}
			if int64(sum.Sent) != sim.Received.Load() || int64(sum.Succeeded) != sim.Completed.Load() || len(sum.Failed) != 0 {
				t.Errorf("summary sent %d succeeded %d failed %v; simulator received %d completed %d",
					sum.Sent, sum.Succeeded, sum.Failed, sim.Received.Load(), sim.Completed.Load())
			}
			t.Logf("rate %.0f/s: sent %d, achieved %.3f/s, p50 %s p99 %s", tc.rate, sum.Sent, sum.AchievedRate, sum.P50Seconds, sum.P99Seconds)
		})
	}
}

func TestConcurrencyAndStop(t *testing.T) {
	sim := vllmsim.New(vllmsim.Config{Model: model, OutputTokens: 2, TokenLatency: 50 * time.Millisecond, MaxNumSeqs: 100})
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	live := &load.Live{}
	go func() {
		for live.Snapshot().Succeeded < 20 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel() // as Ctrl+C would
	}()
	sum, err := load.Run(ctx, load.Options{URL: srv.URL, Model: model, Prompt: "hi", Concurrency: 4}, live)
	if err != nil {
		t.Fatal(err)
	}
	if sum.EndedBy != "interrupted" || sum.Sent < 20 || int64(sum.Sent) != sim.Received.Load() || sum.Succeeded != sum.Sent || sum.Cut != 0 {
		t.Errorf("summary %+v; simulator received %d", sum, sim.Received.Load())
	}
	// Fixed concurrency: never more than 4 at once on the server.
	if sum.Sent > 40 {
		t.Errorf("sent %d after stopping at 20 answers with 4 in flight", sum.Sent)
	}
	if st := live.Snapshot(); st.InFlight != 0 || st.Sent != sum.Sent || st.Succeeded != sum.Succeeded {
		t.Errorf("live counters %+v against the summary %+v", st, sum)
	}
	if sum.Verdict() != nil {
		t.Errorf("verdict %v", sum.Verdict())
	}
}

// A caller's stop (verify once the scale-up is proven) is not an
// interruption.
func TestStoppedByCaller(t *testing.T) {
	sim := vllmsim.New(vllmsim.Config{Model: model, OutputTokens: 1, MaxNumSeqs: 100})
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	ctx, stop := context.WithCancelCause(context.Background())
	time.AfterFunc(300*time.Millisecond, func() { stop(load.ErrStopped) })
	sum, err := load.Run(ctx, load.Options{URL: srv.URL, Model: model, Prompt: "hi", Rate: 20}, nil)
	if err != nil || sum.EndedBy != "stopped" {
		t.Errorf("ended by %q (%v)", sum.EndedBy, err)
	}
	full, err := load.Run(context.Background(), load.Options{URL: srv.URL, Model: model, Prompt: "hi", Rate: 20, Duration: 200 * time.Millisecond}, nil)
	if err != nil || full.EndedBy != "duration" {
		t.Errorf("ended by %q (%v)", full.EndedBy, err)
	}
}

// Requests the interruption breaks are cut, not failed: a server that
// answers after the interruption has closed the connection.
func TestInterruptCutsInFlight(t *testing.T) {
	release := make(chan struct{})
	// The requests the server holds: the connections closed below must
	// be all three (counted by the client when sent, a request may not
	// have its connection yet, and one accepted after the close would
	// wait for the client's timeout).
	var held atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { held.Add(1); <-release }))
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	live := &load.Live{}
	go func() {
		for live.Snapshot().InFlight < 3 || held.Load() < 3 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
		// What the port-forward's end does to the requests in flight.
		srv.CloseClientConnections()
	}()
	sum, err := load.Run(ctx, load.Options{URL: srv.URL, Model: model, Prompt: "hi", Concurrency: 3}, live)
	if err != nil {
		t.Fatal(err)
	}
	if sum.EndedBy != "interrupted" || sum.Cut != 3 || len(sum.Failed) != 0 || sum.Sent != 3 {
		t.Errorf("summary %+v", sum)
	}
	if sum.Verdict() != nil {
		t.Errorf("an interrupted load with nothing failed: verdict %v", sum.Verdict())
	}
}

// Nothing answered is a failed load, named by its failures.
func TestVerdictWhenEveryRequestFails(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusServiceUnavailable) }))
	defer srv.Close()
	sum, err := load.Run(context.Background(), load.Options{URL: srv.URL, Model: model, Prompt: "hi", Rate: 20, Duration: 300 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v := sum.Verdict(); v == nil || !strings.Contains(v.Error(), "every request failed") || !strings.Contains(v.Error(), "HTTP 503") {
		t.Errorf("verdict %v for %+v", v, sum)
	}
}

func TestFailuresCountedByStatus(t *testing.T) {
	sim := vllmsim.New(vllmsim.Config{Model: model, OutputTokens: 1, MaxNumSeqs: 10})
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	sum, err := load.Run(context.Background(), load.Options{URL: srv.URL, Model: "wrong/model", Prompt: "hi", Rate: 50, Duration: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Succeeded != 0 || sum.Failed["HTTP 404"] != int(sum.Sent) {
		t.Errorf("failed %v of %d sent", sum.Failed, sum.Sent)
	}
}

// BenchmarkOpenLoop measures the rate the generator keeps against the
// simulator: go test -bench OpenLoop ./internal/load.
func BenchmarkOpenLoop(b *testing.B) {
	sim := vllmsim.New(vllmsim.Config{Model: model, OutputTokens: 1, MaxNumSeqs: 100000})
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	for i := 0; i < b.N; i++ {
		sum, err := load.Run(context.Background(), load.Options{URL: srv.URL, Model: model, Prompt: load.DefaultPrompt, Rate: 2000, Duration: 2 * time.Second}, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(sum.AchievedRate, "requests/s")
		b.ReportMetric(sum.AchievedRate/2000, "of-target")
	}
}
