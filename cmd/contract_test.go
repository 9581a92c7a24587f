package cmd

import (
	"context"
	"encoding/json"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/vllmsim"
)

// The operator contract (docs/output.md): with --output json every command
// prints exactly one document on stdout, whatever the exit, with command,
// ok, exitCode and the error; the exit code means the same in every
// command. UPDATE_GOLDEN=1 rewrites testdata/contract.

// oneDocument decodes stdout as exactly one JSON document with the
// contract's fields, and checks them against the exit code.
func oneDocument(t *testing.T, code int, out, command string) result {
	t.Helper()
	var doc result
	d := json.NewDecoder(strings.NewReader(out))
	if err := d.Decode(&doc); err != nil {
		t.Fatalf("stdout is not one JSON document: %v\n%q", err, out)
	}
	if d.More() {
		t.Errorf("more than one document on stdout:\n%s", out)
	}
	if doc.Command != command || doc.OK != (code == 0) || doc.ExitCode != code || (code != 0) != (doc.Error != "") {
		t.Errorf("document %+v does not match exit %d of %s", doc, code, command)
	}
	return doc
}

// golden compares got with testdata/contract/name.json.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "contract", name+".json")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (UPDATE_GOLDEN=1 writes it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from its golden file (UPDATE_GOLDEN=1 rewrites it):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

// timings are the fields of a document that vary from run to run.
var timings = regexp.MustCompile(`("(?:[a-z0-9]*Seconds|seconds|achievedRatePerSecond)":) [0-9.e-]+`)

// writeKubeconfig writes a kubeconfig whose one context, "gke_my-proj_us-central1_gpu-hpa",
// names server.
func writeKubeconfig(t *testing.T, dir, server string) string {
	t.Helper()
	return writeFile(t, dir, "kubeconfig", `apiVersion: v1
kind: Config
clusters:
- name: gpu-hpa
  cluster:
    server: `+server+`
    insecure-skip-tls-verify: true
users:
- name: someone
  user:
    token: not-a-real-token
contexts:
- name: gke_my-proj_us-central1_gpu-hpa
  context: {cluster: gpu-hpa, user: someone}
current-context: gke_my-proj_us-central1_gpu-hpa
`)
}

// TestEarlyFailureDocuments: each way a command fails before it changes
// anything prints its one document, the same as in its golden file, and
// exits with the documented code; in text mode stdout stays empty.
func TestEarlyFailureDocuments(t *testing.T) {
	t.Parallel()
	const token = "hf_contractTOKEN"
	type tc struct {
		name string
		file string // ./vllm-hpa.yaml
		env  map[string]string
		args []string
		exit int
	}
	// A port nothing listens on: the connection is refused at once.
	down := "https://127.0.0.1:1"
	cases := []tc{
		{"bad-flag", "", nil, []string{"up", "--project", "my-proj", "--replicas-max", "3"}, exitcode.BadInput},
		{"bad-value", "", nil, []string{"up", "--project", "My-Proj"}, exitcode.BadInput},
		{"bad-config-file", "hpa: [unclosed\n", nil, []string{"render", "--project", "my-proj"}, exitcode.BadInput},
		{"unknown-config-key", "hpa:\n  max-replica: 3\n", nil, []string{"render", "--project", "my-proj"}, exitcode.BadInput},
		{"missing-token", "", nil, []string{"up", "--project", "my-proj"}, exitcode.BadInput},
		{"token-too-short", "", map[string]string{"HF_TOKEN": "hf_1"}, []string{"deploy", "--project", "my-proj"}, exitcode.BadInput},
		{"no-kubeconfig-up", "", map[string]string{"HF_TOKEN": token}, []string{"up", "--project", "my-proj"}, exitcode.Precondition},
		{"no-kubeconfig-status", "", nil, []string{"status", "--project", "my-proj"}, exitcode.Precondition},
		{"wrong-context", "", map[string]string{"HF_TOKEN": token, "KUBECONFIG": "$TMP/kubeconfig"}, []string{"up", "--project", "my-proj", "--context", "gke_other"}, exitcode.BadInput},
		{"cluster-down-up", "", map[string]string{"HF_TOKEN": token, "KUBECONFIG": "$TMP/kubeconfig"}, []string{"up", "--project", "my-proj"}, exitcode.Precondition},
		{"cluster-down-status", "", map[string]string{"KUBECONFIG": "$TMP/kubeconfig"}, []string{"status", "--project", "my-proj"}, exitcode.Precondition},
		{"cluster-down-verify", "", map[string]string{"KUBECONFIG": "$TMP/kubeconfig"}, []string{"verify", "--project", "my-proj"}, exitcode.Precondition},
		{"cluster-down-cleanup", "", map[string]string{"KUBECONFIG": "$TMP/kubeconfig"}, []string{"cleanup", "--project", "my-proj", "--skip", "identity"}, exitcode.Precondition},
		{"no-google-credentials-gke", "", map[string]string{"HF_TOKEN": token},
			[]string{"up", "--project", "my-proj", "--cluster", "gpu-hpa", "--location", "us-central1"}, exitcode.Precondition},
		{"load-bad-endpoint", "", nil, []string{"load", "--endpoint", "ftp://127.0.0.1:1", "--duration", "1s"}, exitcode.BadInput},
		{"load-nothing-answers", "", nil, []string{"load", "--endpoint", "http://127.0.0.1:1", "--rate", "5", "--duration", "1s"}, exitcode.CheckFailed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if c.file != "" {
				writeFile(t, dir, "vllm-hpa.yaml", c.file)
			}
			writeKubeconfig(t, dir, down)
			// No Google credentials (the file does not exist), named
			// in the documents the same way on every machine.
			env := map[string]string{"GOOGLE_APPLICATION_CREDENTIALS": dir + "/no-credentials.json"}
			for k, v := range c.env {
				env[k] = strings.ReplaceAll(v, "$TMP", dir)
			}
			code, out, errOut := run(t, dir, env, append(c.args, "-o", "json")...)
			if code != c.exit {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, c.exit, errOut)
			}
			doc := oneDocument(t, code, out, c.args[0])
			if !strings.Contains(errOut, "error: "+doc.Error) {
				t.Errorf("stderr does not end with the error:\n%s", errOut)
			}
			golden(t, c.name, timings.ReplaceAllString(strings.ReplaceAll(out, dir, "$TMP"), "$1 N"))

			// The same failure in text: on stdout nothing, or the
			// result (a run's one line, load's summary); in YAML the
			// same document.
			code, out, _ = run(t, dir, env, c.args...)
			if code != c.exit || (out != "" && c.args[0] != "load" && !strings.HasPrefix(out, c.args[0]+" failed in ")) {
				t.Errorf("text: exit %d, stdout %q", code, out)
			}
			code, out, _ = run(t, dir, env, append(c.args, "-o", "yaml")...)
			var y result
			if err := yaml.Unmarshal([]byte(out), &y); err != nil || y.Command != c.args[0] || y.ExitCode != code || y.OK || y.Error != doc.Error {
				t.Errorf("yaml document %+v (%v), exit %d:\n%s", y, err, code, out)
			}
		})
	}
}

