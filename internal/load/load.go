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
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/vllm-hpa/vllm-hpa/internal/units"
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
	// Transport, if set, carries every request (e.g. authenticated to
	// the API server, for its service proxy); unset, vegeta's own.
	Transport http.RoundTripper
}

// Summary is what a load did. Durations are seconds (units.Seconds).
type Summary struct {
	Target    string         `json:"target"`
	Mode      string         `json:"mode"` // "rate" or "concurrency"
	Sent      uint64         `json:"sent"` // started, cut ones included
	Succeeded uint64         `json:"succeeded"`
	Failed    map[string]int `json:"failed"` // by status code or error
	// Cut are requests in flight when the load was interrupted whose
	// connection the interruption broke: neither answered nor failed by
	// the server.
	Cut        uint64        `json:"cut"`
	P50Seconds units.Seconds `json:"p50Seconds"`
	P90Seconds units.Seconds `json:"p90Seconds"`
	P99Seconds units.Seconds `json:"p99Seconds"`
	// MaxSeconds is the longest answered request (failures and timeouts
	// left out): what a scale-down's drain must let finish.
	MaxSeconds units.Seconds `json:"maxSeconds"`
	// AchievedRate is requests started per second while sending (the
	// drain of the last answers left out).
	AchievedRate float64 `json:"achievedRatePerSecond"`
	// SendingSeconds is from the first request started to the last;
	// ElapsedSeconds adds the wait for the answers in flight.
	SendingSeconds units.Seconds `json:"sendingSeconds"`
	ElapsedSeconds units.Seconds `json:"elapsedSeconds"`
	// EndedBy is "duration" (it ran its course), "interrupted" (Ctrl+C or
	// SIGTERM) or "stopped" (by its caller, e.g. verify once the scale-up
	// is proven).
	EndedBy string `json:"endedBy"`
	// FirstFailure is what the server said to the first request it
	// refused (vLLM's error message, at most 200 characters): the reason
	// is usually there ("The model `x` does not exist.").
	FirstFailure string `json:"firstFailure,omitempty"`
}

// ErrStopped is the cause a caller gives when it cancels a load on
// purpose (context.WithCancelCause), as opposed to an interruption.
var ErrStopped = errors.New("load stopped by its caller")

// Live is a running load's counters, safe to read while it runs.
type Live struct {
	started, finished, succeeded, failed atomic.Uint64
}

// Stats are a Live's counters at one moment.
type Stats struct {
	Sent, Succeeded, Failed, InFlight uint64
}

// Snapshot reads the counters.
func (l *Live) Snapshot() Stats {
	finished := l.finished.Load()
	started := max(l.started.Load(), finished)
	return Stats{Sent: started, Succeeded: l.succeeded.Load(), Failed: l.failed.Load(), InFlight: started - finished}
}

// String is the counters on one line, for a live status.
func (s Stats) String() string {
	return fmt.Sprintf("sent %d, ok %d, failed %d, in flight %d", s.Sent, s.Succeeded, s.Failed, s.InFlight)
}

