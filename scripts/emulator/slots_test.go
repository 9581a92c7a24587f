package main

import (
	"flag"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vllm-hpa/vllm-hpa/internal/turns"
)

// Each test here starts an emulator of its own (a control plane and its
// stand-ins) and waits on it for a minute or more; make test runs
// $VLLM_HPA_EMULATORS of them at once (unset: -parallel's number). go
// test's -parallel admits the tests waiting for a slot in its scheduler's
// order, which put the three longest (the documented blocks, 2-3 minutes
// each) last in every run measured: the module ended with them alone on
// an idle machine. So the tests call parallel, which admits them that
// many at a time, the longest first (make test sets -parallel high enough
// that go test holds none back).

const emulatorsEnv = "VLLM_HPA_EMULATORS"

// longestFirst is the order tests are admitted in: by their duration in
// make test, longest first (a test's subtests, each on an emulator of
// its own, by their longest). A test not listed comes after them.
var longestFirst = []string{
	"TestDocumentedCommands", "TestDocumentedExamples", "TestDocumentedDemo",
	"TestGKEProfileOnEmulator", "TestCombinedStrategyOnEmulator", "TestAdapterNeedsIdentity",
	"TestWalkthroughOnEmulator",
}

// settle is how long the first test waits for the others to arrive
// before any is admitted: go test releases the parallel tests together,
// within a millisecond of each other.
const settle = 300 * time.Millisecond

var slots struct {
	once  sync.Once
	queue turns.Queue[struct{}]
}

// parallel runs t in parallel with the others and holds one of the slots
// for its run.
func parallel(t *testing.T) {
	t.Helper()
	t.Parallel()
	// A subtest takes its turn as its test would.
	got := slots.queue.Take(turns.Rank(longestFirst, t.Name()))
	slots.once.Do(func() {
		// Unset, go test's -parallel says how many (its default is
		// GOMAXPROCS).
		n, _ := strconv.Atoi(flag.Lookup("test.parallel").Value.String())
		if v, err := strconv.Atoi(os.Getenv(emulatorsEnv)); err == nil && v > 0 {
			n = v
		}
		time.Sleep(settle)
		for range max(n, 1) {
			slots.queue.Put(struct{}{})
		}
	})
	waited := time.Now()
	<-got
	held := time.Now()
	t.Cleanup(func() {
		t.Logf("emulator slot: waited %s, held %s", held.Sub(waited).Round(time.Millisecond), time.Since(held).Round(time.Millisecond))
		slots.queue.Put(struct{}{})
	})
}
