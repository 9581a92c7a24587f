package vllmsim_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
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
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	fams, err := promtext.Families(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var ok1, ok2 bool
	running, ok1 = promtext.Gauge(fams, "vllm:num_requests_running", map[string]string{"model_name": model})
	waiting, ok2 = promtext.Gauge(fams, "vllm:num_requests_waiting", map[string]string{"model_name": model})
	if !ok1 || !ok2 {
		t.Fatalf("gauges missing from /metrics")
	}
	return running, waiting
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
