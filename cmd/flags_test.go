package cmd

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vllm-hpa/vllm-hpa/internal/cmdutil"
	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/environ"
	"github.com/vllm-hpa/vllm-hpa/internal/iostreams"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
)

// parse runs one command built with a stubbed run: flags are parsed and
// validated, and nothing is ever sent anywhere.
func parse(t *testing.T, build func(*globalOptions) *cobra.Command, env map[string]string, args ...string) error {
	t.Helper()
	streams, _, _ := iostreams.Test()
	dir := t.TempDir()
	e := map[string]string{"HOME": dir, "KUBECONFIG": writeFile(t, dir, "kubeconfig", kubeconfigWithDanglingContext)}
	for k, v := range env {
		e[k] = v
	}
	g := &globalOptions{f: cmdutil.New(streams, environ.New(e, dir)), streams: streams, output: outputText}
	root := &cobra.Command{Use: "vllm-hpa", SilenceErrors: true, SilenceUsage: true}
	root.PersistentFlags().StringVarP(&g.output, "output", "o", outputText, "")
	config.AddGlobalFlags(root.PersistentFlags())
	root.AddCommand(build(g))
	root.SetArgs(args)
	return root.ExecuteContext(context.Background())
}

func TestFlagsParseWithoutAPI(t *testing.T) {
	t.Parallel()
	var got *stackOptions
	capture := func(o *stackOptions) error { got = o; return nil }
	env := map[string]string{"HF_TOKEN": "hf_flagsTestToken", "VLLM_HPA_KUBE_KUBECONFIG": "", "VLLM_HPA_CLUSTER": "c", "VLLM_HPA_LOCATION": "us-central1"}

	if err := parse(t, func(g *globalOptions) *cobra.Command { return newUpCmd(g, capture) }, env,
		"up", "--project", "my-proj", "--skip", "identity", "-n", "team", "--target", "2.5", "--timeout", "90s"); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.steps, []string{"deploy", "monitor", "adapter", "hpa"}) || got.cfg.Workload.Namespace != "team" || got.cfg.HPA.Target != 2.5 || got.cfg.Timeouts.HPA != 90*time.Second {
		t.Errorf("up: steps %v namespace %q target %v timeout %v", got.steps, got.cfg.Workload.Namespace, got.cfg.HPA.Target, got.cfg.Timeouts.HPA)
	}

	if err := parse(t, func(g *globalOptions) *cobra.Command { return newCleanupCmd(g, capture) }, env,
		"cleanup", "--project", "my-proj", "adapter", "deploy", "--keep-workload"); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.steps, []string{"adapter"}) {
		t.Errorf("cleanup adapter deploy --keep-workload: steps %v, want [adapter]", got.steps)
	}

	// Each step's command has its step's flags, not the others'.
	for _, d := range steps.Ordered {
		c := newStepCmd(&globalOptions{f: cmdutil.New(iostreams.System(), environ.System())}, d, capture)
		has := func(f string) bool { return c.Flags().Lookup(f) != nil }
		if (d.Name() == "hpa") != has("target") || (d.Name() == "deploy") != has("hf-token-file") || (d.Name() == "identity") != has("gsa-name") {
			t.Errorf("%s: flags %v", d.Name(), flagNames(c))
		}
	}

	var v *verifyOptions
	if err := parse(t, func(g *globalOptions) *cobra.Command {
		return newVerifyCmd(g, func(o *verifyOptions) error { v = o; return nil })
	}, env, "verify", "--project", "my-proj", "--load", "--rate", "10", "--expect-replicas", "3", "--endpoint", "http://127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	if !v.withLoad || v.rate != 10 || v.expectReplicas != 3 || v.endpoint != "http://127.0.0.1:1" {
		t.Errorf("verify options %+v", v)
	}
}

func flagNames(c *cobra.Command) string {
	var names []string
	c.Flags().VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
	return strings.Join(names, " ")
}
