package cmd

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/textdiff"
)

// The frictions a first real user met (issue 23), each a case here: none
// of these needs a cluster.

// configView runs `config view -o json` and returns its document.
func configView(t *testing.T, dir string, env map[string]string, args ...string) (int, map[string]any) {
	t.Helper()
	code, out, errOut := run(t, dir, env, append([]string{"config", "view", "-o", "json"}, args...)...)
	var doc map[string]any
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("config view -o json: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	return code, doc
}

// TestTokenJudgedOnlyByItsUsers: a malformed HF_TOKEN fails the commands
// that write the token Secret or check it (exit 2, naming HF_TOKEN), and
// no other.
func TestTokenJudgedOnlyByItsUsers(t *testing.T) {
	t.Parallel()
	env := map[string]string{"HF_TOKEN": "x"}
	for _, args := range [][]string{
		{"render"},
		{"render", "hpa"},
		{"up", "--dry-run", "--skip", "deploy"},
		{"config", "view"},
		{"hpa", "--dry-run"},
	} {
		code, _, errOut := run(t, "", env, append(args, "--project", "my-proj")...)
		if code != 0 || strings.Contains(errOut, "invalid HF_TOKEN") {
			t.Errorf("%v with a malformed token: exit %d, want 0 (it never uses the token):\n%s", args, code, errOut)
		}
	}
	// Commands that reach the cluster fail on the missing kubeconfig,
	// not on the token they never read.
	for _, args := range [][]string{{"status"}, {"cleanup", "--dry-run"}, {"verify", "--skip", "deploy"}} {
		code, _, errOut := run(t, "", env, append(args, "--project", "my-proj")...)
		if code != exitcode.Precondition || strings.Contains(errOut, "invalid HF_TOKEN") {
			t.Errorf("%v with a malformed token and no kubeconfig: exit %d, want %d (no kubeconfig), not a token error:\n%s", args, code, exitcode.Precondition, errOut)
		}
	}
	for _, args := range [][]string{{"up", "--dry-run"}, {"deploy"}, {"up"}, {"verify"}} {
		code, _, errOut := run(t, "", env, append(args, "--project", "my-proj")...)
		if code != exitcode.BadInput || !strings.Contains(errOut, "invalid HF_TOKEN") {
			t.Errorf("%v with a malformed token: exit %d, want %d naming HF_TOKEN:\n%s", args, code, exitcode.BadInput, errOut)
		}
	}
}

// TestProjectFromGoogleTools: a project not given comes from where
// Google's tools keep it, then from a context gcloud named; what is given
// always wins; config view says where each came from.
func TestProjectFromGoogleTools(t *testing.T) {
	t.Parallel()
	gcloudHome := func(t *testing.T, active, project string) string {
		home := t.TempDir()
		dir := filepath.Join(home, ".config", "gcloud")
		writeFile(t, mkdir(t, filepath.Join(dir, "configurations")), "config_"+active, "[core]\naccount = me@example.com\nproject = "+project+"\n\n[compute]\nregion = us-central1\n")
		if active != "default" {
			writeFile(t, dir, "active_config", active+"\n")
		}
		return home
	}
	gkeKubeconfig := func(t *testing.T, context, namespace string) string {
		return writeFile(t, t.TempDir(), "kubeconfig", `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: u
  user: {token: abc}
contexts:
- name: `+context+`
  context: {cluster: c, user: u, namespace: "`+namespace+`"}
current-context: `+context+`
`)
	}
	cases := []struct {
		name         string
		env          func(t *testing.T) map[string]string
		args         []string
		want         string
		wantOrigin   string // a part of origins.project; "" for none
		wantNS       string
		wantNSOrigin string
	}{
		{name: "CLOUDSDK_CORE_PROJECT", env: func(t *testing.T) map[string]string {
			return map[string]string{"CLOUDSDK_CORE_PROJECT": "from-sdk-env", "GOOGLE_CLOUD_PROJECT": "from-google-env"}
		}, want: "from-sdk-env", wantOrigin: "CLOUDSDK_CORE_PROJECT"},
		{name: "gcloud default configuration", env: func(t *testing.T) map[string]string {
			return map[string]string{"HOME": gcloudHome(t, "default", "from-gcloud"), "GOOGLE_CLOUD_PROJECT": "from-google-env"}
		}, want: "from-gcloud", wantOrigin: "config_default"},
		{name: "gcloud active configuration", env: func(t *testing.T) map[string]string {
			return map[string]string{"HOME": gcloudHome(t, "work", "from-work-config")}
		}, want: "from-work-config", wantOrigin: "config_work"},
		{name: "CLOUDSDK_CONFIG", env: func(t *testing.T) map[string]string {
			home := gcloudHome(t, "default", "from-sdk-dir")
			return map[string]string{"CLOUDSDK_CONFIG": filepath.Join(home, ".config", "gcloud")}
		}, want: "from-sdk-dir", wantOrigin: "config_default"},
		{name: "GOOGLE_CLOUD_PROJECT", env: func(t *testing.T) map[string]string {
			return map[string]string{"GOOGLE_CLOUD_PROJECT": "from-google-env"}
		}, want: "from-google-env", wantOrigin: "GOOGLE_CLOUD_PROJECT"},
		{name: "gke context and its namespace", env: func(t *testing.T) map[string]string {
			return map[string]string{"KUBECONFIG": gkeKubeconfig(t, "gke_from-context_us-central1_gpu", "inference")}
		}, want: "from-context", wantOrigin: "gke_from-context_us-central1_gpu", wantNS: "inference", wantNSOrigin: "gke_from-context"},
		{name: "gcloud and the context agree", env: func(t *testing.T) map[string]string {
			return map[string]string{"GOOGLE_CLOUD_PROJECT": "same-proj", "KUBECONFIG": gkeKubeconfig(t, "gke_same-proj_us-central1_gpu", "")}
		}, want: "same-proj", wantOrigin: "GOOGLE_CLOUD_PROJECT", wantNS: "default"},
		{name: "flag first", env: func(t *testing.T) map[string]string {
			return map[string]string{"CLOUDSDK_CORE_PROJECT": "from-sdk-env", "KUBECONFIG": gkeKubeconfig(t, "gke_from-context_us-central1_gpu", "inference")}
		}, args: []string{"--project", "from-flag", "-n", "from-flag-ns"}, want: "from-flag", wantNS: "from-flag-ns"},
		{name: "our variable before Google's", env: func(t *testing.T) map[string]string {
			return map[string]string{"VLLM_HPA_PROJECT": "from-our-env", "CLOUDSDK_CORE_PROJECT": "from-sdk-env"}
		}, want: "from-our-env"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			code, doc := configView(t, "", c.env(t), c.args...)
			if code != 0 {
				t.Fatalf("exit %d: %v", code, doc["error"])
			}
			cfg := doc["config"].(map[string]any)
			origins, _ := doc["origins"].(map[string]any)
			if cfg["project"] != c.want {
				t.Errorf("project = %v, want %s", cfg["project"], c.want)
			}
			if got, _ := origins["project"].(string); (c.wantOrigin == "") != (got == "") || !strings.Contains(got, c.wantOrigin) {
				t.Errorf("origins.project = %q, want one naming %q", got, c.wantOrigin)
			}
			if c.wantNS != "" {
				if ns := cfg["workload"].(map[string]any)["namespace"]; ns != c.wantNS {
					t.Errorf("workload.namespace = %v, want %s", ns, c.wantNS)
				}
				if got, _ := origins["workload.namespace"].(string); (c.wantNSOrigin == "") != (got == "") || !strings.Contains(got, c.wantNSOrigin) {
					t.Errorf("origins[workload.namespace] = %q, want one naming %q", got, c.wantNSOrigin)
				}
			}
		})
	}
	t.Run("gcloud's project and the context's differ", func(t *testing.T) {
		t.Parallel()
		env := map[string]string{"GOOGLE_CLOUD_PROJECT": "prod-a", "KUBECONFIG": gkeKubeconfig(t, "gke_dev-b_us-central1_gpu", "")}
		code, doc := configView(t, "", env)
		if msg, _ := doc["error"].(string); code != exitcode.BadInput || !strings.Contains(msg, "prod-a") || !strings.Contains(msg, "dev-b") {
			t.Errorf("exit %d, %v: want 2 naming both projects", code, doc["error"])
		}
	})
	t.Run("no project anywhere", func(t *testing.T) {
		t.Parallel()
		code, doc := configView(t, "", nil)
		if code != exitcode.BadInput || doc["ok"] != false || !strings.Contains(doc["error"].(string), "project") {
			t.Errorf("exit %d, doc %v: want 2 and a result document naming project", code, doc)
		}
		if _, ok := doc["config"].(map[string]any); !ok {
			t.Errorf("a failed config view still prints the configuration under config: %v", doc)
		}
	})
}

