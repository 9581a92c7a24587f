package cmd

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
)

// hostileInput is one bad input to one command: the files it needs (in the
// command's working directory), its environment and flags, and the field
// its error must name.
type hostileInput struct {
	name  string
	files map[string]string // relative path -> content; "FIFO" makes a named pipe
	env   map[string]string
	args  []string
	field string
}

// measuredReport is a verify --report with a measured scale-up: the
// HPA's decision at 85 s, the slowest new pod's first answer at 409 s.
const measuredReport = `{"stages": {"decisionSeconds": 85, "pods": [], "stages": [{"stage": "hpa decision", "atSeconds": 85, "seconds": 0}, {"stage": "first answer", "atSeconds": 409, "seconds": 324}]}}`

// hostileInputs is the corpus: every command, every flag that takes a
// value, and every way in that was found to slip past validation. Grow it
// whenever a new one appears.
func hostileInputs() []hostileInput {
	type h = hostileInput
	var cases []h
	// Configuration values, through flags, env and the config file, on
	// every command that reads the stack's configuration.
	for _, c := range badInputCases() {
		if c.args[0] != "render" || c.name == "render unknown step" {
			continue
		}
		for _, command := range [][]string{{"render"}, {"up"}, {"cleanup"}, {"verify"}, {"status"}} {
			var files map[string]string
			if c.file != "" {
				files = map[string]string{"vllm-hpa.yaml": c.file}
			}
			cases = append(cases, h{command[0] + ": " + c.name, files, c.env, append(append([]string{}, command...), c.args[1:]...), c.field})
		}
	}
	p := []string{"--project", "my-proj"}
	with := func(cmd string, a ...string) []string { return append(append([]string{cmd}, p...), a...) }
	load := func(a ...string) []string { return append([]string{"verify", "--load"}, append(p, a...)...) }
	cases = append(cases,
		// Values that passed validation and broke later.
		h{"target rounds to zero", nil, nil, with("hpa", "--target", "0.0001"), "hpa.target"},
		h{"target tiny", nil, nil, with("up", "--target", "1e-9"), "hpa.target"},
		h{"target NaN", nil, nil, with("hpa", "--target", "NaN"), "hpa.target"},
		h{"target Inf", nil, nil, with("hpa", "--target", "+Inf"), "hpa.target"},
		h{"target huge", nil, nil, with("hpa", "--target", "1e7"), "hpa.target"},
		h{"max replicas huge", nil, nil, with("hpa", "--max-replicas", "1001"), "hpa.max-replicas"},
		h{"instance with spaces", nil, nil, with("up", "--instance", "my stack"), "instance"},
		h{"namespace shorthand", nil, nil, with("deploy", "-n", "Prod"), "workload.namespace"},
		h{"gsa name uppercase", nil, nil, with("identity", "--gsa-name", "Metrics-GSA"), "identity.gsa-name"},
		h{"adapter tag with slash", nil, nil, with("adapter", "--adapter-tag", "v1/2"), "adapter.tag"},
		// The token file: what would block, never end, or is the wrong file.
		h{"token file is a FIFO", map[string]string{"token": "FIFO"}, nil, with("deploy", "--hf-token-file", "token"), "hf-token.file"},
		h{"token file is /dev/zero", nil, nil, with("deploy", "--hf-token-file", "/dev/zero"), "hf-token.file"},
		h{"token file is a directory", nil, nil, with("deploy", "--hf-token-file", "/tmp"), "hf-token.file"},
		h{"token file too big", map[string]string{"token": strings.Repeat("x", config.MaxTokenFileSize+1)}, nil, with("up", "--hf-token-file", "token"), "hf-token.file"},
		h{"token file two words", map[string]string{"token": "hf_abc hf_def\n"}, nil, with("deploy", "--hf-token-file", "token"), "hf-token.file"},
		h{"token file from env missing", nil, map[string]string{"VLLM_HPA_HF_TOKEN_FILE": "nope"}, with("deploy"), "VLLM_HPA_HF_TOKEN_FILE"},
		h{"no token for deploy", nil, map[string]string{"HF_TOKEN": ""}, with("deploy"), "HF_TOKEN"},
		// Too short to be a token, and to be scrubbed from output without
		// mangling it ("x" would redact every x in a JSON document).
		h{"token one character", nil, map[string]string{"HF_TOKEN": "x"}, with("up"), "HF_TOKEN"},
		h{"token two words", nil, map[string]string{"HF_TOKEN": "hf_abcdefgh hf_ijklmnop"}, with("deploy"), "HF_TOKEN"},
		h{"token file short", map[string]string{"token": "hf_ab\n"}, nil, with("deploy", "--hf-token-file", "token"), "hf-token.file"},
		h{"config file is a FIFO", map[string]string{"cfg": "FIFO"}, nil, with("up", "--config", "cfg"), "--config"},
		h{"config file is a directory", nil, nil, with("status", "--config", "/tmp"), "--config"},
		// The kubeconfig: proven usable before any request.
		h{"kubeconfig missing", nil, nil, with("up", "--kubeconfig", "/nonexistent/kubeconfig"), "kube.kubeconfig"},
		h{"kubeconfig garbage", map[string]string{"kc": "{{{ not yaml"}, nil, with("status", "--kubeconfig", "kc"), "kube.kubeconfig"},
		h{"kubeconfig directory", nil, nil, with("cleanup", "--kubeconfig", "/tmp"), "kube.kubeconfig"},
		h{"context unknown", nil, nil, with("up", "--context", "nope"), "kube.context"},
		h{"context unknown on verify", nil, nil, with("verify", "--context", "nope"), "kube.context"},
		h{"context unknown on load", nil, nil, with("load", "--context", "nope"), "kube.context"},
		h{"context unknown in env", nil, map[string]string{"VLLM_HPA_KUBE_CONTEXT": "nope"}, with("cleanup", "--dry-run"), "VLLM_HPA_KUBE_CONTEXT"},
		h{"context without cluster", map[string]string{"kc": kubeconfigWithDanglingContext}, nil, with("status", "--kubeconfig", "kc"), "kube.context"},
		// verify's own flags.
		h{"expect replicas negative", nil, nil, load("--expect-replicas", "-1"), "--expect-replicas"},
		h{"expect replicas zero", nil, nil, load("--expect-replicas", "0"), "--expect-replicas"},
		h{"expect replicas above max", nil, nil, load("--expect-replicas", "6"), "--expect-replicas"},
		h{"expect replicas without load", nil, nil, with("verify", "--expect-replicas", "3"), "--load"},
		h{"rate without load", nil, nil, with("verify", "--rate", "5"), "--load"},
		h{"wait timeout negative", nil, nil, load("--wait-timeout", "-1s"), "--wait-timeout"},
		h{"wait timeout zero", nil, nil, load("--wait-timeout", "0s"), "--wait-timeout"},
		h{"report in a missing directory", nil, nil, load("--report", "/nonexistent/dir/t.json"), "--report"},
		h{"report is a directory", nil, nil, load("--report", "/tmp"), "--report"},
		h{"verify rate NaN", nil, nil, load("--rate", "NaN"), "--rate"},
		h{"verify rate huge", nil, nil, load("--rate", "1e300"), "--rate"},
		h{"verify endpoint not a URL", nil, nil, load("--endpoint", "not a url"), "--endpoint"},
		h{"verify timeout negative", nil, nil, with("verify", "--timeout", "-1s"), "--timeout"},
		h{"tail rate without scale-down", nil, nil, load("--tail-rate", "1"), "--scale-down"},
		h{"tail rate negative", nil, nil, load("--scale-down", "--tail-rate", "-1"), "--tail-rate"},
		h{"tail rate NaN", nil, nil, load("--scale-down", "--tail-rate", "NaN"), "--tail-rate"},
		h{"tail rate too slow for the pacer", nil, nil, load("--scale-down", "--tail-rate", "1e-9"), "--tail-rate"},
		h{"verify rate too slow for the pacer", nil, nil, load("--rate", "1e-9"), "--rate"},
		h{"load rate too slow for the pacer", nil, nil, with("load", "--rate", "0.0000001"), "--rate"},
		h{"scale-down failures negative", nil, nil, load("--scale-down", "--max-scale-down-failures", "-1"), "--max-scale-down-failures"},
		h{"drain not whole seconds", nil, nil, with("deploy", "--drain", "1500ms"), "workload.drain"},
		h{"drain negative", nil, nil, with("up", "--drain", "-5s"), "workload.drain"},
		h{"drain above an hour", nil, map[string]string{"VLLM_HPA_WORKLOAD_DRAIN": "2h"}, with("up"), "VLLM_HPA_WORKLOAD_DRAIN"},
		h{"model source on S3", nil, nil, with("deploy", "--model-source", "s3://models/gemma"), "only Cloud Storage"},
		h{"model source: the bucket's root", nil, nil, with("up", "--model-source", "gs://my-models"), "not the bucket's root"},
		h{"model source: a shell metacharacter", nil, nil, with("deploy", "--model-source", "gs://my-models/a;touch /tmp/x"), "workload.model-source"},
		h{"model source: a parent path", nil, nil, with("deploy", "--model-source", "gs://my-models/../other"), ". or .. parts"},
		h{"model source: an upper-case bucket", nil, nil, with("deploy", "--model-source", "gs://My-Models/m"), "bucket name"},
		h{"model source: a google bucket name", nil, nil, with("deploy", "--model-source", "gs://google-models/m"), "containing google"},
		h{"model source: a dotted bucket", nil, nil, with("deploy", "--model-source", "gs://models.example.com/m"), "bucket name"},
		h{"model source: an empty path part", nil, nil, with("deploy", "--model-source", "gs://my-models/m//"), "empty part"},
		h{"model source: a path no object name can hold", nil, nil, with("deploy", "--model-source", "gs://my-models/"+strings.Repeat("a", 1013)), "at most 1024"},
		h{"model source: under .well-known/acme-challenge", nil, nil, with("up", "--model-source", "gs://my-models/.well-known/acme-challenge/m"), "acme-challenge"},
		h{"model source with a Deployment named default", nil, nil, with("deploy", "--model-source", "gs://my-models/m", "--deployment", "default"), "another name than default"},
		h{"model source with the adapter's service account's name", nil, map[string]string{"VLLM_HPA_WORKLOAD_NAMESPACE": "custom-metrics"}, with("up", "--model-source", "gs://my-models/m", "--deployment", "custom-metrics-stackdriver-adapter"), "the adapter's service account"},
		h{"model source with an image before 0.11.1", nil, map[string]string{"VLLM_HPA_WORKLOAD_MODEL_SOURCE": "gs://my-models/m"}, with("up", "--image", "vllm/vllm-openai:v0.10.1"), "vLLM 0.11.1 or later"},
		// tune --from-report: the file must hold a measured scale-up, and
		// the ramp's flags have nothing to do.
		h{"report to tune missing", nil, nil, with("tune", "--from-report", "nope.json"), "--from-report"},
		h{"report to tune is a FIFO", map[string]string{"r.json": "FIFO"}, nil, with("tune", "--from-report", "r.json"), "--from-report"},
		h{"report to tune is /dev/zero", nil, nil, with("tune", "--from-report", "/dev/zero"), "--from-report"},
		h{"report to tune not JSON", map[string]string{"r.json": "stages: yes"}, nil, with("tune", "--from-report", "r.json"), "--from-report"},
		h{"report to tune without stages", map[string]string{"r.json": `{"load": {}, "timeline": {}}`}, nil, with("tune", "--from-report", "r.json"), "--from-report"},
		h{"report to tune with a ramp flag", map[string]string{"r.json": measuredReport}, nil, with("tune", "--from-report", "r.json", "--slo-ttft", "1s"), "--slo-ttft"},
		// Times a duration cannot hold, and a first answer before the
		// decision: refused, never a wrapped-around cold start.
		h{"report to tune with seconds out of range", map[string]string{"r.json": strings.Replace(measuredReport, `"atSeconds": 409`, `"atSeconds": 1e300`, 1)}, nil, with("tune", "--from-report", "r.json"), "--from-report"},
		h{"report to tune answered before the decision", map[string]string{"r.json": strings.Replace(measuredReport, `"atSeconds": 409`, `"atSeconds": -5`, 1)}, nil, with("tune", "--from-report", "r.json"), "--from-report"},
		// load's flags.
		h{"load rate NaN", nil, nil, with("load", "--rate", "NaN"), "--rate"},
		h{"load rate Inf", nil, nil, with("load", "--rate", "Inf"), "--rate"},
		h{"load rate 1e300", nil, nil, with("load", "--rate", "1e300"), "--rate"},
		h{"load rate zero", nil, nil, with("load", "--rate", "0"), "--rate"},
		h{"load rate negative", nil, nil, with("load", "--rate", "-3"), "--rate"},
		h{"load rate and concurrency", nil, nil, with("load", "--rate", "2", "--concurrency", "3"), "--rate"},
		h{"load concurrency negative", nil, nil, with("load", "--concurrency", "-1"), "--concurrency"},
		h{"load concurrency huge", nil, nil, with("load", "--concurrency", "1000000"), "--concurrency"},
		h{"load duration negative", nil, nil, with("load", "--duration", "-5s"), "--duration"},
		h{"load max tokens negative", nil, nil, with("load", "--max-tokens", "-1"), "--max-tokens"},
		h{"load request timeout zero", nil, nil, with("load", "--request-timeout", "0s"), "--request-timeout"},
		h{"load empty prompt", nil, nil, with("load", "--prompt", " "), "--prompt"},
		h{"load endpoint not a url", nil, nil, []string{"load", "--endpoint", "not a url"}, "--endpoint"},
		h{"load endpoint ftp", nil, nil, []string{"load", "--endpoint", "ftp://127.0.0.1/"}, "--endpoint"},
		h{"load endpoint without host", nil, nil, []string{"load", "--endpoint", "http://"}, "--endpoint"},
		h{"load endpoint with credentials", nil, nil, []string{"load", "--endpoint", "http://u:p@127.0.0.1:8081"}, "--endpoint"},
		h{"load endpoint with query", nil, nil, []string{"load", "--endpoint", "http://127.0.0.1:8081/?x=1"}, "--endpoint"},
		h{"load without project or endpoint", nil, nil, []string{"load"}, "project"},
		// sim's flags.
		h{"sim listen not an address", nil, nil, []string{"sim", "--listen", "nope"}, "--listen"},
		h{"sim listen port out of range", nil, nil, []string{"sim", "--listen", "127.0.0.1:99999"}, "--listen"},
		h{"sim listen host name", nil, nil, []string{"sim", "--listen", "example.com:8081"}, "--listen"},
		h{"sim output tokens zero", nil, nil, []string{"sim", "--output-tokens", "0"}, "--output-tokens"},
		h{"sim max num seqs zero", nil, nil, []string{"sim", "--max-num-seqs", "0"}, "--max-num-seqs"},
		h{"sim token latency negative", nil, nil, []string{"sim", "--token-latency", "-1ms"}, "--token-latency"},
		h{"sim model empty", nil, nil, []string{"sim", "--model", ""}, "--model"},
		h{"sim model empty by its old name", nil, nil, []string{"sim", "--sim-model", ""}, "--model"},
		// Steps, arguments and command-level flags.
		h{"cleanup unknown step", nil, nil, with("cleanup", "monitoring"), "step"},
		h{"cleanup skip unknown", nil, nil, with("cleanup", "--skip", "gsa"), "--skip"},
		h{"up skip unknown", nil, nil, with("up", "--skip", "adapters"), "--skip"},
		h{"up timeout negative", nil, nil, with("up", "--timeout", "-5s"), "--timeout"},
		h{"up takes no arguments", nil, nil, with("up", "everything"), "no arguments"},
		h{"status takes no arguments", nil, nil, with("status", "now"), "no arguments"},
		h{"render two steps", nil, nil, with("render", "deploy", "hpa"), "at most one step"},
		h{"unknown flag on cleanup", nil, nil, with("cleanup", "--purge"), "purge"},
		h{"output unknown on status", nil, nil, with("status", "-o", "table"), "--output"},
		h{"identity mode on identity", nil, nil, with("identity", "--identity-mode", "workload"), "identity.mode"},
		h{"impersonate not an email", nil, nil, with("identity", "--impersonate-service-account", "ci"), "identity.impersonate-service-account"},
	)
	return cases
}

