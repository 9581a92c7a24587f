// Package iostreams is where every command writes: results on Out (stdout),
// progress and logs on ErrOut (stderr). It knows whether each is a terminal,
// and colour is on only for a terminal, never with NO_COLOR or --no-color.
package iostreams

import (
	"bytes"
	"io"
	"os"

	"github.com/fatih/color"
	"golang.org/x/term"

	"github.com/vllm-hpa/vllm-hpa/internal/redact"
)

// IOStreams bundles the standard streams with what is known about them.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer

	OutTTY bool // stdout is a terminal
	ErrTTY bool // stderr is a terminal
	// Width is the terminal's width in columns when it cannot be read
	// (tests); TerminalWidth reads the live value.
	Width int
	// errTerm is stderr when it is a terminal, to read its width as the
	// window is resized.
	errTerm *os.File

	// Secrets scrubs Out and ErrOut: everything written to them passes
	// through it, so a secret registered with it is never shown.
	Secrets *redact.Scrubber

	colorDisabled bool
}

// scrubbed wraps the streams' writers in their scrubber.
func (s *IOStreams) scrubbed() *IOStreams {
	s.Secrets = &redact.Scrubber{}
	s.Out = s.Secrets.Writer(s.Out)
	s.ErrOut = s.Secrets.Writer(s.ErrOut)
	return s
}

// System returns the process's streams.
func System() *IOStreams {
	s := &IOStreams{
		In:     os.Stdin,
		Out:    os.Stdout,
		ErrOut: os.Stderr,
		OutTTY: isTerminal(os.Stdout),
		ErrTTY: isTerminal(os.Stderr),
	}
	if s.ErrTTY {
		s.errTerm = os.Stderr
	}
	if _, ok := os.LookupEnv("NO_COLOR"); ok || os.Getenv("TERM") == "dumb" {
		s.colorDisabled = true
	}
	return s.scrubbed()
}

// Test returns streams backed by buffers, as if neither were a terminal.
func Test() (s *IOStreams, out, errOut *bytes.Buffer) {
	out, errOut = &bytes.Buffer{}, &bytes.Buffer{}
	return (&IOStreams{In: &bytes.Buffer{}, Out: out, ErrOut: errOut}).scrubbed(), out, errOut
}

// TerminalWidth is stderr's width in columns now (it changes when the
// window is resized), Width when it cannot be read, 0 when unknown.
func (s *IOStreams) TerminalWidth() int {
	if s.errTerm != nil {
		if w, _, err := term.GetSize(int(s.errTerm.Fd())); err == nil && w > 0 {
			return w
		}
	}
	return s.Width
}

// DisableColor turns colour off (--no-color).
func (s *IOStreams) DisableColor() { s.colorDisabled = true }

// ColorEnabled reports whether progress on stderr may use colour.
func (s *IOStreams) ColorEnabled() bool { return s.ErrTTY && !s.colorDisabled }

// Colorize returns c with colour forced on or off to match the streams,
// independent of fatih/color's global detection (which looks at stdout).
func (s *IOStreams) Colorize(attrs ...color.Attribute) *color.Color {
	c := color.New(attrs...)
	if s.ColorEnabled() {
		c.EnableColor()
	} else {
		c.DisableColor()
	}
	return c
}

func isTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// Red, Green, Yellow and Bold colour s for stderr when colour is enabled.
func (s *IOStreams) Red(v string) string    { return s.Colorize(color.FgRed).Sprint(v) }
func (s *IOStreams) Green(v string) string  { return s.Colorize(color.FgGreen).Sprint(v) }
func (s *IOStreams) Yellow(v string) string { return s.Colorize(color.FgYellow).Sprint(v) }
func (s *IOStreams) Bold(v string) string   { return s.Colorize(color.Bold).Sprint(v) }
