package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Every command line in README.md and docs/ runs, as written, by these
// tests: the ```sh blocks of README.md and docs/*.md, and the Examples of
// docs/commands (the commands' own help), the latter on emulators of
// their own. A block is one bash script
// (set -euo pipefail), run from the repository's root, on the local GKE
// emulator the README starts (project my-proj, cluster gpu-hpa, the names
// the docs use), with its env file sourced as the README says.
//
// What the test changes, and why:
//   - the README's emulator block runs first (the other blocks need its
//     cluster) and its emulator runs until the end; `make demo` (and
//     `BACKEND=native make demo`) run in a test of their own, as each
//     starts an emulator of its own; the blocks and examples that need no
//     cluster (builds, the simulator, load and tune given an --endpoint)
//     run in a test of their own too, beside the others, without an
//     emulator;
//   - /tmp/emu becomes a directory of the test's, so that runs on one
//     machine do not meet;
//   - `hf_...`, the README's placeholder for a token, becomes a token;
//   - `make install` installs into bin/ (GOBIN), on PATH,
//     and what the blocks build is built once before the first block
//     (buildOnce), so that their builds find it up to date;
//   - kubectl is the one of the Kubernetes binaries' cache, on PATH;
//   - background jobs a block starts (`vllm-hpa sim &`) end with it;
//   - the README's blocks that need a cluster run on the emulator its
//     block starts, and the commands' examples on emulators the test
//     starts, all at the e2e tests' intervals (shortEmulator,
//     shortSettings) rather than the fast profile's GKE 15 s and
//     vllm-hpa's 30 s scale-down window: the same steps in seconds (the
//     README's up and verify --load took 105 of the test's 197 s in make
//     test); `make demo` runs at its own.
//
// Not run: `make test` (this test runs inside it). gcloud lines appear
// only as fixes and set-up steps for a real project, in prose or in
// ```text blocks (docs/troubleshooting.md, docs/getting-started.md), and
// nothing here calls Google.

// docBlock is one block of commands of a document.
type docBlock struct {
	file string // relative to the repository
	line int    // of the opening fence
	text string
}

func (b docBlock) String() string { return fmt.Sprintf("%s:%d", b.file, b.line) }

// commandLike are lines that run something: a fenced block holding one
// must say what it is (```sh to be run, ```text when it is not a command).
var commandLike = regexp.MustCompile(`^\s*(\$ )?(vllm-hpa|bin/|scripts/|make |kubectl |gcloud |go |export |\. )`)

// fencedBlocks returns the ```sh blocks of a Markdown file, and the
// unlabelled blocks that look like commands (an error).
func fencedBlocks(t *testing.T, repo, file string) (sh []docBlock, unlabelled []docBlock) {
	t.Helper()
	f, err := os.Open(filepath.Join(repo, file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var cur *docBlock
	lang := ""
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		if strings.HasPrefix(l, "```") {
			if cur == nil {
				cur, lang = &docBlock{file: file, line: n}, strings.TrimPrefix(l, "```")
				continue
			}
			switch {
			case lang == "sh":
				sh = append(sh, *cur)
			case lang == "":
				for _, bl := range strings.Split(cur.text, "\n") {
					if commandLike.MatchString(bl) {
						unlabelled = append(unlabelled, *cur)
						break
					}
				}
			}
			cur = nil
			continue
		}
		if cur != nil {
			cur.text += l + "\n"
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return sh, unlabelled
}

// examples returns the Examples block of a docs/commands page.
func examples(t *testing.T, repo, file string) (docBlock, bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo, file))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if l != "### Examples" {
			continue
		}
		for j := i + 1; j < len(lines); j++ {
			if lines[j] != "```" {
				continue
			}
			blk := docBlock{file: file, line: j + 1}
			for k := j + 1; k < len(lines) && lines[k] != "```"; k++ {
				blk.text += strings.TrimSpace(lines[k]) + "\n"
			}
			return blk, true
		}
	}
	return docBlock{}, false
}

// blockRunner runs blocks as bash scripts in one environment.
type blockRunner struct {
	t       *testing.T
	repo    string
	env     []string
	emuDir  string
	logDir  string
	count   int
	keepers []int // process groups left running (the emulator's block)
}

