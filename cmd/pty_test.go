package cmd

import (
	"bytes"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/creack/pty"

	"github.com/vllm-hpa/vllm-hpa/internal/vllmsim"
)

// ansi matches the escape sequences the progress writes (colour, erase).
var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

// liveLines are the spinner lines in what a terminal received: each one is
// drawn after "\r\x1b[K" and has no newline (a chunk with a newline is a
// permanent line, which may wrap). Each is returned without escapes, with
// the offset where it starts.
func liveLines(raw string) (lines []string, at []int) {
	const redraw = "\r\x1b[K"
	off := 0
	for i, chunk := range strings.Split(raw, redraw) {
		if i > 0 {
			off += len(redraw)
		}
		if chunk != "" && !strings.Contains(chunk, "\n") {
			lines = append(lines, ansi.ReplaceAllString(chunk, ""))
			at = append(at, off)
		}
		off += len(chunk)
	}
	return lines, at
}

// TestLiveLineFitsTheTerminal runs load with stderr on a pseudo-terminal
// 40 columns wide, then narrows it to 30 while it runs: every live line
// fits the width the terminal had when it was drawn (so redrawing it never
// leaves a stale wrapped row), and the long ones are cut with "…".
func TestLiveLineFitsTheTerminal(t *testing.T) {
	t.Parallel()
	sim := vllmsim.New(vllmsim.Config{Model: "google/gemma-3-1b-it", TokenLatency: 5 * time.Millisecond, OutputTokens: 20, MaxNumSeqs: 256})
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()

	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	defer ptmx.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Cols: 40, Rows: 24}); err != nil {
		t.Fatal(err)
	}
	env := os.Environ()
	c := cliCommand(env, "load", "--endpoint", srv.URL, "--rate", "20", "--duration", "4s")
	var stdout bytes.Buffer
	c.Stdout, c.Stderr = &stdout, tty
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close() // the child holds it now; EOF on ptmx when it exits

	var mu sync.Mutex
	var raw bytes.Buffer
	read := make(chan struct{})
	go func() {
		defer close(read)
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			mu.Lock()
			raw.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	// Narrow the terminal once a few live lines were drawn at 40.
	narrowedAt := -1
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		lines, _ := liveLines(raw.String())
		if len(lines) >= 3 {
			if err := pty.Setsize(ptmx, &pty.Winsize{Cols: 30, Rows: 24}); err != nil {
				t.Fatal(err)
			}
			narrowedAt = raw.Len()
		}
		mu.Unlock()
		if narrowedAt >= 0 {
			break
		}
	}
	if err := c.Wait(); err != nil {
		t.Fatalf("load: %v\n%s", err, stdout.String())
	}
	<-read
	if narrowedAt < 0 {
		t.Fatalf("no live line on the terminal:\n%q", raw.String())
	}
	lines, at := liveLines(raw.String())
	cut, after := 0, 0
	for i, l := range lines {
		width := 40
		// A line drawn after the resize was read fits 30 columns; one
		// drawn around it may still be 40 wide.
		if at[i] > narrowedAt+200 {
			width = 30
			after++
		}
		if n := utf8.RuneCountInString(l); n >= width {
			t.Errorf("live line of %d columns on a %d-column terminal: %q", n, width, l)
		}
		if strings.HasSuffix(l, "…") {
			cut++
		}
	}
	if cut == 0 || after == 0 {
		t.Errorf("%d live lines, %d cut with …, %d drawn after the resize; want some of each:\n%q", len(lines), cut, after, lines)
	}
	// The summary is the result, on stdout.
	if !strings.Contains(stdout.String(), "sent") {
		t.Errorf("no summary on stdout:\n%s", stdout.String())
	}
}
