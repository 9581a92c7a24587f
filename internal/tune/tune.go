// Package tune finds the load one vLLM server can carry within a latency
// objective, and the HPA target that scales before it is passed: it ramps
// concurrency (doubling until the objective breaks, then bisecting), measures
// time to first token and time per output token from streamed answers and
// reads the server's own gauges at each level, and recommends the chosen
// metric's value at the knee, less a headroom for the time a new pod takes.
package tune

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vllm-hpa/vllm-hpa/internal/promtext"
	"github.com/vllm-hpa/vllm-hpa/internal/units"
)

// SLO is the latency objective, each at the 90th percentile; zero is not
// checked.
type SLO struct {
	TTFT    time.Duration // time to first token
	TPOT    time.Duration // time per output token after the first
	Latency time.Duration // whole answer
}

// Options shape a tuning run.
type Options struct {
	URL       string // the server's base URL
	Model     string
	Prompt    string
	MaxTokens int // 0: the server's default
	SLO       SLO
	// Metric is the vLLM gauge the HPA will scale on; Also, the further
	// gauges of a combined strategy.
	Metric string
	Also   []string
	// StepDuration is how long each level is measured, after Warmup.
	StepDuration, Warmup time.Duration
	MaxConcurrency       int
	// Headroom is the fraction of the knee's metric the target is set at,
	// so that scaling starts before the objective breaks.
	Headroom       float64
	RequestTimeout time.Duration
	// Client sends the requests (nil: one with RequestTimeout).
	Client *http.Client
	// Moves, if set, counts the moves of the path to the server (a
	// port-forward that moved to another pod, as when the HPA scales
	// down): a level a move cut across is measured again, up to
	// MaxRemeasures times, as its failures were the path's, not the
	// server's.
	Moves func() int
}

// MaxRemeasures bounds how often one level is measured again after a move.
const MaxRemeasures = 3

// Level is one measured concurrency.
type Level struct {
	Concurrency int           `json:"concurrency"`
	Answered    int           `json:"answered"`
	Failed      int           `json:"failed"`
	Rate        float64       `json:"answersPerSecond"`
	TTFTP50     units.Seconds `json:"ttftP50Seconds"`
	TTFTP90     units.Seconds `json:"ttftP90Seconds"`
	TPOTP90     units.Seconds `json:"tpotP90Seconds"`
	LatencyP90  units.Seconds `json:"latencyP90Seconds"`
	// The server's gauges, averaged over the level.
	Running float64 `json:"running"`
	Waiting float64 `json:"waiting"`
	KVCache float64 `json:"kvCacheUsage"`
	// MeetsSLO, and when not, Why.
	MeetsSLO bool   `json:"meetsSLO"`
	Why      string `json:"why,omitempty"`
}

// Value is the level's reading of a vLLM gauge.
func (l Level) Value(metric string) float64 {
	switch metric {
	case "vllm:num_requests_waiting":
		return l.Waiting
	case "vllm:kv_cache_usage_perc":
		return l.KVCache
	}
	return l.Running
}

// Recommendation is the HPA target tune proposes.
type Recommendation struct {
	Metric    string  `json:"metric"`
	Target    float64 `json:"target"`
	Reasoning string  `json:"reasoning"`
}

// Result is a tuning run.
type Result struct {
	Levels         []Level         `json:"levels"`
	Knee           *Level          `json:"knee"`
	Recommendation *Recommendation `json:"recommendation"`
	// Recommendations are every metric's (a combined strategy's), the
	// first being Recommendation.
	Recommendations []*Recommendation `json:"recommendations"`
}

// moves is o.Moves(), or 0.
func moves(o Options) int {
	if o.Moves == nil {
		return 0
	}
	return o.Moves()
}

// ErrNoLevelMeetsSLO: even one request at a time breaks the objective.
var ErrNoLevelMeetsSLO = errors.New("even one request at a time does not meet the objective")