// The e2e tests' intervals for the documented blocks, in place of the fast
// profile's (GKE's 15 s scrape and HPA sync, a 3 s pull, native metrics
// every 5 s, IAM blind to a new account for 5 s) and vllm-hpa's 30 s
// scale-down window: their scale-ups and scale-downs take seconds rather
// than half a minute each, through the same steps; and lean control
// planes (--lean: several emulators share the 2 cores). The emulator's
// are flags added to the emulator's command line (the README's, and the
// examples' emulator, the test's own); vllm-hpa's are in the blocks'
// environment, where a block's own flags still win.
var (
	shortEmulator = "--hpa-sync-period 2s --image-pull 1s --native-interval 2s --new-account-window 1s --lean"
	shortSettings = []string{"VLLM_HPA_MONITORING_INTERVAL=2s", "VLLM_HPA_HPA_SCALE_DOWN_STABILIZATION=5s"}
)

// script is b's text with the test's substitutions, after the settings of
// the emulator (once it runs) and a trap that ends the block's background
// jobs unless keep.
func (r *blockRunner) script(b docBlock, keep bool) string {
	text := strings.ReplaceAll(b.text, "/tmp/emu", r.emuDir)
	text = strings.ReplaceAll(text, "HF_TOKEN=hf_...", "HF_TOKEN=hf_docsTestToken")
	var s strings.Builder
	s.WriteString("set -euo pipefail\n")
	fmt.Fprintf(&s, "if [ -f %s/env ]; then . %s/env; fi\n", r.emuDir, r.emuDir)
	if !keep {
		s.WriteString("trap 'jobs -p | xargs -r kill 2>/dev/null || true' EXIT\n")
	}
	s.WriteString(text)
	return s.String()
}

// run runs b in dir within timeout and fails the test when it fails,
// with its output. keep leaves its background jobs running (their
// process group is killed at the end of the test).
func (r *blockRunner) run(b docBlock, dir string, timeout time.Duration, keep bool) {
	t := r.t
	t.Helper()
	r.count++
	log, err := os.Create(filepath.Join(r.logDir, fmt.Sprintf("block-%02d.log", r.count)))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	if fixedPort.MatchString(b.text) {
		fixedPorts.Lock()
		defer fixedPorts.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := exec.CommandContext(ctx, "bash", "-c", r.script(b, keep))
	c.Dir, c.Env = dir, r.env
	// A file, not a pipe: a job left running keeps no pipe open that Wait
	// would wait for.
	c.Stdout, c.Stderr = log, log
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	start := time.Now()
	if err = c.Start(); err == nil {
		blockGroups.add(c.Process.Pid)
		err = c.Wait()
		if keep {
			r.keepers = append(r.keepers, c.Process.Pid)
		} else {
			blockGroups.remove(c.Process.Pid)
		}
	}
	out, _ := os.ReadFile(log.Name())
	if err != nil {
		t.Fatalf("%s failed (%v) after %s:\n%s\n--- output\n%s", b, err, time.Since(start).Round(time.Second), b.text, tail(string(out), 60))
	}
	t.Logf("%s passed in %s", b, time.Since(start).Round(100*time.Millisecond))
}

// fixedPort finds a block that listens on or sends to a fixed loopback
// port (the simulator's default, 127.0.0.1:8081, as a user types it). Such
// blocks run one at a time, whichever tests they are in (the README's and
// the sim command's example both start a simulator on it): two at once
// find the port taken.
var (
	fixedPort  = regexp.MustCompile(`127\.0\.0\.1:[0-9]+`)
	fixedPorts sync.Mutex
)

// stopKept ends the process groups left running, as Ctrl+C would, and
// waits for the emulator to remove its env file (it does on SIGTERM).
func (r *blockRunner) stopKept() {
	for _, pgid := range r.keepers {
		syscall.Kill(-pgid, syscall.SIGTERM)
		blockGroups.remove(pgid)
	}
	r.keepers = nil
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(r.emuDir, "env")); os.IsNotExist(err) {
			return
		}
	}
	r.t.Errorf("the emulator did not stop within 30 s of SIGTERM")
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// exampleOrder is the order the commands' examples that need a cluster
// run in, each list on an emulator of its own, beside the other: build
// the stack, check it, use it, then take it down; on the second, the root
// command's (a whole cycle of its own), then deploy's, whose server tune's
// knee search measures (the longest example, 30 s alone: the lists take
// about as long as each other). The simulator's needs no cluster
// (TestDocumentedWithoutCluster).
var exampleOrder = [][]string{
	{"preflight", "up", "verify", "load", "render", "status", "config_view", "version", "cleanup"},
	{"vllm-hpa", "deploy", "tune"},
}

