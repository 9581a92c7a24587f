// Package vllmsim is a stand-in for the vLLM OpenAI-compatible server, so
// that the stack can be rehearsed, and tuned, without a GPU: chat
// completions (plain and streamed), the model list, /health, and /metrics
// with vLLM's own names.
//
// The model, and its limits (docs/simulator.md):
//   - Continuous batching: every running request makes one token per decode
//     step, and a step takes TokenLatency + BatchLatency x (requests
//     running), so per-token latency grows with the batch as on a GPU.
//   - Admission, first come first served as vLLM's scheduler: a request runs
//     when fewer than MaxNumSeqs run and the KV cache (KVCacheTokens) has
//     room for its prompt and its answer; the rest wait, in order, and
//     vllm:num_requests_waiting counts them. Unlike vLLM, which allocates
//     KV blocks as tokens come and preempts when the cache is full, the
//     simulator reserves a request's whole context when it starts, so it
//     never preempts.
//   - Time to first token: the wait, then PrefillLatency per prompt token,
//     then the first decode step.
//   - Metrics: vllm:num_requests_running, vllm:num_requests_waiting,
//     vllm:kv_cache_usage_perc (0-1; vllm:gpu_cache_usage_perc was its name
//     until vLLM 0.12), vllm:time_to_first_token_seconds,
//     vllm:inter_token_latency_seconds, vllm:e2e_request_latency_seconds and
//     vllm:request_success_total.
package vllmsim

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config shapes the simulated server.
type Config struct {
	Model string // served model id
	// Root is the model path the server was started with (vLLM's --model
	// when --served-model-name names the model; "": Model), which
	// /v1/models reports as each card's root.
	Root         string
	TokenLatency time.Duration // a decode step with nothing else running
	OutputTokens int           // tokens per answer unless max_tokens is smaller
	MaxNumSeqs   int           // requests running at once (vLLM's --max-num-seqs)
	// BatchLatency is what each running request adds to a decode step.
	BatchLatency time.Duration
	// PrefillLatency is the prefill's time per prompt token.
	PrefillLatency time.Duration
	// KVCacheTokens is the KV cache's size in tokens (0: unlimited).
	KVCacheTokens int
	// LoadTime is how long the server loads its model after it starts:
	// /health answers 503 and nothing is served, as vLLM serves nothing
	// before its engine is up.
	LoadTime time.Duration
	// WarmupTime follows the load: /health answers 200 (so a readiness
	// probe on it passes) but completions wait until it ends, as the
	// first requests of a vLLM server wait for compilation and CUDA
	// graph capture: the pod is Ready before it is warm.
	WarmupTime time.Duration
}

// DefaultConfig answers like a small model on one GPU: about 2 s for 100
// tokens alone, each running request adding 0.5 ms to a decode step (a
// batch of 40 doubles the time per token), 256 sequences at once and a KV
// cache of 200,000 tokens.
func DefaultConfig() Config {
	return Config{Model: "google/gemma-3-1b-it", TokenLatency: 20 * time.Millisecond, OutputTokens: 100, MaxNumSeqs: 256,
		BatchLatency: 500 * time.Microsecond, PrefillLatency: 100 * time.Microsecond, KVCacheTokens: 200000}
}

// Server is a simulated vLLM server.
type Server struct {
	cfg   Config
	sched *scheduler

	running, waiting, kvUsage prometheus.Gauge
	latency, ttft, itl        prometheus.Observer
	success                   *prometheus.CounterVec
	registry                  *prometheus.Registry

	// Counters for tests: requests received, completed, failed.
	Received, Completed, Failed atomic.Int64

	born time.Time // when it started: LoadTime and WarmupTime count from here

	// now and sleepUntil are the clock a request's timing reads; tests
	// replace them.
	now        func() time.Time
	sleepUntil func(ctx context.Context, t time.Time) error
}

// loaded and warm are when the model is loaded and when the server is
// warm.
func (s *Server) loaded() time.Time { return s.born.Add(s.cfg.LoadTime) }
func (s *Server) warm() time.Time   { return s.loaded().Add(s.cfg.WarmupTime) }