// Run ramps the load and returns the levels, the knee and the
// recommendation; report sees each level as it is measured.
func Run(ctx context.Context, o Options, report func(Level)) (*Result, error) {
	if o.Client == nil {
		o.Client = &http.Client{Timeout: o.RequestTimeout}
	}
	// Empty lists, not null, in a failed run's document.
	res := &Result{Levels: []Level{}, Recommendations: []*Recommendation{}}
	measured := map[int]Level{}
	measure := func(c int) (Level, error) {
		if l, ok := measured[c]; ok {
			return l, nil
		}
		var l Level
		for attempt := 0; ; attempt++ {
			before := moves(o)
			var err error
			if l, err = measureLevel(ctx, o, c); err != nil {
				return l, err
			}
			if moves(o) == before || attempt == MaxRemeasures {
				break
			}
		}
		measured[c] = l
		res.Levels = append(res.Levels, l)
		if report != nil {
			report(l)
		}
		return l, nil
	}
	// Double until the objective breaks (or the ceiling), then bisect.
	lo, hi := 0, 0
	for c := 1; ; c *= 2 {
		c = min(c, o.MaxConcurrency)
		l, err := measure(c)
		if err != nil {
			return res, err
		}
		if !l.MeetsSLO {
			hi = c
			break
		}
		lo = c
		if c == o.MaxConcurrency {
			break
		}
	}
	for hi > 0 && hi-lo > max(1, lo/20) {
		mid := (lo + hi) / 2
		l, err := measure(mid)
		if err != nil {
			return res, err
		}
		if l.MeetsSLO {
			lo = mid
		} else {
			hi = mid
		}
	}
	slices.SortFunc(res.Levels, func(a, b Level) int { return a.Concurrency - b.Concurrency })
	if lo == 0 {
		return res, ErrNoLevelMeetsSLO
	}
	knee := measured[lo]
	res.Knee = &knee
	for _, m := range append([]string{o.Metric}, o.Also...) {
		res.Recommendations = append(res.Recommendations, recommend(o, m, knee, hi))
	}
	res.Recommendation = res.Recommendations[0]
	return res, nil
}

// recommend sets the target at Headroom of the metric's reading at the
// knee, and says why; a metric that reads nothing at the knee (no queue
// before the objective breaks) cannot tell load, and the reasoning says
// to scale on running instead.
func recommend(o Options, metric string, knee Level, broke int) *Recommendation {
	v := knee.Value(metric)
	r := &Recommendation{Metric: metric, Target: roundTarget(v * o.Headroom)}
	limit := fmt.Sprintf("the objective broke at %d", broke)
	if broke == 0 {
		limit = fmt.Sprintf("the objective held up to --max-concurrency %d, so the knee may be higher", knee.Concurrency)
	}
	r.Reasoning = fmt.Sprintf("one server meets the objective up to %d requests at once (%s); there %s averaged %.3g per pod, and the target is %.0f%% of it (%g), so the HPA adds pods before the objective breaks, leaving room for the time a new pod takes to serve",
		knee.Concurrency, limit, metric, v, o.Headroom*100, r.Target)
	switch {
	case r.Target <= 0 && metric == "vllm:num_requests_running":
		r.Reasoning = fmt.Sprintf("vllm:num_requests_running averaged %.3g at the knee (%d requests at once): the answers are too short for the gauge's samples to see them; lengthen them (--max-tokens) or the levels (--step-duration)",
			v, knee.Concurrency)
	case r.Target <= 0:
		r.Reasoning = fmt.Sprintf("%s averaged %.3g at the knee (%d requests at once): the server does not queue before the objective breaks, so this metric cannot tell the load; scale on vllm:num_requests_running (--metric running) with target %g instead",
			metric, v, knee.Concurrency, roundTarget(knee.Running*o.Headroom))
	}
	return r
}

// roundTarget keeps three significant digits, and whole numbers from 10.
func roundTarget(v float64) float64 {
	if v >= 10 {
		return math.Floor(v)
	}
	if v <= 0 {
		return 0
	}
	p := math.Pow(10, 2-math.Floor(math.Log10(v)))
	return math.Floor(v*p) / p
}

// sample is one answer's timings.
type sample struct {
	ttft, tpot, total time.Duration
}

