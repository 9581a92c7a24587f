package output

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// TraceTransport logs each API call (method, path, status, latency) to w,
// for -vv. It logs neither headers nor bodies nor query strings, so no
// credential or secret can reach the log.
func TraceTransport(w io.Writer) func(http.RoundTripper) http.RoundTripper {
	var mu sync.Mutex
	return func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			start := time.Now()
			resp, err := rt.RoundTrip(req)
			status := "error"
			if err == nil {
				status = fmt.Sprint(resp.StatusCode)
			}
			mu.Lock()
			fmt.Fprintf(w, "  api: %s %s %s %s\n", req.Method, req.URL.Path, status, time.Since(start).Round(time.Millisecond))
			mu.Unlock()
			return resp, err
		})
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
