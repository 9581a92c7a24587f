// Package output prints what the steps report: progress on stderr (a status
// line per action and check, the reason a wait is not over, a heartbeat on
// non-terminals), and the run's result on stdout as text, JSON or YAML.
package output

import (
	"fmt"
	"sync"
	"time"

	"github.com/vllm-hpa/vllm-hpa/internal/iostreams"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// Heartbeat is the longest a wait goes without a line on a non-terminal, so
// that CI logs show the run is alive.
const Heartbeat = 30 * time.Second

// spinnerFrames turn on a terminal while a wait is on.
var spinnerFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// Progress prints progress as it happens and records it for the result.
//
// On a terminal a wait is one live line, a spinner with the elapsed time and
// the current reason, rewritten in place; everything else is a line of its
// own. Elsewhere (CI) every line is plain, a new reason is a new line, and a
// heartbeat line repeats the reason at least every 30 s.
type Progress struct {
	streams *iostreams.IOStreams
	now     func() time.Time
	start   time.Time

	mu          sync.Mutex
	steps       []*StepRecord
	lastWaiting string
	waitingFrom time.Time
	lastLine    time.Time
	live        bool // a spinner line is on screen (terminal)
	frame       int
	stopBeat    chan struct{}
}

// StepRecord is what one step did.
type StepRecord struct {
	Step    string        `json:"step"`
	Actions []string      `json:"actions"`
	Checks  []step.Result `json:"checks"`
	Status  string        `json:"status"` // ok, failed, running (interrupted), not-run
	Error   string        `json:"error,omitempty"`
	Seconds float64       `json:"seconds"`
	started time.Time
}

// NewProgress starts a recorder and its spinner (terminal) or heartbeat
// (elsewhere); Close stops them.
func NewProgress(streams *iostreams.IOStreams) *Progress {
	r := newProgress(streams, time.Now)
	interval := Heartbeat / 3
	if streams.ErrTTY {
		interval = 100 * time.Millisecond
	}
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-r.stopBeat:
				return
			case <-t.C:
				r.Tick()
			}
		}
	}()
	return r
}

func newProgress(streams *iostreams.IOStreams, now func() time.Time) *Progress {
	r := &Progress{streams: streams, now: now, stopBeat: make(chan struct{})}
	r.start = r.now()
	r.lastLine = r.start
	return r
}

// Close stops the spinner or heartbeat and clears a live line.
func (r *Progress) Close() {
	select {
	case <-r.stopBeat:
	default:
		close(r.stopBeat)
	}
	r.mu.Lock()
	r.clearLive()
	r.mu.Unlock()
}

// Tick advances the spinner (terminal) or writes a heartbeat line when a
// wait has gone Heartbeat without one (elsewhere).
func (r *Progress) Tick() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastWaiting == "" {
		return
	}
	if r.streams.ErrTTY {
		r.frame++
		r.drawLive()
		return
	}
	if r.now().Sub(r.lastLine) >= Heartbeat {
		r.linef("  … still waiting (%s): %s", r.since(r.waitingFrom), r.lastWaiting)
	}
}

// drawLive (re)draws the spinner line; the caller holds mu.
func (r *Progress) drawLive() {
	fmt.Fprintf(r.streams.ErrOut, "\r\x1b[K  %s %s %s", r.streams.Yellow(spinnerFrames[r.frame%len(spinnerFrames)]),
		r.since(r.waitingFrom), r.lastWaiting)
	r.live = true
}

// clearLive erases the spinner line; the caller holds mu.
func (r *Progress) clearLive() {
	if r.live {
		fmt.Fprint(r.streams.ErrOut, "\r\x1b[K")
		r.live = false
	}
}

// linef prints one progress line, above the spinner line if there is one;
// the caller holds mu.
func (r *Progress) linef(format string, args ...any) {
	wasLive := r.live
	r.clearLive()
	fmt.Fprintf(r.streams.ErrOut, format+"\n", args...)
	r.lastLine = r.now()
	if wasLive && r.lastWaiting != "" {
		r.drawLive()
	}
}

func (r *Progress) since(t time.Time) string {
	return r.now().Sub(t).Round(time.Second).String()
}

// StepStarted opens a step's record and prints its header.
func (r *Progress) StepStarted(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steps = append(r.steps, &StepRecord{Step: name, Actions: []string{}, Checks: []step.Result{}, Status: "running", started: r.now()})
	r.lastWaiting = ""
	r.linef("%s %s", r.streams.Bold("▸"), r.streams.Bold(name))
}

// StepDone closes the step's record.
func (r *Progress) StepDone(name string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := r.record(name)
	rec.Seconds = r.now().Sub(rec.started).Round(time.Millisecond).Seconds()
	r.lastWaiting = ""
	if err != nil {
		rec.Status, rec.Error = "failed", err.Error()
		r.linef("%s %s failed after %.1fs", r.streams.Red("✗"), name, rec.Seconds)
		return
	}
	rec.Status = "ok"
	r.linef("%s %s done in %.1fs", r.streams.Green("✓"), name, rec.Seconds)
}

// record returns the named step's record, creating it if needed; the caller
// holds mu.
func (r *Progress) record(name string) *StepRecord {
	for i := len(r.steps) - 1; i >= 0; i-- {
		if r.steps[i].Step == name {
			return r.steps[i]
		}
	}
	rec := &StepRecord{Step: name, Actions: []string{}, Checks: []step.Result{}, Status: "running", started: r.now()}
	r.steps = append(r.steps, rec)
	return rec
}

// Action implements step.Reporter.
func (r *Progress) Action(stepName, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := r.record(stepName)
	rec.Actions = append(rec.Actions, message)
	r.linef("  %s", message)
}

// Waiting implements step.Reporter: a line when the reason changes.
func (r *Progress) Waiting(stepName, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if reason == r.lastWaiting {
		return
	}
	if r.lastWaiting == "" {
		r.waitingFrom = r.now()
	}
	r.lastWaiting = reason
	if r.streams.ErrTTY {
		r.drawLive()
		return
	}
	r.linef("  %s waiting: %s", r.streams.Yellow("…"), reason)
}

// Result implements step.Reporter.
func (r *Progress) Result(res step.Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := r.record(res.Step)
	rec.Checks = append(rec.Checks, res)
	r.lastWaiting = "" // a check's verdict ends the wait it was for
	r.linef("  %s", FormatResult(r.streams, res))
}

// FormatResult is one check's line: ✓/✗, the check, reason and message.
func FormatResult(s *iostreams.IOStreams, res step.Result) string {
	mark := s.Green("✓")
	if !res.OK {
		mark = s.Red("✗")
	}
	line := mark + " " + res.Check
	if res.Reason != "" && !res.OK {
		line += ": " + res.Reason
	}
	if res.Message != "" {
		line += " (" + res.Message + ")"
	}
	return line
}

// Steps returns the records so far.
func (r *Progress) Steps() []*StepRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*StepRecord, len(r.steps))
	copy(out, r.steps)
	return out
}