func mkdir(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestConfigViewRoundTrip: what config view prints loads back unchanged,
// through a file and through stdin, and render reads it as it would the
// flags that made it.
func TestConfigViewRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	env := map[string]string{"HF_TOKEN": "hf_roundTripTokenValue12345", "VLLM_HPA_HPA_MAX_REPLICAS": "7", "VLLM_HPA_HPA_SCALE_DOWN_STABILIZATION": "3m"}
	args := []string{"--project", "round-trip", "--instance", "rt", "-n", "serving", "--metric", "waiting+kv-cache", "--kv-cache-target", "0.7",
		"--identity-mode", "direct", "--gsa-name", "rt-adapter"}
	code, text, errOut := run(t, dir, env, append([]string{"config", "view"}, args...)...)
	if code != 0 {
		t.Fatalf("config view: exit %d: %s", code, errOut)
	}
	if strings.Contains(text, "hf_roundTrip") || !strings.Contains(text, "# Hugging Face token: set (from HF_TOKEN)") {
		t.Errorf("config view shows the token or not whether it is set:\n%s", text)
	}
	_, want := configView(t, dir, env, args...)
	file := writeFile(t, dir, "saved.yaml", text)
	for _, how := range [][]string{{"--config", file}, {"--config", "-"}} {
		code, got := 0, map[string]any(nil)
		if how[1] == "-" {
			c, out, errOut := runStdin(t, dir, nil, text, "config", "view", "-o", "json", "--config", "-")
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("config view --config -: %v: %s", err, errOut)
			}
			code = c
		} else {
			code, got = configView(t, dir, nil, how...)
		}
		if code != 0 {
			t.Fatalf("%v: exit %d: %v", how, code, got["error"])
		}
		if !reflect.DeepEqual(got["config"], want["config"]) {
			t.Errorf("%v: the configuration read back differs from the one printed:\ngot  %v\nwant %v", how, got["config"], want["config"])
		}
	}
	_, fromFlags, _ := run(t, dir, env, append([]string{"render"}, args...)...)
	code, fromFile, errOut := runStdin(t, dir, nil, text, "render", "--config", "-")
	if code != 0 || fromFile != fromFlags || fromFile == "" {
		t.Errorf("config view | render --config - (exit %d) differs from render with the flags:\n%s\n%s", code, errOut, textdiff.First(fromFlags, fromFile))
	}
	// The file read is named, in the document and at -v.
	if _, doc := configView(t, dir, nil, "--config", file); doc["file"] != file {
		t.Errorf("file = %v, want %s", doc["file"], file)
	}
	if _, _, errOut := run(t, dir, nil, "render", "hpa", "-v", "--config", file); !strings.Contains(errOut, "effective configuration ("+file+")") {
		t.Errorf("-v does not name the file read:\n%s", errOut)
	}
}

