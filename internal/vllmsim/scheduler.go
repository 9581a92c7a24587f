package vllmsim

import (
	"context"
	"sync"
)

// scheduler admits requests first come first served, as vLLM's does: a
// request runs when fewer than maxSeqs run and the KV cache (kvTokens, 0
// for unlimited) has room for its context; otherwise it waits behind
// those before it.
type scheduler struct {
	maxSeqs  int
	kvTokens int
	onChange func(running, waiting, kvUsed int)

	mu      sync.Mutex
	running int
	kvUsed  int
	queue   []*waiter
}

type waiter struct {
	need     int
	admitted chan struct{}
}

func (s *scheduler) fits(need int) bool {
	return s.running < s.maxSeqs && (s.kvTokens == 0 || s.kvUsed+need <= s.kvTokens)
}

// admit blocks until the request of need tokens runs, or ctx ends.
func (s *scheduler) admit(ctx context.Context, need int) error {
	s.mu.Lock()
	if len(s.queue) == 0 && s.fits(need) {
		s.start(need)
		s.mu.Unlock()
		return nil
	}
	w := &waiter{need: need, admitted: make(chan struct{})}
	s.queue = append(s.queue, w)
	s.changed()
	s.mu.Unlock()
	select {
	case <-w.admitted:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		defer s.mu.Unlock()
		select {
		case <-w.admitted: // admitted meanwhile: give the place back
			s.finish(need)
		default:
			for i, q := range s.queue {
				if q == w {
					s.queue = append(s.queue[:i], s.queue[i+1:]...)
					break
				}
			}
			s.changed()
		}
		return ctx.Err()
	}
}

// release ends a running request and starts those that now fit.
func (s *scheduler) release(need int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.finish(need)
}

// runningNow is the batch size of the current decode step.
func (s *scheduler) runningNow() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// start and finish hold mu.
func (s *scheduler) start(need int) {
	s.running++
	s.kvUsed += need
	s.changed()
}

func (s *scheduler) finish(need int) {
	s.running--
	s.kvUsed -= need
	for len(s.queue) > 0 && s.fits(s.queue[0].need) {
		w := s.queue[0]
		s.queue = s.queue[1:]
		s.running++
		s.kvUsed += w.need
		close(w.admitted)
	}
	s.changed()
}

func (s *scheduler) changed() {
	if s.onChange != nil {
		s.onChange(s.running, len(s.queue), s.kvUsed)
	}
}