// documented are the blocks of commands of README.md and docs/: the
// README's emulator block, the `make demo` blocks, the rest, and the
// commands' examples by command.
type documented struct {
	repo           string
	emulator, demo []docBlock
	rest           []docBlock
	examples       map[string]docBlock
	// clusterFree are the blocks and examples that need no cluster
	// (clusterFree), out of rest and examples.
	clusterFree []docBlock
}

// clusterFree reports whether a block's commands need no cluster: builds,
// the simulator (in the background, with the sleep that lets it listen),
// and load and tune given an --endpoint (without tune's --apply, which
// sets the HPA), each a command of its own. Such blocks run in no
// emulator's slot (TestDocumentedWithoutCluster).
func clusterFree(b docBlock) bool {
	for _, l := range strings.Split(b.text, "\n") {
		l, _, _ = strings.Cut(l, "#")
		l = strings.TrimSpace(l)
		switch {
		case l == "", l == "make build", l == "make install", simLine.MatchString(l):
		case endpointLine.MatchString(l) && !strings.Contains(l, "--apply"):
		default:
			return false
		}
	}
	return true
}

// TestClusterFree: what may run without an emulator, and what only looks
// like it.
func TestClusterFree(t *testing.T) {
	t.Parallel()
	for text, want := range map[string]bool{
		"make build\nmake install\n": true,
		"vllm-hpa sim & sleep 1                        # the simulator, in the background\nvllm-hpa load --endpoint http://127.0.0.1:8081 --rate 5 --duration 10s\n": true,
		"vllm-hpa sim --listen 127.0.0.1:8082 --output-tokens 10 & sleep 1\nvllm-hpa tune --endpoint http://127.0.0.1:8082 --slo-tpot 60ms\n":                        true,
		"vllm-hpa tune --endpoint http://127.0.0.1:8082 --slo-tpot 60ms --apply\n":                                                                                   false, // sets the HPA
		"vllm-hpa sim & kubectl get pods\n":                                     false,
		"vllm-hpa load --endpoint http://127.0.0.1:8081 | kubectl apply -f -\n": false,
		"vllm-hpa load --endpoint http://127.0.0.1:8081 && vllm-hpa up\n":       false,
		"vllm-hpa sim; vllm-hpa up\n":                                           false,
		"vllm-hpa verify --endpoint http://127.0.0.1:8081\n":                    false,
		"vllm-hpa load --project my-proj --rate 2 --duration 10s\n":             false, // a port-forward to a pod
		"make demo\n": false,
		"export HF_TOKEN=hf_...\nvllm-hpa up --project my-proj\n": false,
	} {
		if got := clusterFree(docBlock{text: text}); got != want {
			t.Errorf("clusterFree(%q) = %v, want %v", text, got, want)
		}
	}
}

var (
	simLine      = regexp.MustCompile(`^vllm-hpa sim( [^|;&]*)?( & sleep [0-9.]+)?$`)
	endpointLine = regexp.MustCompile(`^vllm-hpa (load|tune) [^|;&]*--endpoint [^|;&]*$`)
)

