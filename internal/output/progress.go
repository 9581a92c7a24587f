// Package output prints what the steps report: progress on stderr (a status
// line per action and check, the reason a wait is not over, a heartbeat on
// non-terminals), and the run's result on stdout as text, JSON or YAML.
package output

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/vllm-hpa/vllm-hpa/internal/iostreams"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/units"
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
	// status is a running activity's live line (e.g. a load's counters):
	// on a terminal the spinner line, elsewhere a heartbeat line.
	status     string
	statusFrom time.Time
	lastLine   time.Time
	live       bool // a spinner line is on screen (terminal)
	// results, if set, gets the check lines instead of the progress
	// stream (see ResultsTo).
	results  io.Writer
	frame    int
	stopBeat chan struct{}
}

// StepRecord is what one step did.
type StepRecord struct {
	Step    string        `json:"step"`
	Actions []string      `json:"actions"`
	Checks  []step.Result `json:"checks"`
	Status  string        `json:"status"` // ok, failed, interrupted, not-run
	Error   string        `json:"error,omitempty"`
	Seconds units.Seconds `json:"seconds"`
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
	text, from := r.liveText()
	if text == "" {
		return
	}
	if r.streams.ErrTTY {
		r.frame++
		r.drawLive()
		return
	}
	if r.now().Sub(r.lastLine) >= Heartbeat {
		if r.lastWaiting != "" {
			r.linef("  … still waiting (%s): %s", r.since(from), text)
		} else {
			r.linef("  … %s: %s", r.since(from), text)
		}
	}
}

// liveText is what the live line shows: the reason a wait is not over, else
// the status of a running activity; the caller holds mu.
func (r *Progress) liveText() (string, time.Time) {
	if r.lastWaiting != "" {
		return r.lastWaiting, r.waitingFrom
	}
	return r.status, r.statusFrom
}

// drawLive (re)draws the spinner line, cut to the terminal's width so that
// it never wraps (a wrapped line would leave a stale row behind when it is
// redrawn); the caller holds mu.
func (r *Progress) drawLive() {
	text, from := r.liveText()
	if text == "" {
		r.clearLive()
		return
	}
	elapsed := r.since(from)
	text = strings.ReplaceAll(text, "\n", " ")
	if w := r.streams.TerminalWidth(); w > 0 {
		// "  ⠋ " + elapsed + " " + text, and the last column left free.
		text = truncate(text, w-1-4-len(elapsed)-1)
	}
	fmt.Fprintf(r.streams.ErrOut, "\r\x1b[K  %s %s %s", r.streams.Yellow(spinnerFrames[r.frame%len(spinnerFrames)]), elapsed, text)
	r.live = true
}

// truncate cuts s to at most n runes, ending in "…" when cut.
func truncate(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	runes := []rune(s)
	return string(runes[:n-1]) + "…"
}

// Status sets the live line of a running activity (empty ends it): on a
// terminal it is the spinner line, rewritten in place; elsewhere it is
// printed as a heartbeat at least every Heartbeat. It is not recorded.
func (r *Progress) Status(text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.status == "" && text != "" {
		r.statusFrom = r.now()
	}
	r.status = text
	if r.streams.ErrTTY && r.lastWaiting == "" {
		r.drawLive()
	}
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
	if text, _ := r.liveText(); wasLive && text != "" {
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
	rec.Seconds = units.Seconds(r.now().Sub(rec.started))
	r.lastWaiting = ""
	switch {
	case errors.Is(err, context.Canceled):
		// Stopped by SIGINT/SIGTERM: not a verdict on the step.
		rec.Status, rec.Error = "interrupted", err.Error()
		r.linef("%s %s interrupted after %.1fs", r.streams.Yellow("■"), name, rec.Seconds.Float())
		return
	case err != nil:
		rec.Status, rec.Error = "failed", err.Error()
		r.linef("%s %s failed after %.1fs", r.streams.Red("✗"), name, rec.Seconds.Float())
		return
	}
	rec.Status = "ok"
	r.linef("%s %s done in %.1fs", r.streams.Green("✓"), name, rec.Seconds.Float())
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
	if r.results != nil {
		// A line of its own, the step named, for a file or a pipe.
		res.Check = res.Step + "/" + res.Check
		wasLive := r.live
		r.clearLive()
		fmt.Fprintln(r.results, FormatResult(plain, res))
		if text, _ := r.liveText(); wasLive && text != "" {
			r.drawLive()
		}
		return
	}
	r.linef("  %s", FormatResult(r.streams, res))
}

// plain formats without colour, for a file or a pipe.
var plain = &iostreams.IOStreams{}

// ResultsTo sends the check lines to w instead of the progress stream:
// verify's checks are its result, so they go to stdout when stdout is
// a file or a pipe ("verify > report.txt" keeps them).
func (r *Progress) ResultsTo(w io.Writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results = w
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
