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

// Recorder prints progress as it happens and records it for the result.
type Recorder struct {
	streams *iostreams.IOStreams
	now     func() time.Time
	start   time.Time

	mu          sync.Mutex
	steps       []*StepRecord
	lastWaiting string
	lastLine    time.Time
	stopBeat    chan struct{}
}

// StepRecord is what one step did.
type StepRecord struct {
	Step    string        `json:"step"`
	Actions []string      `json:"actions"`
	Checks  []step.Result `json:"checks"`
	Status  string        `json:"status"` // ok, failed, skipped, not-run
	Error   string        `json:"error,omitempty"`
	Seconds float64       `json:"seconds"`
	started time.Time
}

// NewRecorder starts a recorder; Close stops its heartbeat.
func NewRecorder(streams *iostreams.IOStreams) *Recorder {
	r := &Recorder{streams: streams, now: time.Now, stopBeat: make(chan struct{})}
	r.start = r.now()
	r.lastLine = r.start
	if !streams.ErrTTY {
		go r.heartbeat()
	}
	return r
}

// Close stops the heartbeat.
func (r *Recorder) Close() {
	select {
	case <-r.stopBeat:
	default:
		close(r.stopBeat)
	}
}

func (r *Recorder) heartbeat() {
	t := time.NewTicker(Heartbeat / 3)
	defer t.Stop()
	for {
		select {
		case <-r.stopBeat:
			return
		case <-t.C:
			r.mu.Lock()
			if r.now().Sub(r.lastLine) >= Heartbeat && r.lastWaiting != "" {
				r.linef("  … still waiting (%s elapsed): %s", r.elapsed(), r.lastWaiting)
			}
			r.mu.Unlock()
		}
	}
}

// linef prints one progress line; the caller holds mu.
func (r *Recorder) linef(format string, args ...any) {
	fmt.Fprintf(r.streams.ErrOut, format+"\n", args...)
	r.lastLine = r.now()
}

func (r *Recorder) elapsed() string {
	return r.now().Sub(r.start).Round(time.Second).String()
}

// StepStarted opens a step's record and prints its header.
func (r *Recorder) StepStarted(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.steps = append(r.steps, &StepRecord{Step: name, Actions: []string{}, Checks: []step.Result{}, Status: "running", started: r.now()})
	r.lastWaiting = ""
	r.linef("%s %s", r.streams.Bold("▸"), r.streams.Bold(name))
}

// StepDone closes the step's record.
func (r *Recorder) StepDone(name string, err error) {
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
func (r *Recorder) record(name string) *StepRecord {
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
func (r *Recorder) Action(stepName, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := r.record(stepName)
	rec.Actions = append(rec.Actions, message)
	r.linef("  %s", message)
}

// Waiting implements step.Reporter: a line when the reason changes.
func (r *Recorder) Waiting(stepName, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if reason == r.lastWaiting {
		return
	}
	r.lastWaiting = reason
	r.linef("  %s waiting: %s", r.streams.Yellow("…"), reason)
}

// Result implements step.Reporter.
func (r *Recorder) Result(res step.Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec := r.record(res.Step)
	rec.Checks = append(rec.Checks, res)
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
func (r *Recorder) Steps() []*StepRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*StepRecord, len(r.steps))
	copy(out, r.steps)
	return out
}