// TestKubeconfigInputs: a kubeconfig that cannot work is bad input (exit
// 2) naming where it came from, however it was given.
func TestKubeconfigInputs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	badURL := writeFile(t, dir, "bad-url", `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://bad host:443"}
users:
- name: u
  user: {token: abc}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`)
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want string // in stderr
	}{
		{"--kubeconfig missing", nil, []string{"--kubeconfig", "/nope"}, "/nope"},
		{"KUBECONFIG missing", map[string]string{"KUBECONFIG": "/nope"}, nil, "KUBECONFIG"},
		{"VLLM_HPA_KUBE_KUBECONFIG missing", map[string]string{"VLLM_HPA_KUBE_KUBECONFIG": "/nope"}, nil, "/nope"},
		{"server URL malformed", nil, []string{"--kubeconfig", badURL}, badURL},
		{"server URL malformed by KUBECONFIG", map[string]string{"KUBECONFIG": badURL}, nil, badURL},
		{"--kubeconfig a device", nil, []string{"--kubeconfig", "/dev/zero"}, "/dev/zero"},
		{"KUBECONFIG a device", map[string]string{"KUBECONFIG": "/dev/zero"}, nil, "/dev/zero"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			code, _, errOut := run(t, dir, c.env, append([]string{"status", "--project", "my-proj"}, c.args...)...)
			if code != exitcode.BadInput || !strings.Contains(errOut, c.want) {
				t.Errorf("exit %d, want %d naming %q:\n%s", code, exitcode.BadInput, c.want, errOut)
			}
		})
	}
}

