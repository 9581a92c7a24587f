package main

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
	"testing"
)

// processGroups are the process groups of the documented blocks running
// or left running (their emulators). Each block runs in a group of its
// own, which a Ctrl+C at the terminal or a SIGTERM to the test binary
// does not reach, so TestMain ends them before the binary dies of the
// signal. (The emulators the tests start in process need nothing: their
// control planes die with the binary.)
type processGroups struct {
	mu    sync.Mutex
	pgids map[int]bool
}

var blockGroups = &processGroups{pgids: map[int]bool{}}

func (g *processGroups) add(pgid int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pgids[pgid] = true
}

func (g *processGroups) remove(pgid int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.pgids, pgid)
}

// terminate sends SIGTERM to every group (the emulator stops its control
// plane and removes its files on SIGTERM).
func (g *processGroups) terminate() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for pgid := range g.pgids {
		syscall.Kill(-pgid, syscall.SIGTERM)
	}
}

func TestMain(m *testing.M) {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-signals
		blockGroups.terminate()
		// Then die of the signal, as without this handler.
		signal.Stop(signals)
		syscall.Kill(os.Getpid(), sig.(syscall.Signal))
	}()
	os.Exit(m.Run())
}
