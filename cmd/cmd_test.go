package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vllm-hpa/vllm-hpa/internal/cmdutil"
	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/environ"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/iostreams"
	"github.com/vllm-hpa/vllm-hpa/internal/output"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// run runs the CLI in dir (for ./vllm-hpa.yaml; a new temporary directory
// when "") with exactly env as its environment, plus a HOME of its own
// unless env sets one. Nothing process-wide changes, so tests may run it
// in parallel.
func run(t *testing.T, dir string, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	return runCtx(t, context.Background(), dir, env, args...)
}

// runCtx is run with a context the test may cancel, as SIGINT does.
func runCtx(t *testing.T, ctx context.Context, dir string, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	e := map[string]string{"HOME": dir}
	for k, v := range env {
		e[k] = v
	}
	streams, out, errOut := iostreams.Test()
	if in, ok := ctx.Value(stdinKey{}).(string); ok {
		streams.In = strings.NewReader(in)
	}
	f := cmdutil.New(streams, environ.New(e, dir))
	if edit, ok := ctx.Value(depsEditKey{}).(func(*step.Deps)); ok {
		// The real connection, then the test's change to what it gave.
		real := cmdutil.New(streams, environ.New(e, dir))
		f.Connector = func(ctx context.Context, cfg *config.Config, need cmdutil.Need, rec *output.Progress) (step.Deps, error) {
			deps, err := real.Connect(ctx, cfg, need, rec)
			edit(&deps)
			return deps, err
		}
	}
	// Each run's duration, in -v output: where a test's time goes.
	began := time.Now()
	code := Run(ctx, f, args)
	t.Logf("vllm-hpa %s: exit %d in %s", strings.Join(args, " "), code, time.Since(began).Round(10*time.Millisecond))
	return code, out.String(), errOut.String()
}

// depsEditKey carries, in a test command's context, a change to the
// clients its real connection gives (a Google connection that failed).
type depsEditKey struct{}

// stdinKey carries a test command's standard input in its context.
type stdinKey struct{}