// TestCompletions: the flags whose values are a fixed set complete them,
// --context from the kubeconfig, --namespace from the cluster.
func TestCompletions(t *testing.T) {
	t.Parallel()
	complete := func(t *testing.T, env map[string]string, args ...string) []string {
		t.Helper()
		code, out, errOut := run(t, "", env, append([]string{"__complete"}, args...)...)
		if code != 0 {
			t.Fatalf("__complete %v: exit %d: %s", args, code, errOut)
		}
		var words []string
		for _, l := range strings.Split(out, "\n") {
			if l != "" && !strings.HasPrefix(l, ":") && !strings.HasPrefix(l, "Completion ended") {
				words = append(words, strings.SplitN(l, "\t", 2)[0])
			}
		}
		return words
	}
	kubeconfig := writeFile(t, t.TempDir(), "kubeconfig", `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: abc}}]
contexts:
- {name: staging, context: {cluster: c, user: u}}
- {name: gke_p_us-central1_gpu, context: {cluster: c, user: u}}
current-context: staging
`)
	for _, c := range []struct {
		args []string
		env  map[string]string
		want []string
	}{
		{[]string{"up", "--backend", ""}, nil, []string{"adapter", "native", "auto"}},
		{[]string{"status", "--endpoint-type", ""}, nil, []string{"public", "private", "dns"}},
		{[]string{"verify", "--metric", ""}, nil, []string{"kv-cache", "running", "waiting"}},
		{[]string{"cleanup", "--context", ""}, map[string]string{"KUBECONFIG": kubeconfig}, []string{"gke_p_us-central1_gpu", "staging"}},
	} {
		if got := complete(t, c.env, c.args...); !reflect.DeepEqual(got, c.want) {
			t.Errorf("completion of %v = %v, want %v", c.args, got, c.want)
		}
	}
	t.Run("namespace from the cluster", func(t *testing.T) {
		inst := newInstance(t, "complete", "complete-ns")
		code, out, errOut := kubeRun(t, inst, "__complete", "status", "--namespace", "")
		if code != 0 || !strings.Contains(out, "kube-system\n") || !strings.Contains(out, "default\n") {
			t.Errorf("namespace completion: exit %d\n%s\n%s", code, out, errOut)
		}
	})
}

// TestDryRunSaysWhatItDidNotCheck: a plan without a token or credentials
// still exits 0, and says what the real run will stop at and that
// preflight is the check.
func TestDryRunSaysWhatItDidNotCheck(t *testing.T) {
	t.Parallel()
	code, out, errOut := run(t, "", nil, "up", "--dry-run", "--project", "my-proj")
	if code != 0 || out == "" {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	for _, want := range []string{"no Hugging Face token: the real up stops", "Google credentials not looked at", "`vllm-hpa preflight` proves"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr does not say %q:\n%s", want, errOut)
		}
	}
}

// TestVerifyWait: verify --wait polls until --timeout, then exits 4 with
// the last state; --timeout alone is bad input.
func TestVerifyWait(t *testing.T) {
	if code, _, errOut := run(t, "", nil, "verify", "--project", "my-proj", "--timeout", "1m"); code != exitcode.BadInput || !strings.Contains(errOut, "--timeout needs --wait") {
		t.Errorf("--timeout without --wait: exit %d\n%s", code, errOut)
	}
	inst := newInstance(t, "vwait", "vwait-ns")
	code, out, errOut := kubeRun(t, inst, "verify", "--skip", "identity", "--wait", "--timeout", "12s", "-o", "json")
	var doc verifyJSON
	strict(t, out, &doc)
	if code != exitcode.Timeout || doc.ExitCode != exitcode.Timeout || !strings.Contains(doc.Error, "within --timeout 12s") || !strings.Contains(errOut, "checking again in 10 s") {
		t.Errorf("verify --wait on an empty cluster: exit %d, error %q\n%s", code, doc.Error, errOut)
	}
	if len(doc.Steps) == 0 || len(doc.Steps[0].Checks) == 0 {
		t.Errorf("the last state is not in the document: %+v", doc.Steps)
	}
}