// TestNoGoogleCredentialsOnACluster: with a cluster but no Google
// credentials, up and verify both exit 5 (identity needs the Google APIs)
// and say how to get credentials; --skip identity lets both run the
// Kubernetes parts.
func TestNoGoogleCredentialsOnACluster(t *testing.T) {
	inst := newInstance(t, "nocreds", "nocreds-ns")
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	for _, command := range []string{"up", "verify"} {
		code, out, errOut := kubeRun(t, inst, command, "-o", "json")
		if code != exitcode.Precondition {
			t.Errorf("%s: exit %d, want %d\n%s", command, code, exitcode.Precondition, errOut)
		}
		doc := oneDocument(t, code, out, command)
		if !strings.Contains(doc.Error, "GOOGLE_APPLICATION_CREDENTIALS") || !strings.Contains(doc.Error, "--skip identity") {
			t.Errorf("%s: the error does not say how to go on: %s", command, doc.Error)
		}
	}
	// As it says: without identity, both go on.
	if code, _, errOut := kubeRun(t, inst, "up", "--skip", "identity", "--timeout", "60s"); code != 0 && code != exitcode.Timeout {
		t.Fatalf("up --skip identity: exit %d\n%s", code, errOut)
	}
	code, out, errOut := kubeRun(t, inst, "verify", "--skip", "identity", "-o", "json")
	var doc verifyJSON
	strict(t, out, &doc)
	for _, s := range doc.Steps {
		if s.Step == "identity" {
			t.Errorf("verify --skip identity checked the identity: %+v", s)
		}
	}
	if code == exitcode.Precondition {
		t.Errorf("verify --skip identity: exit %d\n%s", code, errOut)
	}
}

// TestLoadInterrupted: Ctrl+C cuts a load given a --duration (exit 130, ok
// false, the summary) and ends one without a --duration the way it is
// meant to end (exit 0, ok true); nothing in flight is counted as failed
// (internal/load tests a cut connection).
func TestLoadInterrupted(t *testing.T) {
	t.Parallel()
	// Answers take 0.5 s, so requests are in flight when the run is cut.
	sim := vllmsim.New(vllmsim.Config{Model: "google/gemma-3-1b-it", TokenLatency: 10 * time.Millisecond, OutputTokens: 50, MaxNumSeqs: 256})
	srv := httptest.NewServer(sim.Handler())
	t.Cleanup(srv.Close) // the subtests run after this function returns
	for _, c := range []struct {
		duration string
		code     int
	}{{"1m", exitcode.Interrupted}, {"0", exitcode.OK}} {
		t.Run("duration "+c.duration, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(1500*time.Millisecond, cancel)
			code, out, errOut := runCtx(t, ctx, "", nil, "load", "--endpoint", srv.URL, "--rate", "20", "--duration", c.duration, "-o", "json")
			if code != c.code {
				t.Fatalf("exit %d, want %d\n%s", code, c.code, errOut)
			}
			oneDocument(t, code, out, "load")
			var doc loadJSON
			strict(t, out, &doc)
			if doc.Summary == nil || doc.EndedBy != "interrupted" || len(doc.Failed) != 0 || doc.Succeeded == 0 || doc.Sent != doc.Succeeded+doc.Cut {
				t.Errorf("summary of an interrupted load: %+v", doc.Summary)
			}
			if doc.OK != (c.code == 0) || strings.Contains(doc.Error+errOut, "context canceled") {
				t.Errorf("ok %v, error %q, stderr %q: want ok %v and no bare context error", doc.OK, doc.Error, errOut, c.code == 0)
			}
		})
	}
}