// runStdin is run with stdin as the command's standard input.
func runStdin(t *testing.T, dir string, env map[string]string, stdin string, args ...string) (int, string, string) {
	t.Helper()
	return runCtx(t, context.WithValue(context.Background(), stdinKey{}, stdin), dir, env, args...)
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// badInputCase is one bad input: a config file, environment or flags, and
// the field the error must name.
type badInputCase struct {
	name  string
	file  string // ./vllm-hpa.yaml content, if any
	env   map[string]string
	args  []string
	field string // must appear in stderr
}

func badInputCases() []badInputCase {
	type tc = badInputCase
	p := []string{"--project", "my-proj"}
	with := func(a ...string) []string { return append(append([]string{"render"}, p...), a...) }
	cases := []tc{
		{"project missing", "", nil, []string{"render"}, "project"},
		{"project uppercase", "", nil, []string{"render", "--project", "My-Proj"}, "project"},
		{"project too short", "", nil, []string{"render", "--project", "abc"}, "project"},
		{"project ends with hyphen", "", nil, []string{"render", "--project", "my-proj-"}, "project"},
		{"project from env bad", "", map[string]string{"VLLM_HPA_PROJECT": "1proj"}, []string{"render"}, "VLLM_HPA_PROJECT"},
		{"namespace not DNS", "", nil, with("--namespace", "Default"), "workload.namespace"},
		{"namespace too long", "", nil, with("--namespace", strings.Repeat("a", 64)), "workload.namespace"},
		{"deployment name", "", nil, with("--deployment", "vllm_gemma"), "workload.deployment"},
		{"service name starts with digit", "", nil, with("--service", "1llm"), "service.name"},
		{"app label value", "", nil, with("--app-label", "gemma server"), "workload.app-label"},
		{"instance label too long", "", nil, with("--instance", strings.Repeat("x", 64)), "instance"},
		{"min replicas zero", "", nil, with("--min-replicas", "0"), "hpa.min-replicas"},
		{"max below min", "", nil, with("--min-replicas", "3", "--max-replicas", "2"), "hpa.max-replicas"},
		{"max not a number", "", nil, with("--max-replicas", "five"), "max-replicas"},
		{"target zero", "", nil, with("--target", "0"), "hpa.target"},
		{"target negative", "", nil, with("--target", "-1"), "hpa.target"},
		{"metric unknown", "", nil, with("--metric", "gpu"), "hpa.metric"},
		{"kv-cache target above 1", "", nil, with("--metric", "kv-cache", "--target", "80"), "hpa.target"},
		{"combined metric twice", "", nil, with("--metric", "waiting+waiting"), "hpa.metric"},
		{"combined metric unknown", "", nil, with("--metric", "waiting+gpu"), "hpa.metric"},
		{"combined metric empty part", "", nil, with("--metric", "waiting+"), "hpa.metric"},
		{"combined metric with spaces", "", nil, with("--metric", "waiting + kv-cache"), "hpa.metric"},
		{"combined metric comma", "", nil, with("--metric", "waiting,kv-cache"), "hpa.metric"},
		{"combined kv-cache target above 1", "", nil, with("--metric", "waiting+kv-cache", "--kv-cache-target", "80"), "hpa.kv-cache-target"},
		{"combined further target zero in env", "", map[string]string{"VLLM_HPA_HPA_RUNNING_TARGET": "0"}, with("--metric", "kv-cache+running", "--target", "0.8"), "hpa.running-target"},
		{"first metric's own target unlike hpa.target", "hpa:\n  waiting-target: 3\n", nil, with("--metric", "waiting+kv-cache", "--target", "5"), "hpa.waiting-target"},
		{"unused metric's target out of range", "", nil, with("--metric", "waiting", "--kv-cache-target", "5"), "hpa.kv-cache-target"},
		{"backend unknown", "", nil, with("--backend", "stackdriver"), "hpa.backend"},
		{"scrape interval not a duration", "", nil, with("--scrape-interval", "fast"), "scrape-interval"},
		{"interval in file without unit", "monitoring:\n  interval: 15\n", nil, with(), "monitoring.interval"},
		{"timeout zero in env", "", map[string]string{"VLLM_HPA_TIMEOUTS_DEPLOY": "0s"}, with(), "timeouts.deploy"},
		{"stabilization fractional", "hpa:\n  scale-down-stabilization: 1.5s\n", nil, with(), "hpa.scale-down-stabilization"},
		{"image with spaces", "", nil, with("--image", "vllm/vllm openai"), "workload.image"},
		{"image uppercase repo", "", nil, with("--image", "VLLM/vllm-openai:v1"), "workload.image"},
		{"adapter tag bad", "", nil, with("--adapter-tag", ":latest"), "adapter.tag"},
		{"accelerator unknown form", "", nil, with("--accelerator", "tpu-v5"), "workload.accelerator"},
		{"gpu driver version", "workload:\n  gpu-driver-version: newest\n", nil, with(), "workload.gpu-driver-version"},
		{"identity mode", "", nil, with("--identity-mode", "keys"), "identity.mode"},
		{"gsa name too short", "", nil, with("--gsa-name", "gsa"), "identity.gsa-name"},
		{"cluster without location", "", nil, with("--cluster", "gpu"), "location"},
		{"location malformed", "", nil, with("--cluster", "gpu", "--location", "central"), "location"},
		{"cpu quantity", "workload:\n  cpu: two\n", nil, with(), "workload.cpu"},
		{"port out of range", "workload:\n  port: 70000\n", nil, with(), "workload.port"},
		{"log level", "workload:\n  log-level: verbose\n", nil, with(), "workload.log-level"},
		{"unknown key in file", "hpa:\n  max-replica: 3\n", nil, with(), "hpa.max-replica"},
		{"config file not YAML", "hpa: [unclosed\n", nil, with(), "--config"},
		{"hf token file missing", "", nil, []string{"up", "--dry-run", "--project", "my-proj", "--hf-token-file", "/nonexistent/token"}, "hf-token.file"},
		{"unknown flag", "", nil, with("--replicas-max", "3"), "replicas-max"},
		{"output format", "", nil, with("--output", "xml"), "--output"},
		{"render unknown step", "", nil, []string{"render", "identity", "--project", "my-proj"}, "step"},
		{"impersonate not an email", "", nil, with("--impersonate-service-account", "ci-bot"), "identity.impersonate-service-account"},
		{"monitoring path", "monitoring:\n  path: metrics\n", nil, with(), "monitoring.path"},
		{"hf token file empty", "", nil, []string{"deploy", "--dry-run", "--project", "my-proj", "--hf-token-file", "/dev/null"}, "hf-token.file"},
	}
	return cases
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	cases := badInputCases()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if c.file != "" {
				writeFile(t, dir, "vllm-hpa.yaml", c.file)
			}
			code, out, errOut := run(t, dir, c.env, c.args...)
			if code != exitcode.BadInput {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, exitcode.BadInput, errOut)
			}
			if !strings.Contains(errOut, c.field) {
				t.Errorf("stderr does not name %q:\n%s", c.field, errOut)
			}
			if out != "" {
				t.Errorf("stdout not empty on bad input:\n%s", out)
			}
		})
	}
	if len(cases) < 25 {
		t.Fatalf("only %d bad-input cases", len(cases))
	}
}

