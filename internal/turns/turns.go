// Package turns hands out the members of a pool (control planes, emulator
// slots) to the tests waiting for one, the first-ranked first: go test
// releases parallel tests file by file, which left the longest of a
// suite to run last, alone.
package turns

import (
	"slices"
	"strings"
	"sync"
)

// Queue holds the idle members of a pool and the waiters for one.
type Queue[T any] struct {
	mu      sync.Mutex
	idle    []T
	waiting []waiter[T]
}

type waiter[T any] struct {
	rank int
	got  chan T
}

// Put gives v to the first-ranked waiter (the earliest of equals), or
// keeps it idle.
func (q *Queue[T]) Put(v T) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.waiting) == 0 {
		q.idle = append(q.idle, v)
		return
	}
	first := 0
	for i, w := range q.waiting {
		if w.rank < q.waiting[first].rank {
			first = i
		}
	}
	q.waiting[first].got <- v
	q.waiting = slices.Delete(q.waiting, first, first+1)
}

// Take returns a channel that receives a member for a waiter of rank: an
// idle one at once, else the next one Put while it is the first-ranked.
func (q *Queue[T]) Take(rank int) <-chan T {
	got := make(chan T, 1)
	q.mu.Lock()
	defer q.mu.Unlock()
	if n := len(q.idle); n > 0 {
		got <- q.idle[n-1]
		q.idle = q.idle[:n-1]
		return got
	}
	q.waiting = append(q.waiting, waiter[T]{rank: rank, got: got})
	return got
}

// Rank is test's place in order (top-level test names, longest first; a
// subtest takes its test's), or len(order) for a test not listed.
func Rank(order []string, test string) int {
	top, _, _ := strings.Cut(test, "/")
	if i := slices.Index(order, top); i >= 0 {
		return i
	}
	return len(order)
}