func readDocumented(t *testing.T) documented {
	t.Helper()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	d := documented{repo: repo, examples: map[string]docBlock{}}

	// Every block of commands, and none that is not labelled.
	var sh []docBlock
	docs, _ := filepath.Glob(filepath.Join(repo, "docs", "*.md"))
	files := []string{"README.md"}
	for _, f := range docs {
		files = append(files, strings.TrimPrefix(f, repo+"/"))
	}
	for _, f := range files {
		blocks, unlabelled := fencedBlocks(t, repo, f)
		sh = append(sh, blocks...)
		for _, u := range unlabelled {
			t.Errorf("%s: a block of commands without a language: label it ```sh (this test runs it) or ```text", u)
		}
	}
	pages, _ := filepath.Glob(filepath.Join(repo, "docs", "commands", "vllm-hpa*.md"))
	for _, p := range pages {
		name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), "vllm-hpa_"), ".md")
		if b, ok := examples(t, repo, strings.TrimPrefix(p, repo+"/")); ok {
			switch {
			case clusterFree(b):
				d.clusterFree = append(d.clusterFree, b)
			case !slices.Contains(slices.Concat(exampleOrder...), name):
				t.Errorf("%s has examples that exampleOrder does not place", b)
			default:
				d.examples[name] = b
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, b := range sh {
		switch {
		case strings.Contains(b.text, "vllm-hpa-emulator --dir /tmp/emu"):
			d.emulator = append(d.emulator, b)
		case strings.HasSuffix(strings.TrimSpace(b.text), "make demo"): // BACKEND=native make demo too
			d.demo = append(d.demo, b)
		case strings.HasPrefix(strings.TrimSpace(b.text), "make test"):
			t.Logf("%s not run: this test runs inside `make test` (or `make test-e2e`)", b)
		case clusterFree(b):
			d.clusterFree = append(d.clusterFree, b)
		default:
			d.rest = append(d.rest, b)
		}
	}
	if len(d.emulator) != 1 || len(d.demo) == 0 {
		t.Fatalf("want the README's emulator block once and `make demo`; found %d and %d", len(d.emulator), len(d.demo))
	}
	return d
}

// built is the build of the binaries the blocks build and install
// (bin/vllm-hpa, bin/vllm-hpa-emulator; GOBIN is bin/ here, so `make
// install` installs the same file), built once before the first block
// runs. The Makefile's flags are the commit's, not the clock's, so each
// later `make build`, `make install`, `make emulator` or `make demo` of a
// block finds its target up to date and links nothing, as on a user's
// second run: the blocks still run as written, without a link each (5 to
// 14 s of CPU) on the way.
var built struct {
	once sync.Once
	err  error
}

// buildOnce builds what the blocks build, in their environment.
func (r *blockRunner) buildOnce() {
	built.once.Do(func() {
		c := exec.Command("make", "-s", "build", "emulator", "install")
		c.Dir, c.Env = r.repo, r.env
		if out, err := c.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("make build emulator install: %v\n%s", err, out)
		}
	})
	if built.err != nil {
		r.t.Fatal(built.err)
	}
}

// newBlockRunner runs blocks in the user's environment, with vllm-hpa
// installed into bin/ (GOBIN, on PATH), kubectl, the caches kept (no
// rebuild of the Kubernetes binaries) and kubectl's and vllm-hpa's
// discovery caches its own.
func newBlockRunner(t *testing.T, repo string, extra ...string) *blockRunner {
	bin := k8sBin(t)
	tmp := t.TempDir()
	gobin := filepath.Join(repo, "bin")
	r := &blockRunner{t: t, repo: repo, emuDir: filepath.Join(tmp, "emu"), logDir: filepath.Join(tmp, "logs")}
	os.MkdirAll(r.logDir, 0o755)
	cache := filepath.Dir(filepath.Dir(bin))
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "VLLM_HPA_") || k == "HF_TOKEN" || k == "KUBECONFIG" || k == "GOBIN" || k == "PATH" || k == "EMULATOR_ARGS" {
			continue
		}
		r.env = append(r.env, kv)
	}
	r.env = append(r.env, "PATH="+gobin+":"+bin+":"+os.Getenv("PATH"), "GOBIN="+gobin, "VLLM_HPA_CACHE="+cache,
		"KUBECACHEDIR="+filepath.Join(tmp, "kubecache"), "NO_COLOR=1")
	r.env = append(r.env, extra...)
	t.Cleanup(r.stopKept)
	r.buildOnce()
	return r
}

// fullLengthEnv, set, runs the demos at the gke profile's own timings
// (make test-e2e); unset, with every lag of the profile in its order at a
// fiftieth of its length (make test).
const fullLengthEnv = "VLLM_HPA_E2E_FULL"

// TestDocumentedCommands runs every block that needs a cluster on the
// README's emulator.
func TestDocumentedCommands(t *testing.T) {
	parallel(t)
	d := readDocumented(t)
	r := newBlockRunner(t, d.repo, shortSettings...)
	emulator := d.emulator[0]
	if !strings.Contains(emulator.text, "--profile fast") {
		t.Fatalf("%s does not start the emulator with --profile fast:\n%s", emulator, emulator.text)
	}
	emulator.text = strings.Replace(emulator.text, "--profile fast", "--profile fast "+shortEmulator, 1)
	r.run(emulator, d.repo, 10*time.Minute, true)
	for _, b := range d.rest {
		r.run(b, d.repo, 10*time.Minute, false)
	}
}

// TestDocumentedWithoutCluster runs the blocks and examples that need no
// cluster, beside the others and in no emulator's slot: they wait on
// nothing an emulator does (the README's simulator, load and tune took 40
// of its emulator's 150 s in make test).
func TestDocumentedWithoutCluster(t *testing.T) {
	t.Parallel()
	d := readDocumented(t)
	r := newBlockRunner(t, d.repo, shortSettings...)
	for _, b := range d.clusterFree {
		r.run(b, d.repo, 10*time.Minute, false)
	}
}

