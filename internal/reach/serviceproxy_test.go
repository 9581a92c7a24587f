package reach_test

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/reach"
)

// The service proxy's URL names the Service's port, and its transport
// carries the credentials, those a wrapper adds too (the container API
// route's OAuth token), but not the client's retries: a 503 (a pod
// stopped with the request in hand) reaches the caller once, as it is.
func TestServiceProxy(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if got := r.Header.Get("Authorization"); got != "Bearer t0ken" || r.Header.Get("X-Wrapped") != "oauth" {
			t.Errorf("Authorization %q, X-Wrapped %q", got, r.Header.Get("X-Wrapped"))
		}
		if r.URL.Path != "/api/v1/namespaces/ns/services/llm-service:8081/proxy/v1/chat/completions" {
			t.Errorf("path %s", r.URL.Path)
		}
		http.Error(w, "error trying to reach service: EOF", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	cfg := &rest.Config{Host: srv.URL, BearerToken: "t0ken"}
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			r = r.Clone(r.Context())
			r.Header.Set("X-Wrapped", "oauth")
			return rt.RoundTrip(r)
		})
	})
	cfg.Wrap(kube.Retrying)
	url, rt, err := reach.ServiceProxy(cfg, "ns", "llm-service", 8081)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: rt}).Post(url+"/v1/chat/completions", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || calls.Load() != 1 {
		t.Errorf("status %d after %d calls, want 503 after 1", resp.StatusCode, calls.Load())
	}
	for _, host := range []string{"127.0.0.1:6443", "https://127.0.0.1:6443/prefix/"} {
		url, _, err := reach.ServiceProxy(&rest.Config{Host: host}, "ns", "svc", 80)
		if want := "https://127.0.0.1:6443"; err != nil || url[:len(want)] != want {
			t.Errorf("host %q: %q, %v", host, url, err)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
