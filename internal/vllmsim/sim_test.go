package vllmsim_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vllm-hpa/vllm-hpa/internal/promtext"
	"github.com/vllm-hpa/vllm-hpa/internal/vllmsim"
)

const model = "google/gemma-3-1b-it"

func gauges(t *testing.T, url string) (running, waiting float64) {
	t.Helper()
	v := gaugeValues(t, url, "vllm:num_requests_running", "vllm:num_requests_waiting")
	return v[0], v[1]
}

// gaugeValues reads the named gauges of the model from /metrics.
func gaugeValues(t *testing.T, url string, names ...string) []float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	fams, err := promtext.Families(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float64, len(names))
	for i, n := range names {
		v, ok := promtext.Gauge(fams, n, map[string]string{"model_name": model})
		if !ok {
			t.Fatalf("%s missing from /metrics", n)
		}
		out[i] = v
	}
	return out
}

// eventually polls the gauges until they read want (a state, not a time).
func eventually(t *testing.T, url string, wantRunning, wantWaiting float64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, w := gauges(t, url)
		if r == wantRunning && w == wantWaiting {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gauges running=%v waiting=%v, want %v and %v", r, w, wantRunning, wantWaiting)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func chat(url string, stream bool) (*http.Response, error) {
	body, _ := json.Marshal(map[string]any{"model": model, "stream": stream, "messages": []any{map[string]any{"role": "user", "content": "Explain Quantum Computing in simple terms."}}})
	return http.Post(url+"/v1/chat/completions", "application/json", bytes.NewReader(body))
}

func TestRunningAndWaitingFollowTheQueue(t *testing.T) {
	sim := vllmsim.New(vllmsim.Config{Model: model, TokenLatency: 400 * time.Millisecond, OutputTokens: 1, MaxNumSeqs: 2})
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	eventually(t, srv.URL, 0, 0)

	var wg sync.WaitGroup
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := chat(srv.URL, false)
			if err != nil || resp.StatusCode != 200 {
				t.Errorf("chat: %v %v", err, resp)
				return
			}
			resp.Body.Close()
		}()
	}
	// Two run, three queue; as they finish the queue drains.
	eventually(t, srv.URL, 2, 3)
	eventually(t, srv.URL, 2, 1)
	eventually(t, srv.URL, 1, 0)
	wg.Wait()
	eventually(t, srv.URL, 0, 0)
	if sim.Received.Load() != 5 || sim.Completed.Load() != 5 {
		t.Errorf("received %d completed %d", sim.Received.Load(), sim.Completed.Load())
	}
}

func TestChatPlainAndStreamed(t *testing.T) {
	sim := vllmsim.New(vllmsim.Config{Model: model, OutputTokens: 5, MaxNumSeqs: 4})
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()

	resp, err := chat(srv.URL, false)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Object  string `json:"object"`
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if out.Object != "chat.completion" || len(strings.Fields(out.Choices[0].Message.Content)) != 5 || out.Usage.CompletionTokens != 5 {
		t.Errorf("plain answer: %+v", out)
	}

	resp, err = chat(srv.URL, true)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("content type %q", ct)
	}
	chunks, done := 0, false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "data: [DONE]" {
			done = true
		} else if strings.HasPrefix(line, "data: ") {
			chunks++
		}
	}
	resp.Body.Close()
	if chunks != 6 || !done { // five tokens and the final chunk
		t.Errorf("stream: %d chunks, done=%v", chunks, done)
	}

	for path, want := range map[string]int{"/health": 200, "/v1/models": 200} {
		r, err := http.Get(srv.URL + path)
		if err != nil || r.StatusCode != want {
			t.Errorf("%s: %v %v", path, err, r)
		}
	}
	// An unknown model is a 404, as vLLM answers.
	body := `{"model":"other","messages":[{"role":"user","content":"hi"}]}`
	r, _ := http.Post(srv.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if r.StatusCode != 404 {
		t.Errorf("unknown model: %d", r.StatusCode)
	}
}

// TestKVCacheLimitsTheBatch: with room in the KV cache for two requests'
// context, a third waits although sequence slots are free, and the usage
// gauge reads the reserved share; a request larger than the cache is
// refused.
func TestKVCacheLimitsTheBatch(t *testing.T) {
	// The prompt is 6 words (tokens), the answer 4: 10 per request.
	s := vllmsim.New(vllmsim.Config{Model: model, TokenLatency: 500 * time.Millisecond, OutputTokens: 4, MaxNumSeqs: 100, KVCacheTokens: 25})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, err := chat(srv.URL, false); err == nil {
				resp.Body.Close()
			}
		}()
	}
	eventually(t, srv.URL, 2, 1)
	if kv := gaugeValues(t, srv.URL, "vllm:kv_cache_usage_perc")[0]; kv != 0.8 {
		t.Errorf("kv cache usage %v, want 0.8 (20 of 25 tokens)", kv)
	}
	wg.Wait()
	eventually(t, srv.URL, 0, 0)

	small := vllmsim.New(vllmsim.Config{Model: model, TokenLatency: time.Millisecond, OutputTokens: 4, MaxNumSeqs: 1, KVCacheTokens: 5})
	srv2 := httptest.NewServer(small.Handler())
	defer srv2.Close()
	resp, err := chat(srv2.URL, false)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a request larger than the KV cache: HTTP %d, want 400", resp.StatusCode)
	}
}