// TestRenderForGitOps: render can hand a GitOps pipeline the whole stack.
// --format kustomize DIR is built by the real kubectl kustomize into the
// same objects render prints, the adapter's ServiceAccount once and with
// its Workload Identity annotation, the vLLM Deployment without replicas
// (the HPA owns them); google.sh is the identity step's Google side, the
// same as --format gcloud; -o yaml is the same document as -o json.
func TestRenderForGitOps(t *testing.T) {
	t.Parallel()
	bin := os.Getenv("VLLM_HPA_K8S_BIN")
	if bin == "" {
		if os.Getenv("VLLM_HPA_REQUIRE_K8S") != "" {
			t.Fatal("VLLM_HPA_K8S_BIN is not set: kubectl kustomize cannot build the kustomization")
		}
		t.Skip("no kubectl: VLLM_HPA_K8S_BIN is not set (run `make test`)")
	}
	dir := t.TempDir()
	stack := filepath.Join(dir, "stack")
	p := []string{"--project", "my-proj"}
	if code, _, errOut := run(t, dir, nil, append([]string{"render", "--include-identity", "--format", "kustomize", "stack"}, p...)...); code != 0 {
		t.Fatalf("render --format kustomize: exit %d\n%s", code, errOut)
	}
	built, err := exec.Command(filepath.Join(bin, "kubectl"), "kustomize", stack).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, built)
	}
	var sas, annotated int
	for _, doc := range strings.Split(string(built), "\n---\n") {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("%v\n%s", err, doc)
		}
		meta, _ := obj["metadata"].(map[string]any)
		switch {
		case obj["kind"] == "ServiceAccount" && meta["name"] == "custom-metrics-stackdriver-adapter":
			sas++
			if ann, _ := meta["annotations"].(map[string]any); ann["iam.gke.io/gcp-service-account"] == "metrics-adapter-gsa@my-proj.iam.gserviceaccount.com" {
				annotated++
			}
		case obj["kind"] == "Deployment" && meta["name"] == "vllm-gemma-deployment":
			if _, has := obj["spec"].(map[string]any)["replicas"]; has {
				t.Error("the vLLM Deployment sets replicas: a sync would undo the HPA")
			}
		case obj["kind"] == "Secret":
			t.Error("the token Secret is in the kustomization")
		}
	}
	if sas != 1 || annotated != 1 {
		t.Errorf("the adapter's ServiceAccount: %d in the build, %d annotated; want 1 and 1", sas, annotated)
	}
	_, gcloud, _ := run(t, dir, nil, append([]string{"render", "--format", "gcloud"}, p...)...)
	script, _ := os.ReadFile(filepath.Join(stack, "google.sh"))
	if string(script) != gcloud || !strings.Contains(gcloud, "gcloud iam service-accounts create metrics-adapter-gsa --project=my-proj") ||
		!strings.Contains(gcloud, "--role=roles/iam.workloadIdentityUser") || !strings.Contains(gcloud, "--role=roles/monitoring.viewer") {
		t.Errorf("google.sh and render --format gcloud differ or lack the grants:\n%s\n---\n%s", script, gcloud)
	}
	if _, native, _ := run(t, dir, nil, append([]string{"render", "--format", "gcloud", "--backend", "native"}, p...)...); native != "" {
		t.Errorf("the native backend needs no Google side, got:\n%s", native)
	}
	// The model bucket's grant is a Google side of its own, on any backend.
	if _, bucket, _ := run(t, dir, nil, append([]string{"render", "--format", "gcloud", "--backend", "native", "--model-source", "gs://my-models/m"}, p...)...); !strings.Contains(bucket, "gcloud storage buckets add-iam-policy-binding gs://my-models --member=\"principal://iam.googleapis.com/projects/${PROJECT_NUMBER}/") || !strings.Contains(bucket, "--role=roles/storage.objectViewer") {
		t.Errorf("the bucket grant is not in render --format gcloud:\n%s", bucket)
	}
	for _, args := range [][]string{{"render"}, {"render", "--include-identity"}, {"up", "--dry-run"}, {"cleanup", "--dry-run", "--skip", "identity", "--kubeconfig", "/nope"}} {
		_, j, _ := run(t, dir, nil, append(append(args, p...), "-o", "json")...)
		_, y, _ := run(t, dir, nil, append(append(args, p...), "-o", "yaml")...)
		var fromJSON, fromYAML any
		if err := json.Unmarshal([]byte(j), &fromJSON); err != nil {
			t.Fatalf("%v -o json: %v\n%s", args, err, j)
		}
		if err := yaml.Unmarshal([]byte(y), &fromYAML); err != nil {
			t.Fatalf("%v -o yaml: %v\n%s", args, err, y)
		}
		if !reflect.DeepEqual(fromJSON, fromYAML) {
			t.Errorf("%v: -o yaml is not the document -o json is:\n%s\n---\n%s", args, j, y)
		}
	}
}

