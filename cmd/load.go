package cmd

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/load"
)

func newLoadCmd(g *globalOptions) *cobra.Command {
	o := &runOptions{globalOptions: g, command: "load"}
	l := &loadFlags{}
	c := &cobra.Command{
		Use:   "load",
		Short: "Send the walkthrough's requests: an open-loop rate or a fixed concurrency, with a summary",
		Long: `Send chat completions to the vLLM server, as the walkthrough's request loop
does but measured: --rate requests start each second whether or not earlier
ones answered (open loop; default 1/s like the loop), or --concurrency keeps
that many in flight. Runs for --duration, or until Ctrl+C; then stops
starting requests, waits for those in flight, and prints a summary: sent,
succeeded, failed by status, latency p50/p90/p99 and the achieved rate.
Without --endpoint it port-forwards to a Ready pod behind the Service (and
needs --project for the configuration).`,
		Example: "  vllm-hpa load --project my-proj --rate 2 --duration 5m\n  vllm-hpa load --endpoint http://127.0.0.1:8081 --concurrency 10",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			l.complete(cmd)
			var err error
			if o.cfg, err = o.loadConfigFor(cmd, l.endpoint == ""); err != nil {
				return err
			}
			if _, err := l.options(o.cfg.Workload.Model, "-"); err != nil {
				return err
			}
			var k *kube.Client
			if l.endpoint == "" {
				deps, closeDeps, err := o.dependencies(ctx, nil, nil)
				if err != nil {
					return err
				}
				defer closeDeps()
				k = deps.Kube
			}
			url, closeTunnel, err := l.serverURL(ctx, o, k, func(from, to string, why error) {
				fmt.Fprintf(g.streams.ErrOut, "port-forward moved from pod %s to %s (%v)\n", from, to, why)
			})
			if err != nil {
				return exitcode.With(exitcode.Precondition, err)
			}
			defer closeTunnel()
			lo, _ := l.options(o.cfg.Workload.Model, url)
			fmt.Fprintf(g.streams.ErrOut, "sending to %s: %s (Ctrl+C stops and prints the summary)\n", url, describeLoad(lo))
			sum, err := load.Run(ctx, lo, nil)
			if err != nil {
				return err
			}
			if done, err := g.printDoc(sum); done {
				return err
			}
			for _, line := range sum.Lines() {
				fmt.Fprintln(g.streams.Out, line)
			}
			return nil
		},
	}
	l.add(c, 0)
	return c
}