// TestPrecedence checks flag > env > file > default on one key, and that
// each layer alone takes effect.
func TestPrecedence(t *testing.T) {
	t.Parallel()
	get := func(t *testing.T, file string, env map[string]string, args ...string) map[string]any {
		dir := t.TempDir()
		if file != "" {
			writeFile(t, dir, "vllm-hpa.yaml", file)
		}
		code, out, errOut := run(t, dir, env, append([]string{"config", "view", "-o", "json", "--project", "my-proj"}, args...)...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return m["config"].(map[string]any)["hpa"].(map[string]any)
	}
	file := "hpa:\n  max-replicas: 7\n  target: 3\n"
	env := map[string]string{"VLLM_HPA_HPA_MAX_REPLICAS": "8"}
	cases := []struct {
		name string
		file string
		env  map[string]string
		args []string
		want float64
	}{
		{"default", "", nil, nil, 5},
		{"file", file, nil, nil, 7},
		{"env over file", file, env, nil, 8},
		{"flag over env", file, env, []string{"--max-replicas", "9"}, 9},
		{"flag alone", "", nil, []string{"--max-replicas", "6"}, 6},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hpa := get(t, c.file, c.env, c.args...)
			if hpa["max-replicas"] != c.want {
				t.Errorf("max-replicas = %v, want %v", hpa["max-replicas"], c.want)
			}
		})
	}
	t.Run("file keeps other keys when env sets one", func(t *testing.T) {
		hpa := get(t, file, env)
		if hpa["target"] != 3.0 {
			t.Errorf("target = %v, want 3 from the file", hpa["target"])
		}
	})
	t.Run("--config over ./vllm-hpa.yaml", func(t *testing.T) {
		other := writeFile(t, t.TempDir(), "other.yaml", "hpa:\n  max-replicas: 4\n")
		hpa := get(t, file, nil, "--config", other)
		if hpa["max-replicas"] != 4.0 {
			t.Errorf("max-replicas = %v, want 4 from --config", hpa["max-replicas"])
		}
	})
	t.Run("env durations", func(t *testing.T) {
		hpa := get(t, "", map[string]string{"VLLM_HPA_HPA_SCALE_DOWN_STABILIZATION": "2m"})
		if hpa["scale-down-stabilization"] != "2m0s" {
			t.Errorf("scale-down-stabilization = %v", hpa["scale-down-stabilization"])
		}
	})
}

func TestTokenRedactedEverywhere(t *testing.T) {
	t.Parallel()
	const token = "hf_plantedTOKENvalue987"
	dir := t.TempDir()
	tokenFile := writeFile(t, dir, "token", token+"\n")
	for _, args := range [][]string{
		{"config", "view"},
		{"config", "view", "-o", "json"},
		{"render"},
		{"deploy", "--dry-run"},
		{"up", "--dry-run", "-o", "json"},
		{"up", "--dry-run", "-o", "yaml"},
		{"render", "-v"},
	} {
		for _, env := range []map[string]string{{"HF_TOKEN": token}, {"VLLM_HPA_HF_TOKEN_FILE": tokenFile}} {
			code, out, errOut := run(t, dir, env, append(args, "--project", "my-proj")...)
			if code != 0 {
				t.Fatalf("%v: exit %d: %s", args, code, errOut)
			}
			if strings.Contains(out+errOut, token) {
				t.Errorf("%v with %v: token appears in output", args, env)
			}
		}
	}
}

func TestDryRunJSON(t *testing.T) {
	t.Parallel()
	code, out, errOut := run(t, "", nil, "up", "--dry-run", "-o", "json", "--project", "my-proj")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var plan planJSON
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("stdout is not the plan JSON: %v\n%s", err, out)
	}
	var steps []string
	objects := 0
	var members []string
	for _, s := range plan.Steps {
		steps = append(steps, s.Step)
		objects += len(s.Objects)
		for _, c := range s.GCPCalls {
			members = append(members, c.Member)
		}
	}
	if strings.Join(steps, ",") != "deploy,monitor,adapter,identity,hpa" {
		t.Errorf("steps = %v", steps)
	}
	// 18 objects, plus the ServiceAccount the identity step annotates.
	if objects != 19 {
		t.Errorf("objects = %d, want 19", objects)
	}
	want := []string{
		"serviceAccount:metrics-adapter-gsa@my-proj.iam.gserviceaccount.com",
		"serviceAccount:metrics-adapter-gsa@my-proj.iam.gserviceaccount.com",
		"serviceAccount:my-proj.svc.id.goog[custom-metrics/custom-metrics-stackdriver-adapter]",
	}
	if strings.Join(members, " ") != strings.Join(want, " ") {
		t.Errorf("members = %v, want %v", members, want)
	}
}