// TestOverallTimeout: --timeout bounds the whole of up, cleanup and
// preflight (also as up --dry-run=server), even against an API server
// that accepts connections and never answers: exit 4, naming the limit,
// well before any per-request bound (2 minutes).
func TestOverallTimeout(t *testing.T) {
	t.Parallel()
	kc := writeFile(t, t.TempDir(), "kubeconfig", `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://`+neverAnswers(t)+`", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: abc}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`)
	env := map[string]string{"KUBECONFIG": kc, "HF_TOKEN": "hf_overallTimeoutToken"}
	for _, args := range [][]string{{"up", "--skip", "identity"}, {"cleanup", "--skip", "identity"}, {"preflight", "--skip", "identity"}, {"up", "--dry-run=server", "--skip", "identity"}} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang fails, not stalls, the suite
		// Exit 4 is the command's own limit: the guard's would be 130.
		code, _, errOut := runCtx(t, ctx, "", env, append(args, "--project", "my-proj", "--timeout", "3s")...)
		cancel()
		if code != exitcode.Timeout || !strings.Contains(errOut, "--timeout 3s reached") {
			t.Errorf("%v --timeout 3s against a server that never answers: exit %d, want %d naming the limit:\n%s", args, code, exitcode.Timeout, errOut)
		}
	}
}

// neverAnswers is the address of a server that accepts connections, holds
// them open and never writes a byte, until the test ends.
func neverAnswers(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() }) // held open, never written to
		}
	}()
	return l.Addr().String()
}

// TestHelpAndTypos: the root help leads to getting started and shows a
// whole cycle; a step's help shows --project; a mistyped flag or command
// gets a suggestion; -o json with no command is bad input with its
// document, not help on stdout.
func TestHelpAndTypos(t *testing.T) {
	t.Parallel()
	_, out, _ := run(t, "", nil, "--help")
	for _, want := range []string{"docs/getting-started.md", "Examples:", "vllm-hpa preflight", "vllm-hpa cleanup --project my-proj"} {
		if !strings.Contains(out, want) {
			t.Errorf("root help lacks %q", want)
		}
	}
	if _, out, _ := run(t, "", nil, "up", "--help"); !strings.Contains(out, "--project string") {
		t.Errorf("up --help does not show --project:\n%s", out)
	}
	if _, out, _ := run(t, "", nil, "version", "--help"); strings.Contains(out, "--project string") {
		t.Errorf("version --help shows --project, which version refuses")
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"up", "--projct", "x"}, "did you mean --project?"},
		{[]string{"verify", "--namespac", "x"}, "did you mean --namespace?"},
		{[]string{"statsu"}, "did you mean status?"},
	} {
		if code, _, errOut := run(t, "", nil, c.args...); code != exitcode.BadInput || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, want 2 and %q:\n%s", c.args, code, c.want, errOut)
		}
	}
	code, out, _ := run(t, "", nil, "-o", "json")
	var doc result
	strict(t, out, &doc)
	if code != exitcode.BadInput || doc.OK || !strings.Contains(doc.Error, "no command given") {
		t.Errorf("-o json with no command: exit %d, %+v", code, doc)
	}
	if code, out, _ := run(t, "", nil); code != 0 || !strings.Contains(out, "Usage:") {
		t.Errorf("no command at all: exit %d, want 0 and the help", code)
	}
}
