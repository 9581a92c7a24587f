package cmd

// Every command's Run with a fake connection (cmdutil.Factory.Connector):
// what it asks to connect to, and what it prints and exits with when the
// connection fails. No control plane, no Google API.

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/vllm-hpa/vllm-hpa/internal/cmdutil"
	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/environ"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/iostreams"
	"github.com/vllm-hpa/vllm-hpa/internal/output"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// fakeConnection records what a command asked to connect to, and fails
// as told.
type fakeConnection struct {
	mu    sync.Mutex
	needs []cmdutil.Need
	err   error
}

func (c *fakeConnection) connect(_ context.Context, _ *config.Config, need cmdutil.Need, _ *output.Progress) (step.Deps, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.needs = append(c.needs, need)
	return step.Deps{}, c.err
}

// runFake runs the CLI with conn in place of the real connection, with a
// kubeconfig that names a cluster nothing dials.
func runFake(t *testing.T, conn *fakeConnection, args ...string) (int, string, string) {
	t.Helper()
	dir := t.TempDir()
	kubeconfig := writeFile(t, dir, "kubeconfig", `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`)
	env := map[string]string{"HOME": dir, "KUBECONFIG": kubeconfig, "HF_TOKEN": "hf_fakeConnectionToken", "VLLM_HPA_PROJECT": "my-proj"}
	streams, out, errOut := iostreams.Test()
	f := cmdutil.New(streams, environ.New(env, dir))
	f.Connector = conn.connect
	code := Run(context.Background(), f, args)
	return code, out.String(), errOut.String()
}

// What each command connects to: the Google APIs where its steps call
// them or explain with them (optional until the backend is known), none
// for load.
func TestCommandsAskForWhatTheyUse(t *testing.T) {
	t.Parallel()
	iam := cmdutil.Need{GoogleAPIs: true, GCPOptional: true}
	kubeOnly := cmdutil.Need{GCPOptional: true}
	cases := []struct {
		args []string
		want cmdutil.Need
	}{
		{[]string{"up"}, iam},
		{[]string{"up", "--skip", "identity,hpa"}, kubeOnly},
		{[]string{"deploy"}, kubeOnly},
		{[]string{"deploy", "--model-source", "gs://my-models/m"}, iam},
		{[]string{"identity"}, iam},
		{[]string{"hpa"}, iam}, // it explains a metric the adapter does not serve
		{[]string{"cleanup"}, iam},
		{[]string{"cleanup", "deploy"}, kubeOnly},
		{[]string{"cleanup", "--dry-run"}, iam},
		{[]string{"verify"}, iam},
		{[]string{"status"}, iam},
		{[]string{"tune"}, kubeOnly},
		{[]string{"load"}, cmdutil.Need{}},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			t.Parallel()
			conn := &fakeConnection{err: exitcode.With(exitcode.Precondition, errors.New("fake: the cluster does not answer"))}
			code, _, errOut := runFake(t, conn, c.args...)
			if code != exitcode.Precondition || !strings.Contains(errOut, "fake: the cluster does not answer") {
				t.Errorf("exit %d, want %d with the connection's error:\n%s", code, exitcode.Precondition, errOut)
			}
			if len(conn.needs) != 1 || conn.needs[0] != c.want {
				t.Errorf("connected %d times asking for %+v, want once for %+v", len(conn.needs), conn.needs, c.want)
			}
		})
	}
}

// A connection that fails is the one document on stdout, with the exit
// code it means, for every command that connects.
func TestConnectionFailureDocuments(t *testing.T) {
	t.Parallel()
	failures := []struct {
		name string
		err  error
		code int
		say  string
	}{
		{"unreachable", exitcode.With(exitcode.Precondition, errors.New("the cluster does not answer")), exitcode.Precondition, "the cluster does not answer"},
		{"denied", exitcode.With(exitcode.Denied, errors.New("permission denied: the caller lacks container.clusters.get")), exitcode.Denied, "container.clusters.get"},
		{"no credentials", exitcode.With(exitcode.Precondition, &gcp.NoCredentialsError{Err: errors.New("could not find default credentials")}), exitcode.Precondition, "could not find default credentials"},
	}
	for _, f := range failures {
		for _, command := range [][]string{{"up"}, {"identity"}, {"cleanup"}, {"verify"}, {"status"}, {"tune"}} {
			t.Run(f.name+"/"+command[0], func(t *testing.T) {
				t.Parallel()
				code, out, errOut := runFake(t, &fakeConnection{err: f.err}, append(command, "-o", "json")...)
				var doc struct {
					Command  string `json:"command"`
					OK       bool   `json:"ok"`
					ExitCode int    `json:"exitCode"`
					Error    string `json:"error"`
				}
				if err := json.Unmarshal([]byte(out), &doc); err != nil {
					t.Fatalf("stdout is not one JSON document (%v):\n%s", err, out)
				}
				if code != f.code || doc.OK || doc.ExitCode != f.code || doc.Command != command[0] || !strings.Contains(doc.Error, f.say) {
					t.Errorf("exit %d, document %+v; want exit %d saying %q\nstderr:\n%s", code, doc, f.code, f.say, errOut)
				}
			})
		}
	}
}

// Without Google credentials, a run whose steps call Google says which
// step needs them and how to leave it out.
func TestNoCredentialsNamesTheStep(t *testing.T) {
	t.Parallel()
	noCreds := exitcode.With(exitcode.Precondition, &gcp.NoCredentialsError{Err: errors.New("could not find default credentials")})
	for _, args := range [][]string{{"up"}, {"identity"}, {"cleanup"}} {
		code, _, errOut := runFake(t, &fakeConnection{err: noCreds}, args...)
		if code != exitcode.Precondition || !strings.Contains(errOut, "--skip identity") {
			t.Errorf("%v: exit %d, want %d naming --skip identity:\n%s", args, code, exitcode.Precondition, errOut)
		}
	}
	// deploy calls no Google API: no such hint.
	code, _, errOut := runFake(t, &fakeConnection{err: noCreds}, "deploy")
	if code != exitcode.Precondition || strings.Contains(errOut, "--skip identity") {
		t.Errorf("deploy: exit %d:\n%s", code, errOut)
	}
}

// A command that reaches no project or cluster refuses the flags that say
// how to, and a read-only command has no flag that says how to change.
func TestFlagsOnlyWhereUsed(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"version", "--project", "x"}, {"version", "--kubeconfig", "/k"}, {"sim", "--cluster", "c"}, {"options", "--context", "x"},
		{"status", "--adopt"}, {"status", "--force-conflicts"}, {"render", "--adopt"}, {"verify", "--force-conflicts"},
		{"load", "--instance", "x"},
	} {
		code, _, errOut := runFake(t, &fakeConnection{}, args...)
		if code != exitcode.BadInput || !strings.Contains(errOut, args[1]) {
			t.Errorf("%v: exit %d, want %d naming %s:\n%s", args, code, exitcode.BadInput, args[1], errOut)
		}
	}
	if code, out, errOut := runFake(t, &fakeConnection{}, "version", "-o", "json"); code != 0 || !strings.Contains(out, `"version"`) {
		t.Errorf("version -o json: exit %d:\n%s%s", code, out, errOut)
	}
}