// measureLevel keeps c streamed requests in flight for Warmup plus
// StepDuration, and judges the answers started after the warmup.
func measureLevel(ctx context.Context, o Options, c int) (Level, error) {
	l := Level{Concurrency: c}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	from, until := start.Add(o.Warmup), start.Add(o.Warmup+o.StepDuration)
	var mu sync.Mutex
	var samples []sample
	var failures []string
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(until) && ctx.Err() == nil {
				began := time.Now()
				s, err := stream(ctx, o)
				if ctx.Err() != nil {
					return
				}
				if began.Before(from) {
					continue // warmup
				}
				mu.Lock()
				if err != nil {
					failures = append(failures, err.Error())
				} else {
					samples = append(samples, s)
				}
				mu.Unlock()
			}
		}()
	}
	// The server's gauges, read every half second of the measured window.
	var gauges [3][]float64
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				if now.Before(from) || now.After(until) {
					continue
				}
				r, w, kv, err := readGauges(ctx, o)
				if err == nil {
					mu.Lock()
					gauges[0], gauges[1], gauges[2] = append(gauges[0], r), append(gauges[1], w), append(gauges[2], kv)
					mu.Unlock()
				}
			}
		}
	}()
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return l, err
	}
	mu.Lock()
	defer mu.Unlock()
	l.Answered, l.Failed = len(samples), len(failures)
	l.Rate = float64(len(samples)) / o.StepDuration.Seconds()
	l.Running, l.Waiting, l.KVCache = mean(gauges[0]), mean(gauges[1]), mean(gauges[2])
	if len(samples) == 0 {
		l.Why = "no answer in the measured window"
		if len(failures) > 0 {
			l.Why += ": " + failures[0]
		}
		return l, nil
	}
	pick := func(f func(sample) time.Duration, q float64) units.Seconds {
		v := make([]time.Duration, len(samples))
		for i, s := range samples {
			v[i] = f(s)
		}
		slices.Sort(v)
		return units.Seconds(v[min(len(v)-1, int(math.Ceil(q*float64(len(v))))-1)])
	}
	l.TTFTP50, l.TTFTP90 = pick(func(s sample) time.Duration { return s.ttft }, 0.5), pick(func(s sample) time.Duration { return s.ttft }, 0.9)
	l.TPOTP90 = pick(func(s sample) time.Duration { return s.tpot }, 0.9)
	l.LatencyP90 = pick(func(s sample) time.Duration { return s.total }, 0.9)
	var why []string
	check := func(name string, got units.Seconds, limit time.Duration) {
		if limit > 0 && time.Duration(got) > limit {
			why = append(why, fmt.Sprintf("%s p90 %s > %s", name, time.Duration(got).Round(time.Millisecond), limit))
		}
	}
	check("ttft", l.TTFTP90, o.SLO.TTFT)
	check("tpot", l.TPOTP90, o.SLO.TPOT)
	check("latency", l.LatencyP90, o.SLO.Latency)
	if failed := float64(l.Failed) / float64(l.Failed+l.Answered); failed > 0.01 {
		why = append(why, fmt.Sprintf("%.0f%% of requests failed (%s)", failed*100, failures[0]))
	}
	l.MeetsSLO, l.Why = len(why) == 0, strings.Join(why, "; ")
	return l, nil
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// maxLine bounds one line of a streamed answer.
const maxLine = 1 << 20

// stream sends one streamed chat completion and times its tokens.
func stream(ctx context.Context, o Options) (sample, error) {
	body := map[string]any{"model": o.Model, "stream": true, "messages": []any{map[string]any{"role": "user", "content": o.Prompt}}}
	if o.MaxTokens > 0 {
		body["max_tokens"] = o.MaxTokens
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(o.URL, "/")+"/v1/chat/completions", bytes.NewReader(b))
	if err != nil {
		return sample{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := o.Client.Do(req)
	if err != nil {
		return sample{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		return sample{}, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	var first, last time.Time
	tokens := 0
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "data: ") || line == "data: [DONE]" {
			continue
		}
		var chunk struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &chunk) != nil || len(chunk.Choices) == 0 || chunk.Choices[0].Delta.Content == "" {
			continue
		}
		now := time.Now()
		if tokens == 0 {
			first = now
		}
		last = now
		tokens++
	}
	if err := sc.Err(); err != nil {
		return sample{}, err
	}
	if tokens == 0 {
		return sample{}, errors.New("the answer streamed no token")
	}
	s := sample{ttft: first.Sub(start), total: last.Sub(start)}
	if tokens > 1 {
		s.tpot = last.Sub(first) / time.Duration(tokens-1)
	}
	return s, nil
}

// readGauges reads running, waiting and KV cache usage from /metrics.
func readGauges(ctx context.Context, o Options) (running, waiting, kv float64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(o.URL, "/")+"/metrics", nil)
	if err != nil {
		return 0, 0, 0, err
	}
	resp, err := o.Client.Do(req)
	if err != nil {
		return 0, 0, 0, err
	}
	defer resp.Body.Close()
	fams, err := promtext.Families(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return 0, 0, 0, err
	}
	sum := func(name string) float64 {
		f, ok := fams[name]
		if !ok {
			return 0
		}
		t := 0.0
		for _, m := range f.GetMetric() {
			t += m.GetGauge().GetValue()
		}
		return t
	}
	kv = sum("vllm:kv_cache_usage_perc")
	if _, ok := fams["vllm:kv_cache_usage_perc"]; !ok {
		kv = sum("vllm:gpu_cache_usage_perc") // its name before vLLM 0.12
	}
	return sum("vllm:num_requests_running"), sum("vllm:num_requests_waiting"), kv, nil
}