// Validate rejects options that cannot run.
func (o Options) Validate() error {
	switch {
	case o.Rate > 0 && o.Rate < MinRate:
		return fmt.Errorf("load: a rate below %g requests per second", MinRate)
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
// starting requests and waits for those in flight). live, if set, counts as
// it goes. A ctx cancelled with cause ErrStopped ends it as "stopped",
// otherwise as "interrupted".
func Run(ctx context.Context, o Options, live *Live) (*Summary, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	if live == nil {
		live = &Live{}
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
	if o.Transport != nil {
		// Last: it replaces the client the options above shaped.
		opts = append(opts, vegeta.Client(&http.Client{Transport: o.Transport, Timeout: o.Timeout}))
	}
	attacker := vegeta.NewAttacker(opts...)
	static := vegeta.NewStaticTargeter(target)
	// vegeta asks the targeter at the start of each hit: that is when a
	// request is in flight.
	counting := func(t *vegeta.Target) error {
		live.started.Add(1)
		return static(t)
	}

	var m vegeta.Metrics
	failed := map[string]int{}
	var succeeded, cut uint64
	var longest time.Duration // of the answered requests
	var firstFailure string
	start := time.Now()
	endedBy := "duration"
	results := attacker.Attack(counting, pacer, o.Duration, "vllm-hpa-load")
	done := ctx.Done()
	for {
		select {
		case res, ok := <-results:
			if !ok {
				m.Close()
				sum := summarize(&m, target.URL, mode, start, endedBy)
				sum.Succeeded, sum.Failed, sum.Cut, sum.FirstFailure = succeeded, failed, cut, firstFailure
				sum.MaxSeconds = units.Seconds(longest)
				sum.Sent += cut
				return sum, nil
			}
			live.finished.Add(1)
			switch {
			case res.Code == http.StatusOK:
				succeeded++
				longest = max(longest, res.Latency)
				live.succeeded.Add(1)
			case res.Code == 0 && endedBy == "interrupted":
				// The interruption broke it (e.g. the port-forward
				// closed): not the server's failure.
				cut++
				continue
			case res.Code != 0:
				failed[fmt.Sprintf("HTTP %d", res.Code)]++
				live.failed.Add(1)
				if firstFailure == "" {
					firstFailure = serverMessage(res.Body)
				}
			default:
				failed[shortError(res.Error)]++
				live.failed.Add(1)
			}
			m.Add(res)
		case <-done:
			// Stop starting requests; drain those in flight.
			attacker.Stop()
			done, endedBy = nil, "interrupted"
			if errors.Is(context.Cause(ctx), ErrStopped) {
				endedBy = "stopped"
			}
		}
	}
}

// serverMessage is the message of an OpenAI-style error body
// ({"message": ...} or {"error": {"message": ...}}), else the body's start:
// one line of at most 200 characters.
func serverMessage(body []byte) string {
	var e struct {
		Message string `json:"message"`
		Error   struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	msg := string(body)
	if json.Unmarshal(body, &e) == nil {
		if e.Message != "" {
			msg = e.Message
		} else if e.Error.Message != "" {
			msg = e.Error.Message
		}
	}
	msg = strings.Join(strings.Fields(msg), " ")
	if r := []rune(msg); len(r) > 200 {
		msg = string(r[:200]) + "..."
	}
	return msg
}

// rateFraction expresses a rate in requests per second as vegeta's
// frequency per period, keeping fractional rates (0.5/s is 1 per 2 s).
// MinRate is the slowest open-loop rate: one request in 1,000 s (slower,
// the pacer's interval would overflow).
const MinRate = 0.001

func rateFraction(rate float64) (int, time.Duration) {
	if rate >= 1 && rate == float64(int(rate)) {
		return int(rate), time.Second
	}
	per := time.Duration(float64(time.Second) / rate * 1000)
	return 1000, per
}

func summarize(m *vegeta.Metrics, url, mode string, start time.Time, endedBy string) *Summary {
	s := &Summary{
		Target: url, Mode: mode, Sent: m.Requests,
		P50Seconds: units.Seconds(m.Latencies.P50), P90Seconds: units.Seconds(m.Latencies.P90), P99Seconds: units.Seconds(m.Latencies.P99),
		ElapsedSeconds: units.Seconds(time.Since(start)), EndedBy: endedBy,
	}
	// Requests started per second over the span between the first and the
	// last start (n starts make n-1 intervals).
	if span := m.Latest.Sub(m.Earliest); m.Requests > 1 && span > 0 {
		s.SendingSeconds = units.Seconds(span)
		s.AchievedRate = math.Round(float64(m.Requests-1)/span.Seconds()*1000) / 1000
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
	sent := fmt.Sprintf("sent:       %d over %s (%.2f/s achieved)", s.Sent, s.SendingSeconds, s.AchievedRate)
	if drain := time.Duration(s.ElapsedSeconds - s.SendingSeconds); drain > 0 {
		sent += fmt.Sprintf("; the last answers %s later", units.Seconds(drain))
	}
	lines := []string{
		fmt.Sprintf("target:     %s (%s)", s.Target, s.Mode),
		sent,
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
	if s.Cut > 0 {
		lines = append(lines, fmt.Sprintf("cut:        %d in flight when interrupted (not counted as failures)", s.Cut))
	}
	lines = append(lines, fmt.Sprintf("latency:    p50 %s  p90 %s  p99 %s  max %s", s.P50Seconds, s.P90Seconds, s.P99Seconds, s.MaxSeconds))
	if s.EndedBy == "interrupted" {
		lines = append(lines, "ended:      interrupted")
	}
	return lines
}

// Verdict is the load's outcome as an error: nil when some request was
// answered, an error naming the failures when none was (a server that
// answers nothing is not a load test that passed).
func (s *Summary) Verdict() error {
	if s.Succeeded > 0 || s.EndedBy == "interrupted" && len(s.Failed) == 0 {
		return nil
	}
	if s.Sent == 0 {
		return errors.New("no request was sent: raise --duration or --rate")
	}
	var parts []string
	keys := make([]string, 0, len(s.Failed))
	for k := range s.Failed {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", s.Failed[k], k))
	}
	if s.FirstFailure != "" {
		return fmt.Errorf("every request failed (%s); the server said: %s", strings.Join(parts, ", "), s.FirstFailure)
	}
	return fmt.Errorf("every request failed (%s): is the server at %s up and serving the model?", strings.Join(parts, ", "), s.Target)
}
