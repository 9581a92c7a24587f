package vllmsim

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// lateClock is a clock whose every sleep wakes late, as timers do on a
// busy machine; it records what each sleep was for.
type lateClock struct {
	mu      sync.Mutex
	now     time.Time
	late    time.Duration
	targets []time.Duration // from the first reading of the clock
	zero    time.Time
}

func (c *lateClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *lateClock) SleepUntil(ctx context.Context, t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !t.After(c.now) {
		return ctx.Err()
	}
	c.targets = append(c.targets, t.Sub(c.zero))
	c.now = t.Add(c.late)
	return ctx.Err()
}

// A timer that wakes 7 ms late delays the token it ends, not the ones
// after it: the prefill and decode steps end on one schedule from the
// request's start, so an answer is as long as the model says plus one
// lateness, however many tokens it has.
func TestDecodeStepsKeepTheirSchedule(t *testing.T) {
	s := New(Config{Model: "m", TokenLatency: 10 * time.Millisecond, PrefillLatency: time.Millisecond, OutputTokens: 5, MaxNumSeqs: 4})
	c := &lateClock{now: s.born, zero: s.born, late: 7 * time.Millisecond}
	s.now, s.sleepUntil = c.Now, c.SleepUntil
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json",
		bytes.NewReader([]byte(`{"model":"m","messages":[{"role":"user","content":"one two three"}]}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP %d", resp.StatusCode)
	}
	// 3 prompt tokens x 1 ms of prefill, then 5 steps of 10 ms.
	want := []time.Duration{3, 13, 23, 33, 43, 53}
	if len(c.targets) != len(want) {
		t.Fatalf("slept until %v, want %v ms", c.targets, want)
	}
	for i, w := range want {
		if c.targets[i] != w*time.Millisecond {
			t.Errorf("sleep %d until %v, want %v ms (all: %v)", i, c.targets[i], w, c.targets)
		}
	}
	if end := c.Now().Sub(c.zero); end != 60*time.Millisecond {
		t.Errorf("answered at %v, want 60ms: 53 ms of model and the last wake's 7 ms", end)
	}
}
