// Package load is the walkthrough's request loop done properly: an
// open-loop rate (requests start on schedule whether or not earlier ones
// have answered, like the loop's `curl &`) or a fixed concurrency, for a
// duration or until stopped, with a summary of what happened.
//
// Pacing, connection handling and latency percentiles come from vegeta's
// library rather than a hand-written loop: its pacer keeps an exact
// open-loop schedule (coordinated omission is what hand-written loops get
// wrong), and its metrics are the same ones its CLI reports.
package load

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// DefaultPrompt is the walkthrough's.
const DefaultPrompt = "Explain Quantum Computing in simple terms."

// Options describe a load.
type Options struct {
	URL         string        // base URL of the OpenAI-compatible server
	Model       string        // model in each request
	Prompt      string        // user message in each request
	MaxTokens   int           // max_tokens of each request; 0 leaves it to the server
	Rate        float64       // requests per second (open loop); 0 with Concurrency
	Concurrency int           // fixed number of requests in flight (closed loop)
	Duration    time.Duration // 0 runs until ctx ends
	Timeout     time.Duration // per request
}

// Summary is what a load did.
type Summary struct {
	Target       string         `json:"target"`
	Mode         string         `json:"mode"` // "rate" or "concurrency"
	Sent         uint64         `json:"sent"`
	Succeeded    uint64         `json:"succeeded"`
	Failed       map[string]int `json:"failed"` // by status code or error
	P50          time.Duration  `json:"p50"`
	P90          time.Duration  `json:"p90"`
	P99          time.Duration  `json:"p99"`
	AchievedRate float64        `json:"achievedRate"` // requests started per second
	Elapsed      time.Duration  `json:"elapsed"`
	Stopped      bool           `json:"stopped"` // ended early by ctx
}

// Validate rejects options that cannot run.
func (o Options) Validate() error {
	switch {
	case o.URL == "":
		return fmt.Errorf("load: no server URL")
	case o.Rate < 0 || o.Concurrency < 0:
		return fmt.Errorf("load: rate and concurrency must not be negative")
	case (o.Rate > 0) == (o.Concurrency > 0):
		return fmt.Errorf("load: give exactly one of a rate or a concurrency")
	case o.Model == "":
		return fmt.Errorf("load: no model")
	}
	return nil
}

// Body is the chat completion request each hit sends.
func (o Options) Body() []byte {
	req := map[string]any{
		"model":    o.Model,
		"messages": []any{map[string]any{"role": "user", "content": o.Prompt}},
	}
	if o.MaxTokens > 0 {
		req["max_tokens"] = o.MaxTokens
	}
	b, _ := json.Marshal(req)
	return b
}

// Run sends the load until Duration passes or ctx ends (then it stops
// starting requests and waits for those in flight). onResult, if set, sees
// every result as it arrives.
func Run(ctx context.Context, o Options, onResult func(*vegeta.Result)) (*Summary, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	target := vegeta.Target{
		Method: http.MethodPost,
		URL:    strings.TrimSuffix(o.URL, "/") + "/v1/chat/completions",
		Body:   o.Body(),
		Header: http.Header{"Content-Type": []string{"application/json"}},
	}
	opts := []func(*vegeta.Attacker){vegeta.Timeout(o.Timeout), vegeta.KeepAlive(true)}
	var pacer vegeta.Pacer
	mode := "rate"
	if o.Concurrency > 0 {
		// Closed loop: as fast as answers come back, o.Concurrency at once.
		mode = "concurrency"
		pacer = vegeta.Rate{Freq: 0}
		n := uint64(o.Concurrency)
		opts = append(opts, vegeta.Workers(n), vegeta.MaxWorkers(n), vegeta.Connections(o.Concurrency))
	} else {
		freq, per := rateFraction(o.Rate)
		pacer = vegeta.Rate{Freq: freq, Per: per}
		// An open loop needs as many workers as requests in flight.
		opts = append(opts, vegeta.Workers(uint64(min(1000, max(10, int(o.Rate))))), vegeta.Connections(10000))
	}
	attacker := vegeta.NewAttacker(opts...)

	var m vegeta.Metrics
	failed := map[string]int{}
	var succeeded uint64
	start := time.Now()
	stopped := false
	results := attacker.Attack(vegeta.NewStaticTargeter(target), pacer, o.Duration, "vllm-hpa-load")
	done := ctx.Done()
	for {
		select {
		case res, ok := <-results:
			if !ok {
				m.Close()
				sum := summarize(&m, target.URL, mode, start, stopped)
				sum.Succeeded, sum.Failed = succeeded, failed
				return sum, nil
			}
			m.Add(res)
			switch {
			case res.Code == http.StatusOK:
				succeeded++
			case res.Code != 0:
				failed[fmt.Sprintf("HTTP %d", res.Code)]++
			default:
				failed[shortError(res.Error)]++
			}
			if onResult != nil {
				onResult(res)
			}
		case <-done:
			// Stop starting requests; drain those in flight.
			attacker.Stop()
			stopped, done = true, nil
		}
	}
}

// rateFraction expresses a rate in requests per second as vegeta's
// frequency per period, keeping fractional rates (0.5/s is 1 per 2 s).
func rateFraction(rate float64) (int, time.Duration) {
	if rate >= 1 && rate == float64(int(rate)) {
		return int(rate), time.Second
	}
	per := time.Duration(float64(time.Second) / rate * 1000)
	return 1000, per
}

func summarize(m *vegeta.Metrics, url, mode string, start time.Time, stopped bool) *Summary {
	s := &Summary{
		Target: url, Mode: mode, Sent: m.Requests,
		P50: m.Latencies.P50, P90: m.Latencies.P90, P99: m.Latencies.P99,
		Elapsed: time.Since(start), Stopped: stopped,
	}
	// Requests started per second over the span between the first and the
	// last start (n starts make n-1 intervals).
	if span := m.Latest.Sub(m.Earliest); m.Requests > 1 && span > 0 {
		s.AchievedRate = float64(m.Requests-1) / span.Seconds()
	}
	return s
}

func shortError(e string) string {
	if i := strings.LastIndex(e, ": "); i >= 0 && len(e)-i < 80 {
		return e[i+2:]
	}
	return e
}

// Lines is the summary for a terminal, one fact a line.
func (s *Summary) Lines() []string {
	lines := []string{
		fmt.Sprintf("target:     %s (%s)", s.Target, s.Mode),
		fmt.Sprintf("sent:       %d in %s (%.2f/s achieved)", s.Sent, s.Elapsed.Round(time.Millisecond), s.AchievedRate),
		fmt.Sprintf("succeeded:  %d", s.Succeeded),
	}
	var keys []string
	for k := range s.Failed {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		lines = append(lines, fmt.Sprintf("failed:     %d %s", s.Failed[k], k))
	}
	lines = append(lines, fmt.Sprintf("latency:    p50 %s  p90 %s  p99 %s", s.P50.Round(time.Millisecond), s.P90.Round(time.Millisecond), s.P99.Round(time.Millisecond)))
	return lines
}