// TestLoadNamesItsMistakes: a model the server does not serve is named
// with the setting to change; a base URL ending in /v1, as OpenAI clients
// take it, reaches the server's real paths.
func TestLoadNamesItsMistakes(t *testing.T) {
	t.Parallel()
	sim := vllmsim.New(vllmsim.Config{Model: "google/gemma-3-1b-it", TokenLatency: time.Millisecond, OutputTokens: 2, MaxNumSeqs: 16})
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	code, _, errOut := run(t, "", nil, "load", "--endpoint", srv.URL, "--model", "google/gemma-2-2b-it", "--rate", "5", "--duration", "1s")
	if code != exitcode.CheckFailed || !strings.Contains(errOut, "The model `google/gemma-2-2b-it` does not exist") || !strings.Contains(errOut, "workload.model") {
		t.Errorf("a model the server does not serve: exit %d, want %d naming it and workload.model:\n%s", code, exitcode.CheckFailed, errOut)
	}
	for _, endpoint := range []string{srv.URL + "/v1", srv.URL + "/v1/", srv.URL + "/"} {
		if code, _, errOut := run(t, "", nil, "load", "--endpoint", endpoint, "--rate", "5", "--duration", "1s"); code != 0 {
			t.Errorf("--endpoint %s: exit %d\n%s", endpoint, code, errOut)
		}
	}
}

// TestTuneDocument: tune against a simulator prints one document with its
// levels, knee, recommendation and snippet; an objective nothing meets
// exits 3; no objective is bad input.
func TestTuneDocument(t *testing.T) {
	t.Parallel()
	sim := vllmsim.New(vllmsim.Config{Model: "google/gemma-3-1b-it", TokenLatency: 10 * time.Millisecond, BatchLatency: 4 * time.Millisecond, OutputTokens: 5, MaxNumSeqs: 64})
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	args := []string{"tune", "--endpoint", srv.URL, "--step-duration", "1s", "--warmup", "200ms", "--max-concurrency", "8", "-o", "json"}
	// 8 at once take 10 + 4 x 8 = 42 ms per token, far within 300 ms: the
	// knee is the ceiling (the precise knee is internal/tune's test).
	code, out, errOut := run(t, "", nil, append(args, "--slo-tpot", "300ms")...)
	var doc tuneJSON
	strict(t, out, &doc)
	if code != 0 || doc.Knee == nil || doc.Knee.Concurrency != 8 || doc.Recommendation == nil || doc.Recommendation.Target <= 0 ||
		!strings.Contains(doc.Snippet, "metric: running") || !strings.Contains(doc.Recommendation.Reasoning, "held up to --max-concurrency 8") {
		t.Fatalf("exit %d, document %s\n%s", code, out, errOut)
	}
	code, out, _ = run(t, "", nil, append(args, "--slo-tpot", "1ms")...)
	if d := oneDocument(t, code, out, "tune"); code != exitcode.CheckFailed || !strings.Contains(d.Error, "even one request at a time") {
		t.Errorf("unmeetable objective: exit %d, %s", code, d.Error)
	}
	if strings.Contains(out, `"recommendations": null`) || strings.Contains(out, `"levels": null`) {
		t.Errorf("a failed tune's document holds null where a list belongs:\n%s", out)
	}
	code, _, errOut = run(t, "", nil, append(args, "--slo-tpot", "0", "--slo-ttft", "0")...)
	if code != exitcode.BadInput || !strings.Contains(errOut, "--slo-ttft, --slo-tpot or --slo-latency") {
		t.Errorf("no objective: exit %d\n%s", code, errOut)
	}
}

// TestTuneServerNeverAnswers: a server that accepts connections and never
// answers ends tune within its bounds (each request and gauge read within
// --request-timeout), exit 3, naming the timeouts; it does not hang.
func TestTuneServerNeverAnswers(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never written to
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang fails, not stalls, the suite
	defer cancel()
	code, out, errOut := runCtx(t, ctx, "", nil, "tune", "--endpoint", "http://"+l.Addr().String(), "--slo-tpot", "100ms",
		"--request-timeout", "1s", "--step-duration", "1s", "--warmup", "0s", "--max-concurrency", "2", "-o", "json")
	if ctx.Err() != nil {
		t.Fatalf("tune did not end within a minute against a server that never answers")
	}
	d := oneDocument(t, code, out, "tune")
	if code != exitcode.CheckFailed || !strings.Contains(d.Error, "no answer in the measured window") {
		t.Errorf("exit %d, %s\n%s", code, d.Error, errOut)
	}
}
