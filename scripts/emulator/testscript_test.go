package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMakeTestEndsOnSIGTERM: scripts/test.sh (make test) ends at once on
// SIGTERM in the middle of a build, and ends the build with it. Bash runs
// a trap only once its foreground command has ended: a build in the
// foreground (minutes long in a fresh clone) kept the run going after a
// CI job's timeout had asked it to stop. Here the build never ends: a go
// that sleeps when asked to build or test, and runs the real one
// otherwise (the script asks it for GOROOT and the module's name).
func TestMakeTestEndsOnSIGTERM(t *testing.T) {
	t.Parallel()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	realGo, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go on PATH")
	}
	// The fake is its own GOROOT's go, which the script puts first on
	// PATH: the Kubernetes cache's script, if it has to build, sleeps too.
	root := t.TempDir()
	pidFile := filepath.Join(root, "build.pid")
	fake := filepath.Join(root, "bin", "go")
	if err := os.MkdirAll(filepath.Dir(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	script := `#!/bin/sh
case "$1 $2" in
"env GOROOT") echo ` + root + ` ;;
"build "* | "test "*) echo $$ > ` + pidFile + `; exec sleep 600 ;;
*) exec ` + realGo + ` "$@" ;;
esac
`
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command("bash", "scripts/test.sh")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "GO="+fake)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- cmd.Wait() }()
	var build int
	// A script that failed here leaves its group, and the build (a job:
	// a group of its own), to be ended.
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if build > 0 && t.Failed() {
			syscall.Kill(build, syscall.SIGKILL)
		}
	})

	for deadline := time.Now().Add(time.Minute); build == 0; time.Sleep(50 * time.Millisecond) {
		if b, err := os.ReadFile(pidFile); err == nil {
			build, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
		select {
		case err := <-ended:
			t.Fatalf("scripts/test.sh ended before its build started: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("scripts/test.sh started no build within a minute")
		}
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-ended:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 143 {
			t.Errorf("scripts/test.sh after SIGTERM: %v, want exit status 143", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("scripts/test.sh still running 30 s after SIGTERM, in a build that never ends")
	}
	if err := syscall.Kill(build, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the build (pid %d) outlived scripts/test.sh: kill -0 gave %v", build, err)
	}
}