// examplesEmulator starts an emulator as the README's block does (its
// binaries built by buildOnce), in a directory of its own, at the e2e
// tests' intervals.
var examplesEmulator = docBlock{file: "(the examples' emulator)", text: `rm -f /tmp/emu/env
bin/vllm-hpa-emulator --dir /tmp/emu --k8s-bin "$(scripts/build-k8s-cache.sh)" --profile fast ` + shortEmulator + ` &
until [ -f /tmp/emu/env ]; do kill -0 $! || break; sleep 1; done
[ -f /tmp/emu/env ] # else the emulator exited: the examples run on no cluster at all
`}

// TestEmulatorBlockWithoutEmulator: the README's emulator block, and the
// examples' like it, fail at once when the emulator does not start (here:
// no Kubernetes binaries), even over the env file a killed emulator left
// behind. Before, the wait looped until the test's timeout; then, with a
// stale env file, it ended at once and the commands after it ran on that
// file's dead endpoints.
func TestEmulatorBlockWithoutEmulator(t *testing.T) {
	t.Parallel()
	d := readDocumented(t)
	r := newBlockRunner(t, d.repo)
	const k8sBin = `--k8s-bin "$(scripts/build-k8s-cache.sh)"`
	for _, b := range []docBlock{d.emulator[0], examplesEmulator} {
		if !strings.Contains(b.text, k8sBin) {
			t.Fatalf("%s does not start the emulator with %s:\n%s", b, k8sBin, b.text)
		}
		b.text = strings.Replace(b.text, k8sBin, "--k8s-bin /nonexistent", 1)
		// The README's goes on to source the env file and run up.
		const sourced = "SOURCED-AN-ENV-FILE"
		b.text = strings.ReplaceAll(b.text, ". /tmp/emu/env && ", ". /tmp/emu/env && echo "+sourced+" && ")
		os.MkdirAll(r.emuDir, 0o755)
		if err := os.WriteFile(filepath.Join(r.emuDir, "env"), []byte("export VLLM_HPA_PROJECT=stale-proj\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		c := exec.CommandContext(ctx, "bash", "-c", r.script(b, false))
		c.Dir, c.Env = d.repo, r.env
		out, err := c.CombinedOutput()
		timedOut := ctx.Err() != nil
		cancel()
		if err == nil || timedOut || strings.Contains(string(out), sourced) {
			t.Errorf("%s with no emulator: %v (timed out: %v), want a failure before the timeout and before any env file is sourced:\n%s", b, err, timedOut, out)
		}
	}
}

// TestDocumentedExamples runs the commands' examples (their help's
// Examples), each list of exampleOrder on an emulator of its own (and in
// an emulator's slot): beside the blocks rather than after them, as they
// need nothing the blocks leave.
func TestDocumentedExamples(t *testing.T) {
	t.Parallel()
	d := readDocumented(t)
	for i, names := range exampleOrder {
		t.Run(fmt.Sprint(names[0], "..."), func(t *testing.T) {
			parallel(t)
			r := newBlockRunner(t, d.repo, shortSettings...)
			r.run(examplesEmulator, d.repo, 10*time.Minute, true)
			work := t.TempDir() // files the examples write (verify --report)
			for _, name := range exampleOrder[i] {
				if b, ok := d.examples[name]; ok {
					r.run(b, work, 10*time.Minute, false)
				}
			}
		})
	}
}

// TestDocumentedDemo runs the `make demo` lines, each with an emulator
// and a copy of bin/'s binaries of its own, beside each other (each takes
// an emulator's slot): on the gke profile, every lag divided by 50 (make
// test), or at full length with VLLM_HPA_E2E_FULL (make test-e2e).
func TestDocumentedDemo(t *testing.T) {
	t.Parallel()
	d := readDocumented(t)
	compressed, timeout := "EMULATOR_ARGS=--compress 50 --compress-metric-path --lean", 5*time.Minute
	if os.Getenv(fullLengthEnv) != "" {
		compressed, timeout = "EMULATOR_ARGS=", 15*time.Minute
	}
	for _, b := range d.demo {
		t.Run(b.String(), func(t *testing.T) {
			parallel(t)
			newBlockRunner(t, d.repo, compressed).run(b, d.repo, timeout, false)
		})
	}
}
