package vllmsim

import (
	"errors"
	"net"
	"net/http"
	"time"
)

// Process is a simulated vLLM server process: a Server listening on a
// socket of its own, stopped as vLLM stops.
type Process struct {
	*Server
	listener net.Listener
	http     *http.Server
	done     chan struct{}
	err      error
}

// Listen starts a simulated server for cfg on addr (host:port; port 0
// picks one).
func Listen(addr string, cfg Config) (*Process, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &Process{Server: New(cfg), listener: l, done: make(chan struct{})}
	p.http = &http.Server{Handler: p.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(p.done)
		if err := p.http.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			p.err = err
		}
	}()
	return p, nil
}

// Addr is where the process listens (host:port).
func (p *Process) Addr() string { return p.listener.Addr().String() }

// Terminate is SIGTERM as vLLM takes it. Its API server's launcher
// (vllm/entrypoints/launcher.py, serve_http) handles SIGTERM by cancelling
// the server's task, so every request in flight is cut, a streamed answer
// mid-stream; vLLM 0.11 has no other way, and later versions do the same
// at their default --shutdown-timeout 0. Only a pause before SIGTERM (a
// preStop hook) lets the requests finish.
func (p *Process) Terminate() {
	p.http.Close()
}

// Wait waits until the process has stopped and says why, if not by
// Terminate.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}
