// Package vllmsim is a stand-in for the vLLM OpenAI-compatible server, so
// that the stack can be rehearsed without a GPU: chat completions (plain and
// streamed), the model list, /health, and /metrics with vLLM's own gauges.
// Like vLLM it runs at most MaxNumSeqs requests at once; the rest wait in a
// queue, so vllm:num_requests_waiting rises under load as it does in vLLM.
package vllmsim

import (
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
	Model        string        // served model id
	TokenLatency time.Duration // time per generated token
	OutputTokens int           // tokens per answer unless max_tokens is smaller
	MaxNumSeqs   int           // requests running at once (vLLM's --max-num-seqs)
}

// DefaultConfig answers like a small model on one GPU: about 2 s for 100
// tokens, 256 sequences at once.
func DefaultConfig() Config {
	return Config{Model: "google/gemma-3-1b-it", TokenLatency: 20 * time.Millisecond, OutputTokens: 100, MaxNumSeqs: 256}
}

// Server is a simulated vLLM server.
type Server struct {
	cfg   Config
	slots chan struct{}

	running, waiting, swapped prometheus.Gauge
	latency                   prometheus.Observer
	success                   *prometheus.CounterVec
	registry                  *prometheus.Registry

	// Counters for tests: requests received, completed, failed.
	Received, Completed, Failed atomic.Int64
}

// New returns a server for cfg.
func New(cfg Config) *Server {
	if cfg.MaxNumSeqs <= 0 {
		cfg.MaxNumSeqs = 1
	}
	s := &Server{cfg: cfg, slots: make(chan struct{}, cfg.MaxNumSeqs), registry: prometheus.NewRegistry()}
	label := prometheus.Labels{"model_name": cfg.Model}
	runningVec := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vllm:num_requests_running", Help: "Number of requests currently running on GPU."}, []string{"model_name"})
	waitingVec := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vllm:num_requests_waiting", Help: "Number of requests waiting to be processed."}, []string{"model_name"})
	swappedVec := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "vllm:num_requests_swapped", Help: "Number of requests swapped to CPU. DEPRECATED: KV cache offloading is not used in V1"}, []string{"model_name"})
	latencyVec := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "vllm:e2e_request_latency_seconds", Help: "Histogram of end to end request latency in seconds.",
		Buckets: []float64{0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60},
	}, []string{"model_name"})
	s.success = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vllm:request_success_total", Help: "Count of successfully processed requests."}, []string{"model_name", "finished_reason"})
	s.registry.MustRegister(runningVec, waitingVec, swappedVec, latencyVec, s.success)
	s.running, s.waiting, s.swapped = runningVec.With(label), waitingVec.With(label), swappedVec.With(label)
	s.latency = latencyVec.With(label)
	return s
}

// Handler serves the OpenAI-compatible API, /health and /metrics.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", s.chat)
	mux.HandleFunc("GET /v1/models", s.models)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	return mux
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
		map[string]any{"id": s.cfg.Model, "object": "model", "created": time.Now().Unix(), "owned_by": "vllm", "root": s.cfg.Model, "max_model_len": 32768},
	}})
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	s.Received.Add(1)
	start := time.Now()
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

	// Queue for a slot, as vLLM's scheduler does beyond max-num-seqs.
	s.waiting.Inc()
	select {
	case s.slots <- struct{}{}:
		s.waiting.Dec()
	case <-r.Context().Done():
		s.waiting.Dec()
		s.Failed.Add(1)
		return
	}
	s.running.Inc()
	defer func() {
		s.running.Dec()
		<-s.slots
	}()

	id := fmt.Sprintf("chatcmpl-%d", start.UnixNano())
	var out strings.Builder
	var flusher http.Flusher
	if req.Stream {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		flusher, _ = w.(http.Flusher)
	}
	for i := 0; i < tokens; i++ {
		if err := sleep(r.Context(), s.cfg.TokenLatency); err != nil {
			s.Failed.Add(1)
			return // the client went away: vLLM aborts the request
		}
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
	s.latency.Observe(time.Since(start).Seconds())
	s.success.WithLabelValues(s.cfg.Model, "length").Inc()
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

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
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
