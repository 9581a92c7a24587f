package kube

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// retryTransport retries API calls that failed in a way that says nothing
// about the request itself: a dropped or reset connection, or an answer of
// 429, 500, 502, 503 or 504. Every call vllm-hpa makes is safe to repeat:
// reads, server-side apply (the same desired state again), and deletes
// guarded by UID (a repeat finds the object gone). Watches are left alone:
// the informers re-list and re-watch by themselves. So is a request other
// than a read that the API server proxies to a pod or a Service: a 503
// there is the pod's (one stopped with the request in hand), and a
// completion sent again would be a second request that hides the first
// one's failure.
type retryTransport struct {
	next     http.RoundTripper
	attempts int
	base     time.Duration
}

// Retrying wraps rt; for rest.Config.Wrap.
func Retrying(rt http.RoundTripper) http.RoundTripper {
	return &retryTransport{next: rt, attempts: 8, base: 100 * time.Millisecond}
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if isStream(req) || isProxied(req) {
		return t.next.RoundTrip(req)
	}
	for attempt := 1; ; attempt++ {
		r := req
		if attempt > 1 {
			if req.Body != nil && req.GetBody == nil {
				return nil, errors.New("cannot repeat a request whose body cannot be replayed")
			}
			r = req.Clone(req.Context())
			if req.GetBody != nil {
				body, err := req.GetBody()
				if err != nil {
					return nil, err
				}
				r.Body = body
			}
		}
		resp, err := t.next.RoundTrip(r)
		if attempt >= t.attempts || !transient(resp, err) || req.Context().Err() != nil {
			return resp, err
		}
		if resp != nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
		}
		d := t.base << (attempt - 1)
		if d > 2*time.Second {
			d = 2 * time.Second
		}
		select {
		case <-time.After(d/2 + rand.N(d/2+1)):
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
}

func transient(resp *http.Response, err error) bool {
	if err != nil {
		var ne net.Error
		return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
			errors.Is(err, syscall.ECONNREFUSED) || (errors.As(err, &ne) && ne.Timeout()) || strings.Contains(err.Error(), "connection reset")
	}
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// boundedTransport gives every request but a watch or a stream a deadline
// that covers reading its answer too (its body closes the deadline).
type boundedTransport struct{ next http.RoundTripper }

func bounded(rt http.RoundTripper) http.RoundTripper { return &boundedTransport{next: rt} }

func (t *boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if isStream(req) {
		return t.next.RoundTrip(req)
	}
	ctx, cancel := context.WithTimeout(req.Context(), RequestTimeout)
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	defer c.cancel()
	return c.ReadCloser.Close()
}

// isStream: a watch, or an upgraded connection (port-forward).
// isProxied: a request other than a read that the API server passes on
// to a pod or a Service (pods/proxy, services/proxy).
func isProxied(req *http.Request) bool {
	read := req.Method == http.MethodGet || req.Method == http.MethodHead
	return !read && (strings.Contains(req.URL.Path, "/proxy/") || strings.HasSuffix(req.URL.Path, "/proxy"))
}

func isStream(req *http.Request) bool {
	return req.URL.Query().Get("watch") == "true" || strings.EqualFold(req.Header.Get("Upgrade"), "SPDY/3.1") || req.Header.Get("Connection") == "Upgrade"
}
