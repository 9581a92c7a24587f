package timeline

import (
	"strings"
	"testing"
	"time"
)

func f(v float64) *float64 { return &v }

func sec(s float64) Seconds { return Seconds(time.Duration(s * float64(time.Second))) }

// The chart's time axis runs to the end of the run, and a row whose every
// sample is the same draws no step.
func TestChart(t *testing.T) {
	tl := Timeline{
		Samples: []Sample{
			{At: sec(1), Ready: 1, Replicas: 1, Metric: f(0)},
			{At: sec(5), Ready: 1, Replicas: 1, Metric: f(2)},
		},
		Rescales: nil,
		End:      sec(20),
	}
	lines := Chart(tl, 20)
	if len(lines) != 4 {
		t.Fatalf("lines: %q", lines)
	}
	if !strings.HasSuffix(lines[3], "20s") {
		t.Errorf("axis ends at %q, want the run's end, 20s", lines[3])
	}
	ready := strings.TrimPrefix(lines[0], "ready   ")
	ready = ready[:strings.Index(ready, "  max")]
	if strings.ContainsAny(strings.TrimSpace(ready), "▁▂▃▄▅▆▇ ") {
		t.Errorf("ready row %q: one replica throughout, drawn with a step", ready)
	}
	// The metric changed from 0 to 2 at 5s of 20s: a quarter in.
	metric := []rune(strings.TrimPrefix(lines[1], "metric  "))
	if metric[2] != '▁' || metric[10] != '█' {
		t.Errorf("metric row %q", string(metric))
	}
}

func TestDescribe(t *testing.T) {
	if got := (Sample{Ready: 1, Replicas: 2, Desired: 3}).Describe(); got != "metric not read yet, replicas 1 ready of 2 (desired 3)" {
		t.Errorf("%q", got)
	}
	if got := (Sample{Metric: f(7.25), Ready: 1, Replicas: 1, Desired: 2}).Describe(); !strings.HasPrefix(got, "metric 7.25,") {
		t.Errorf("%q", got)
	}
}

// ScaledUpReady is when every replica the HPA asks for above the start is
// Ready: the peak when the HPA holds it, the size it settled on when it
// changed its mind before the peak's pods started (asked 4, then 2).
func TestScaledUpReady(t *testing.T) {
	for _, c := range []struct {
		name  string
		steps []func(w *Watcher)
		want  bool
	}{
		{"peak reached", []func(w *Watcher){
			func(w *Watcher) { w.update(func(s *Sample) { s.Desired, s.Replicas, s.Ready = 1, 1, 1 }, nil) },
			func(w *Watcher) { w.update(func(s *Sample) { s.Desired = 3 }, &Rescale{NewSize: 3}) },
			func(w *Watcher) { w.update(func(s *Sample) { s.Replicas, s.Ready = 3, 2 }, nil) },
			func(w *Watcher) { w.update(func(s *Sample) { s.Ready = 3 }, nil) },
		}, true},
		{"settled below the peak", []func(w *Watcher){
			func(w *Watcher) { w.update(func(s *Sample) { s.Desired, s.Replicas, s.Ready = 1, 1, 1 }, nil) },
			func(w *Watcher) { w.update(func(s *Sample) { s.Desired = 4 }, &Rescale{NewSize: 4}) },
			func(w *Watcher) { w.update(func(s *Sample) { s.Desired, s.Replicas = 2, 2 }, &Rescale{NewSize: 2}) },
			func(w *Watcher) { w.update(func(s *Sample) { s.Ready = 2 }, nil) },
		}, true},
		{"not yet served", []func(w *Watcher){
			func(w *Watcher) { w.update(func(s *Sample) { s.Desired, s.Replicas, s.Ready = 1, 1, 1 }, nil) },
			func(w *Watcher) { w.update(func(s *Sample) { s.Desired, s.Replicas = 3, 3 }, &Rescale{NewSize: 3}) },
			func(w *Watcher) { w.update(func(s *Sample) { s.Ready = 2 }, nil) },
		}, false},
	} {
		w := &Watcher{tl: Timeline{Start: time.Now()}, seen: map[string]int32{}, changed: make(chan struct{}), initial: -1}
		for _, step := range c.steps {
			step(w)
		}
		if got := w.Timeline().ScaledUpReady != nil; got != c.want {
			t.Errorf("%s: ScaledUpReady set = %v, want %v", c.name, got, c.want)
		}
	}
}