// kubeconfigWithDanglingContext names a context whose cluster is missing.
const kubeconfigWithDanglingContext = `apiVersion: v1
kind: Config
current-context: broken
contexts:
- name: broken
  context: {cluster: missing, user: u}
users:
- name: u
  user: {token: t}
`

// TestHostileInputReachesNothing: every hostile input, on every command,
// exits 2 naming the field, prints one JSON document with the exit code
// under -o json (nothing on stdout otherwise), and sends not one request
// to the Kubernetes API server or to Google.
func TestHostileInputReachesNothing(t *testing.T) {
	t.Parallel()
	var kubeRequests atomic.Int64
	apiserver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kubeRequests.Add(1)
		http.Error(w, "no request may reach the cluster on bad input", http.StatusInternalServerError)
	}))
	t.Cleanup(apiserver.Close) // after the parallel subtests
	kubeconfig := writeFile(t, t.TempDir(), "kubeconfig", fmt.Sprintf(`apiVersion: v1
kind: Config
current-context: counted
contexts:
- name: counted
  context: {cluster: counted, user: u}
clusters:
- name: counted
  cluster: {server: %q}
users:
- name: u
  user: {token: t}
`, apiserver.URL))
	g := startGCP(t)
	cases := hostileInputs()
	if len(cases) < 80 {
		t.Fatalf("only %d hostile inputs; the corpus keeps at least 80", len(cases))
	}
	for _, c := range cases {
		for _, format := range []string{"text", "json"} {
			if format == "json" && slices.ContainsFunc(c.args, func(a string) bool { return a == "-o" || a == "--output" }) {
				continue // the case is about --output itself
			}
			t.Run(c.name+"/"+format, func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				for name, content := range c.files {
					if content == "FIFO" {
						if err := syscall.Mkfifo(filepath.Join(dir, name), 0o600); err != nil {
							t.Fatal(err)
						}
						continue
					}
					writeFile(t, dir, name, content)
				}
				env := map[string]string{
					"HF_TOKEN":                 "hf_testTOKEN",
					"VLLM_HPA_KUBE_KUBECONFIG": kubeconfig,
				}
				maps.Copy(env, g.Env())
				for k, v := range c.env {
					env[k] = v
				}
				args := c.args
				if format == "json" {
					args = append(append([]string{}, args...), "-o", "json")
				}
				code, out, errOut := run(t, dir, env, args...)
				if code != exitcode.BadInput || !strings.Contains(errOut, c.field) {
					t.Errorf("%v: exit %d, want %d naming %q:\n%s", args, code, exitcode.BadInput, c.field, errOut)
				}
				if format == "text" && out != "" {
					t.Errorf("stdout not empty on bad input:\n%s", out)
				}
				if format == "json" {
					var doc result
					if err := json.Unmarshal([]byte(out), &doc); err != nil || doc.ExitCode != exitcode.BadInput || doc.OK || doc.Error == "" {
						t.Errorf("stdout is not one JSON document with exitCode 2: %v\n%s", err, out)
					}
				}
			})
		}
	}
	t.Cleanup(func() {
		reads := g.IAM.Counters.Reads.Load() + g.Projects.Counters.Reads.Load() + g.GKE.Counters.Reads.Load()
		if n := kubeRequests.Load(); n != 0 || g.Mutations() != 0 || reads != 0 {
			t.Errorf("bad input reached the servers: %d Kubernetes requests, %d Google reads, %d Google mutations", n, reads, g.Mutations())
		}
		t.Logf("%d hostile inputs x 2 output formats: each exit 2 naming the field; Kubernetes requests %d, Google calls %d",
			len(cases), kubeRequests.Load(), reads+g.Mutations())
	})
}