// whileLoading answers 503 until the model is loaded; it reports whether
// it did.
func (s *Server) whileLoading(w http.ResponseWriter) bool {
	left := time.Until(s.loaded())
	if left <= 0 {
		return false
	}
	w.Header().Set("Retry-After", fmt.Sprint(int(left.Seconds())+1))
	openAIError(w, http.StatusServiceUnavailable, "the model is loading", "ServiceUnavailableError")
	return true
}

// serving wraps h so that it answers only once the model is loaded.
func (s *Server) serving(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.whileLoading(w) {
			h.ServeHTTP(w, r)
		}
	})
}

// New returns a server for cfg.
func New(cfg Config) *Server {
	if cfg.MaxNumSeqs <= 0 {
		cfg.MaxNumSeqs = 1
	}
	s := &Server{cfg: cfg, registry: prometheus.NewRegistry(), born: time.Now(), now: time.Now, sleepUntil: sleepUntil}
	// vLLM (0.10 and later) labels every metric with the model and its
	// engine (one, as with no data parallelism: "0").
	names := []string{"model_name", "engine"}
	label := prometheus.Labels{"model_name": cfg.Model, "engine": "0"}
	runningVec := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vllm:num_requests_running", Help: "Number of requests in model execution batches."}, names)
	waitingVec := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vllm:num_requests_waiting", Help: "Number of requests waiting to be processed."}, names)
	latencyVec := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "vllm:e2e_request_latency_seconds", Help: "Histogram of end to end request latency in seconds.",
		Buckets: []float64{0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60},
	}, names)
	kvVec := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vllm:kv_cache_usage_perc", Help: "KV-cache usage. 1 means 100 percent usage."}, names)
	ttftVec := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "vllm:time_to_first_token_seconds", Help: "Histogram of time to first token in seconds.",
		Buckets: []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80},
	}, names)
	itlVec := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "vllm:inter_token_latency_seconds", Help: "Histogram of inter-token latency in seconds.",
		Buckets: []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10},
	}, names)
	s.success = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vllm:request_success_total", Help: "Count of successfully processed requests."}, []string{"model_name", "engine", "finished_reason"})
	s.registry.MustRegister(runningVec, waitingVec, latencyVec, s.success, kvVec, ttftVec, itlVec)
	s.running, s.waiting, s.kvUsage = runningVec.With(label), waitingVec.With(label), kvVec.With(label)
	s.latency, s.ttft, s.itl = latencyVec.With(label), ttftVec.With(label), itlVec.With(label)
	s.sched = &scheduler{maxSeqs: cfg.MaxNumSeqs, kvTokens: cfg.KVCacheTokens, onChange: func(running, waiting, kvUsed int) {
		s.running.Set(float64(running))
		s.waiting.Set(float64(waiting))
		if cfg.KVCacheTokens > 0 {
			s.kvUsage.Set(float64(kvUsed) / float64(cfg.KVCacheTokens))
		}
	}}
	return s
}

// Handler serves the OpenAI-compatible API, /health and /metrics.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", s.chat)
	mux.HandleFunc("GET /v1/models", s.models)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	return s.serving(mux)
}

type chatRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
	Stream    bool `json:"stream"`
	MaxTokens *int `json:"max_tokens"`
}

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []any{
		map[string]any{"id": s.cfg.Model, "object": "model", "created": time.Now().Unix(), "owned_by": "vllm", "root": cmp.Or(s.cfg.Root, s.cfg.Model), "max_model_len": 32768},
	}})
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	s.Received.Add(1)
	start := s.now()
	var req chatRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		s.Failed.Add(1)
		openAIError(w, http.StatusBadRequest, "invalid JSON: "+err.Error(), "BadRequestError")
		return
	}
	if req.Model != s.cfg.Model {
		s.Failed.Add(1)
		openAIError(w, http.StatusNotFound, fmt.Sprintf("The model `%s` does not exist.", req.Model), "NotFoundError")
		return
	}
	if len(req.Messages) == 0 {
		s.Failed.Add(1)
		openAIError(w, http.StatusBadRequest, "messages must not be empty", "BadRequestError")
		return
	}
	tokens := s.cfg.OutputTokens
	if req.MaxTokens != nil && *req.MaxTokens < tokens {
		tokens = *req.MaxTokens
	}

	// Before the server is warm a request waits (compilation, CUDA
	// graphs): counted in no gauge, as vLLM's first requests.
	if err := s.sleepUntil(r.Context(), s.warm()); err != nil {
		s.Failed.Add(1)
		return
	}
	// Queue until the scheduler admits it: a free sequence slot and room
	// in the KV cache for the whole context.
	need := promptTokens(req) + tokens
	if s.cfg.KVCacheTokens > 0 && need > s.cfg.KVCacheTokens {
		s.Failed.Add(1)
		openAIError(w, http.StatusBadRequest, fmt.Sprintf("the request needs %d tokens of context, more than the KV cache holds (%d)", need, s.cfg.KVCacheTokens), "BadRequestError")
		return
	}
	if err := s.sched.admit(r.Context(), need); err != nil {
		s.Failed.Add(1)
		return
	}
	defer s.sched.release(need)
	// The prefill and every decode step end on a schedule, not a sleep
	// after the last wake: a host slow to wake a timer (a busy machine)
	// delays one token, not every token after it. A GPU's time per token
	// does not depend on the host's load; without this a loaded test
	// machine made answers longer, kept more requests running, and the
	// HPA asked for more replicas than the load calls for.
	due := s.now().Add(time.Duration(promptTokens(req)) * s.cfg.PrefillLatency)
	if err := s.sleepUntil(r.Context(), due); err != nil {
		s.Failed.Add(1)
		return
	}

	id := fmt.Sprintf("chatcmpl-%d", start.UnixNano())
	var out strings.Builder
	var flusher http.Flusher
	if req.Stream {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		flusher, _ = w.(http.Flusher)
	}
	last := s.now()
	for i := 0; i < tokens; i++ {
		// One decode step, slower the more requests share it.
		due = due.Add(s.cfg.TokenLatency + time.Duration(s.sched.runningNow())*s.cfg.BatchLatency)
		if err := s.sleepUntil(r.Context(), due); err != nil {
			s.Failed.Add(1)
			return // the client went away: vLLM aborts the request
		}
		now := s.now()
		if i == 0 {
			s.ttft.Observe(now.Sub(start).Seconds())
		} else {
			s.itl.Observe(now.Sub(last).Seconds())
		}
		last = now
		tok := words[i%len(words)] + " "
		out.WriteString(tok)
		if req.Stream {
			writeSSE(w, map[string]any{"id": id, "object": "chat.completion.chunk", "created": start.Unix(), "model": s.cfg.Model,
				"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"content": tok}, "finish_reason": nil}}})
			if flusher != nil {
				flusher.Flush()
			}
		}
	}
	s.latency.Observe(s.now().Sub(start).Seconds())
	s.success.WithLabelValues(s.cfg.Model, "0", "length").Inc()
	s.Completed.Add(1)
	usage := map[string]any{"prompt_tokens": promptTokens(req), "completion_tokens": tokens, "total_tokens": promptTokens(req) + tokens}
	if req.Stream {
		writeSSE(w, map[string]any{"id": id, "object": "chat.completion.chunk", "created": start.Unix(), "model": s.cfg.Model,
			"choices": []any{map[string]any{"index": 0, "delta": map[string]any{}, "finish_reason": "length"}}, "usage": usage})
		fmt.Fprint(w, "data: [DONE]\n\n")
		if flusher != nil {
			flusher.Flush()
		}
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id": id, "object": "chat.completion", "created": start.Unix(), "model": s.cfg.Model,
		"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": strings.TrimSpace(out.String())}, "finish_reason": "length"}},
		"usage":   usage,
	})
}

var words = strings.Fields("Quantum computers use qubits which can be zero and one at once so they explore many answers together")

func promptTokens(req chatRequest) int {
	n := 0
	for _, m := range req.Messages {
		n += len(strings.Fields(m.Content))
	}
	return n
}

// sleepUntil returns at t, or when ctx ends first (its error).
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeSSE(w http.ResponseWriter, v any) {
	b, _ := json.Marshal(v)
	fmt.Fprintf(w, "data: %s\n\n", b)
}

func openAIError(w http.ResponseWriter, code int, msg, typ string) {
	writeJSON(w, code, map[string]any{"object": "error", "message": msg, "type": typ, "code": code})
}