func TestDryRunDirectIdentity(t *testing.T) {
	t.Parallel()
	code, out, errOut := run(t, "", nil, "identity", "--dry-run", "--identity-mode", "direct", "--project", "my-proj")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"roles/monitoring.viewer", "principal://iam.googleapis.com/projects/PROJECT_NUMBER/locations/global/workloadIdentityPools/my-proj.svc.id.goog/subject/ns/custom-metrics/sa/custom-metrics-stackdriver-adapter"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run lacks %q:\n%s", want, out)
		}
	}
	// The KSA is applied without the Workload Identity annotation.
	code, out, errOut = run(t, "", nil, "identity", "--dry-run", "--identity-mode", "direct", "--project", "my-proj", "-o", "yaml")
	if code != 0 || !strings.Contains(out, "kind: ServiceAccount") || strings.Contains(out, "iam.gke.io/gcp-service-account") {
		t.Errorf("direct mode must apply the KSA without the annotation (exit %d):\n%s%s", code, out, errOut)
	}
}

func readREADME(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// readmePath is absolute: tests change directory.
var readmePath, _ = filepath.Abs("../README.md")

func TestExitCodesDocumented(t *testing.T) {
	t.Parallel()
	readme := readREADME(t)
	code, out, _ := run(t, "", nil, "--help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, e := range exitcode.Table {
		row := fmt.Sprintf("| %d | %s |", e.Code, e.Meaning)
		if !strings.Contains(out, e.Meaning) {
			t.Errorf("--help lacks exit code %d (%s)", e.Code, e.Meaning)
		}
		if !strings.Contains(readme, row) {
			t.Errorf("README lacks the row %q", row)
		}
	}
}

// TestREADMEConfigReference keeps the README's configuration reference equal
// to the settings that make the flags and env vars, and checks that every
// flag of every command is documented in the README.
func TestREADMEConfigReference(t *testing.T) {
	t.Parallel()
	readme := readREADME(t)
	const start, end = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
	i, j := strings.Index(readme, start), strings.Index(readme, end)
	if i < 0 || j < i {
		t.Fatal("README has no config-reference markers")
	}
	want := config.ReferenceMarkdown()
	if got := readme[i+len(start) : j]; got != want {
		if os.Getenv("UPDATE_README") != "" {
			if err := os.WriteFile(readmePath, []byte(readme[:i+len(start)]+want+readme[j:]), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Errorf("README's configuration reference is stale; run UPDATE_README=1 go test ./cmd -run TestREADMEConfigReference")
	}
	root := NewRootCmd(iostreams.System())
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Name == "help" {
				return
			}
			if !strings.Contains(readme, "`--"+f.Name) {
				t.Errorf("README does not document %s --%s", c.CommandPath(), f.Name)
			}
		})
		for _, sub := range c.Commands() {
			if sub.Name() != "completion" && sub.Name() != "help" {
				walk(sub)
			}
		}
	}
	walk(root)
}

// Each metric's target, as the HPA is rendered with it: the first metric's
// is hpa.target when given, else its own key, else hpa.target's default,
// but kv-cache's own 0.8 (a fraction); a further metric's is its own.
func TestMetricTargets(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want []string // averageValue of each metric, in order
	}{
		{[]string{"--metric", "running"}, []string{`"4"`}},
		{[]string{"--metric", "kv-cache"}, []string{`"800m"`}},
		{[]string{"--metric", "kv-cache", "--kv-cache-target", "0.6"}, []string{`"600m"`}},
		{[]string{"--metric", "kv-cache", "--target", "0.7", "--kv-cache-target", "0.7"}, []string{`"700m"`}},
		{[]string{"--metric", "waiting+kv-cache", "--target", "3", "--kv-cache-target", "0.5"}, []string{`"3"`, `"500m"`}},
		{[]string{"--metric", "kv-cache+running"}, []string{`"800m"`, `"4"`}},
	} {
		code, out, errOut := run(t, dir, nil, append([]string{"render", "hpa", "--project", "my-proj"}, c.args...)...)
		if code != 0 {
			t.Errorf("%v: exit %d: %s", c.args, code, errOut)
			continue
		}
		var got []string
		for _, line := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "averageValue: "); ok {
				got = append(got, v)
			}
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%v: averageValues %v, want %v", c.args, got, c.want)
		}
	}
}
