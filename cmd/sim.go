package cmd

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/vllmsim"
)

type simOptions struct {
	*globalOptions
	cfg    vllmsim.Config
	listen string
}

// Complete has nothing to read: the simulator takes only its flags.
func (o *simOptions) Complete(*cobra.Command, []string) error { return nil }

// Run serves the simulator until ctx ends (Ctrl+C).
func (o *simOptions) Run(ctx context.Context) error {
	cfg := &o.cfg
	p, err := vllmsim.Listen(o.listen, *cfg)
	if err != nil {
		return exitcode.With(exitcode.Precondition, fmt.Errorf("cannot listen on --listen %q: %w", o.listen, err))
	}
	fmt.Fprintf(o.streams.ErrOut, "vLLM simulator for %s on http://%s (%d tokens x %s, %d at once); Ctrl+C stops it as SIGTERM stops vLLM, cutting the requests in flight\n",
		cfg.Model, p.Addr(), cfg.OutputTokens, cfg.TokenLatency, cfg.MaxNumSeqs)
	go func() {
		<-ctx.Done()
		p.Terminate()
	}()
	return p.Wait()
}

// Validate checks the simulator's flags before it listens.
func (o *simOptions) Validate() error {
	bad := func(flag, value, allowed string) error {
		return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid --%s %q: must be %s", flag, value, allowed))
	}
	c := o.cfg
	switch {
	case c.OutputTokens < 1 || c.OutputTokens > 1<<20:
		return bad("output-tokens", fmt.Sprint(c.OutputTokens), "between 1 and 1048576")
	case c.MaxNumSeqs < 1 || c.MaxNumSeqs > 100000:
		return bad("max-num-seqs", fmt.Sprint(c.MaxNumSeqs), "between 1 and 100000")
	case c.TokenLatency < 0 || c.TokenLatency > time.Minute:
		return bad("token-latency", c.TokenLatency.String(), "between 0 and 1m")
	case c.BatchLatency < 0 || c.BatchLatency > time.Second:
		return bad("batch-latency", c.BatchLatency.String(), "between 0 and 1s")
	case c.PrefillLatency < 0 || c.PrefillLatency > time.Second:
		return bad("prefill-latency", c.PrefillLatency.String(), "between 0 and 1s")
	case c.KVCacheTokens < 0 || c.KVCacheTokens > 1<<30:
		return bad("kv-cache-tokens", fmt.Sprint(c.KVCacheTokens), "between 0 (unlimited) and 1073741824")
	case c.LoadTime < 0 || c.LoadTime > time.Hour:
		return bad("load-time", c.LoadTime.String(), "between 0 and 1h, such as 90s")
	case c.WarmupTime < 0 || c.WarmupTime > time.Hour:
		return bad("warmup-time", c.WarmupTime.String(), "between 0 and 1h, such as 20s")
	case strings.TrimSpace(c.Model) == "":
		return bad("model", c.Model, "a model id such as google/gemma-3-1b-it")
	}
	host, port, err := net.SplitHostPort(o.listen)
	if err != nil {
		return bad("listen", o.listen, "host:port, such as 127.0.0.1:8081")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return bad("listen", o.listen, "host:port with a port between 0 and 65535")
	}
	if host != "" && net.ParseIP(host) == nil && host != "localhost" {
		return bad("listen", o.listen, "an IP address or localhost and a port, such as 127.0.0.1:8081")
	}
	return nil
}

func newSimCmd(g *globalOptions) *cobra.Command {
	o := &simOptions{globalOptions: g, cfg: vllmsim.DefaultConfig()}
	cfg := &o.cfg
	c := &cobra.Command{
		Annotations: map[string]string{localOnly: "true"},
		Use:         "sim",
		Short:       "Run a vLLM simulator (OpenAI API and vLLM's /metrics) to rehearse without a GPU",
		Long: `Run a stand-in for the vLLM server: POST /v1/chat/completions (plain and
stream: true), GET /v1/models, /health and /metrics with
vllm:num_requests_running, vllm:num_requests_waiting, vllm:kv_cache_usage_perc
(label model_name) and the time-to-first-token, inter-token and end-to-end
latency histograms. Continuous batching: each decode step takes
--token-latency plus --batch-latency per running request, so per-token
latency grows with the batch; the prompt costs --prefill-latency per token
first. At most --max-num-seqs run at once, and only while the KV cache
(--kv-cache-tokens, prompt and answer reserved per request) has room; the
rest wait in order, so num_requests_waiting rises under load as in vLLM.
docs/simulator.md describes the model and its limits. Runs until Ctrl+C.`,
		Example: "  vllm-hpa sim --listen 127.0.0.1:8081 & sleep 1\n  vllm-hpa load --endpoint http://127.0.0.1:8081 --rate 5 --duration 10s",
		Args:    noArgs,
		RunE:    runCommand(o, nil),
	}
	f := c.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:8081", "address to listen on")
	f.StringVar(&cfg.Model, "model", cfg.Model, "model id the simulator serves")
	// --sim-model, its old name, still works for scripts written before
	// sim took --model as every other command does (a deprecation notice
	// would land on stdout, which holds only results).
	f.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		if name == "sim-model" {
			name = "model"
		}
		return pflag.NormalizedName(name)
	})
	f.DurationVar(&cfg.TokenLatency, "token-latency", cfg.TokenLatency, "time per generated token")
	f.IntVar(&cfg.OutputTokens, "output-tokens", cfg.OutputTokens, "tokens per answer (unless max_tokens is smaller)")
	f.IntVar(&cfg.MaxNumSeqs, "max-num-seqs", cfg.MaxNumSeqs, "requests running at once; the rest wait (vLLM's --max-num-seqs)")
	f.DurationVar(&cfg.BatchLatency, "batch-latency", cfg.BatchLatency, "what each running request adds to a decode step (continuous batching)")
	f.DurationVar(&cfg.PrefillLatency, "prefill-latency", cfg.PrefillLatency, "prefill time per prompt token (time to first token)")
	f.IntVar(&cfg.KVCacheTokens, "kv-cache-tokens", cfg.KVCacheTokens, "KV cache size in tokens; a request waits until its prompt and answer fit (0: unlimited)")
	f.DurationVar(&cfg.LoadTime, "load-time", cfg.LoadTime, "model load after start: /health answers 503 and nothing is served")
	f.DurationVar(&cfg.WarmupTime, "warmup-time", cfg.WarmupTime, "warm-up after the load: /health answers 200, completions wait (Ready before warm)")
	return c
}