// TestBatchSlowsTokens: each running request adds BatchLatency to every
// decode step, so answers take longer in a batch (continuous batching),
// and the time to first token includes the prefill.
func TestBatchSlowsTokens(t *testing.T) {
	s := vllmsim.New(vllmsim.Config{Model: model, TokenLatency: 5 * time.Millisecond, BatchLatency: 5 * time.Millisecond, PrefillLatency: 10 * time.Millisecond, OutputTokens: 10, MaxNumSeqs: 100})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	timed := func() time.Duration {
		start := time.Now()
		resp, err := chat(srv.URL, false)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return time.Since(start)
	}
	alone := timed()
	// 6 prompt tokens x 10 ms + 10 steps x (5 + 5 x 1) ms = 160 ms.
	if alone < 160*time.Millisecond {
		t.Errorf("alone: %s, want at least 160ms", alone)
	}
	var wg sync.WaitGroup
	times := make([]time.Duration, 8)
	for i := range times {
		wg.Add(1)
		go func() { defer wg.Done(); times[i] = timed() }()
	}
	wg.Wait()
	// 8 at once, all admitted together: while all run, a step takes
	// 5 + 5 x 8 = 45 ms, so the last to finish took about 60 + 10 x 45 =
	// 510 ms; 400 ms leaves room for starts spread by the scheduler, and
	// is still well above the 160 ms of one alone without batching (a
	// sleep is never shorter: a lower bound, not a timing).
	slowest := slices.Max(times)
	if slowest < 400*time.Millisecond {
		t.Errorf("8 at once: slowest %s (alone %s), want at least 400ms: the batch did not slow the steps", slowest, alone)
	}
	t.Logf("alone %s, slowest of 8 at once %s", alone, slowest)
}

// While the model loads the server answers 503 everywhere (a readiness
// probe on /health fails); then /health passes while completions still
// wait for the warm-up: Ready before warm.
func TestLoadThenWarmUp(t *testing.T) {
	cfg := vllmsim.DefaultConfig()
	cfg.OutputTokens, cfg.TokenLatency = 2, time.Millisecond
	cfg.LoadTime, cfg.WarmupTime = 300*time.Millisecond, 400*time.Millisecond
	born := time.Now()
	srv := httptest.NewServer(vllmsim.New(cfg).Handler())
	defer srv.Close()

	for _, path := range []string{"/health", "/metrics", "/v1/models"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s while loading: %s, want 503 with Retry-After", path, resp.Status)
		}
	}
	// Poll /health as a readiness probe does, until it passes.
	for {
		resp, err := http.Get(srv.URL + "/health")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	healthy := time.Now()
	if healthy.Sub(born) < cfg.LoadTime {
		t.Errorf("/health passed %s after start, before the %s load", healthy.Sub(born), cfg.LoadTime)
	}
	resp, err := chat(srv.URL, false)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	answered := time.Now()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("chat after the load: %s", resp.Status)
	}
	// The model's lower bound: the first answer comes after load + warm-up.
	if answered.Sub(born) < cfg.LoadTime+cfg.WarmupTime {
		t.Errorf("first answer %s after start, before load + warm-up (%s)", answered.Sub(born), cfg.LoadTime+cfg.WarmupTime)
	}
}

// SIGTERM cuts a streamed answer mid-stream, as vLLM's launcher does by
// cancelling its server task; the process then stops.
func TestTerminateCutsRequestsInFlight(t *testing.T) {
	cfg := vllmsim.DefaultConfig()
	cfg.TokenLatency, cfg.OutputTokens = 10*time.Millisecond, 200 // 2 s
	p, err := vllmsim.Listen("127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"model":"` + model + `","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	resp, err := http.Post("http://"+p.Addr()+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	chunks, last := 0, ""
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			chunks, last = chunks+1, line
			if chunks == 5 {
				p.Terminate()
			}
		}
	}
	if last == "[DONE]" || chunks < 5 || chunks > 50 {
		t.Errorf("%d chunks, the last %q: want the stream cut soon after the fifth", chunks, last)
	}
	if err := p.Wait(); err != nil {
		t.Errorf("Wait: %v", err)
	}
	if _, err := http.Get("http://" + p.Addr() + "/health"); err == nil {
		t.Error("the server still answers after SIGTERM")
	}
}
