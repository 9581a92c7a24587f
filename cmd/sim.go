package cmd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/vllmsim"
)

func newSimCmd(g *globalOptions) *cobra.Command {
	cfg := vllmsim.DefaultConfig()
	var listen string
	c := &cobra.Command{
		Use:   "sim",
		Short: "Run a vLLM simulator (OpenAI API and vLLM's /metrics) to rehearse without a GPU",
		Long: `Run a stand-in for the vLLM server: POST /v1/chat/completions (plain and
stream: true), GET /v1/models, /health and /metrics with
vllm:num_requests_running, vllm:num_requests_waiting (label model_name) and a
latency histogram. Each answer takes --output-tokens x --token-latency; at
most --max-num-seqs run at once and the rest wait, so num_requests_waiting
rises under load as it does in vLLM. Runs until Ctrl+C.`,
		Example: "  vllm-hpa sim --listen 127.0.0.1:8081 &\n  vllm-hpa load --endpoint http://127.0.0.1:8081 --rate 5 --duration 30s",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.OutputTokens < 1 || cfg.MaxNumSeqs < 1 || cfg.TokenLatency < 0 || cfg.Model == "" {
				return exitcode.With(exitcode.BadInput, errors.New("invalid simulator: --output-tokens and --max-num-seqs must be >= 1, --token-latency >= 0, --sim-model set"))
			}
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return exitcode.With(exitcode.BadInput, fmt.Errorf("invalid --listen %q: %w", listen, err))
			}
			srv := &http.Server{Handler: vllmsim.New(cfg).Handler(), ReadHeaderTimeout: 10 * time.Second}
			fmt.Fprintf(g.streams.ErrOut, "vLLM simulator for %s on http://%s (%d tokens x %s, %d at once); Ctrl+C stops\n",
				cfg.Model, l.Addr(), cfg.OutputTokens, cfg.TokenLatency, cfg.MaxNumSeqs)
			go func() {
				<-cmd.Context().Done()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				srv.Shutdown(ctx)
			}()
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:8081", "address to listen on")
	f.StringVar(&cfg.Model, "sim-model", cfg.Model, "model id the simulator serves")
	f.DurationVar(&cfg.TokenLatency, "token-latency", cfg.TokenLatency, "time per generated token")
	f.IntVar(&cfg.OutputTokens, "output-tokens", cfg.OutputTokens, "tokens per answer (unless max_tokens is smaller)")
	f.IntVar(&cfg.MaxNumSeqs, "max-num-seqs", cfg.MaxNumSeqs, "requests running at once; the rest wait (vLLM's --max-num-seqs)")
	return c
}
