package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/load"
	"github.com/vllm-hpa/vllm-hpa/internal/output"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/timeline"
)

// LoadTest is verify --load: send load while recording the HPA's
// reaction, then (optionally) wait for a scale-up and a scale-down.
type LoadTest struct {
	// Load is what to send (its URL the server's).
	Load load.Options
	// ExpectReplicas, if > 0, fails the test (exit 4) unless that many
	// replicas are Ready within WaitTimeout.
	ExpectReplicas int32
	// ScaleDown then stops the load and waits for the HPA's minimum.
	ScaleDown   bool
	WaitTimeout time.Duration
	// Report, if set, is a file the timeline and load summary go to.
	Report string
	// Scrub, if set, cleans what goes to Report of secrets.
	Scrub func(string) string
}

// LoadResult is what a load test saw: the load's summary and the HPA's
// timeline.
type LoadResult struct {
	Load     *load.Summary      `json:"load,omitempty"`
	Timeline *timeline.Timeline `json:"timeline,omitempty"`
}

// Run sends the load and watches; rec gets a "load" step.
func (o LoadTest) Run(ctx context.Context, cfg *config.Config, k *kube.Client, rec *output.Progress) (*LoadResult, error) {
	lo, url := o.Load, o.Load.URL
	rec.StepStarted("load")
	start := time.Now()
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	tl := timeline.Start(wctx, k, cfg.Workload.Namespace, cfg.HPA.Name, cfg.Workload.Deployment, cfg.AdapterMetricName(), start, func(s timeline.Sample, rs *timeline.Rescale) {
		if rs != nil {
			rec.Action("load", fmt.Sprintf("%s SuccessfulRescale: %s", rs.At, rs.Message))
		}
	})
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	type result struct {
		sum *load.Summary
		err error
	}
	loadDone := make(chan result, 1)
	go func() {
		sum, err := load.Run(loadCtx, lo, nil)
		loadDone <- result{sum, err}
	}()
	rec.Action("load", fmt.Sprintf("sending to %s: %s", url, Describe(lo)))

	var waitErr error
	if o.ExpectReplicas > 0 {
		w, cancel := context.WithTimeout(ctx, o.WaitTimeout)
		err := tl.WaitFor(w, func(s timeline.Sample) bool { return s.Ready >= o.ExpectReplicas })
		cancel()
		if err != nil {
			waitErr = fmt.Errorf("%d replicas not Ready within %s (now %d): %w", o.ExpectReplicas, o.WaitTimeout, tl.Current().Ready, err)
			if ctx.Err() == nil {
				waitErr = exitcode.With(exitcode.Timeout, waitErr)
			}
		} else {
			rec.Result(step.Result{Step: "load", Check: fmt.Sprintf("%d replicas ready", o.ExpectReplicas), OK: true, Message: "after " + timeline.Seconds(time.Since(start)).String()})
		}
	}
	if o.ExpectReplicas > 0 || o.ScaleDown {
		stopLoad() // the scale-up is proven (or failed): stop sending
	}
	res := <-loadDone
	if res.err != nil && waitErr == nil {
		waitErr = res.err
	}
	if res.sum != nil {
		for _, l := range res.sum.Lines() {
			rec.Action("load", l)
		}
	}
	if waitErr == nil && o.ScaleDown {
		w, cancel := context.WithTimeout(ctx, o.WaitTimeout)
		err := tl.WaitFor(w, func(s timeline.Sample) bool {
			return s.Ready <= cfg.HPA.MinReplicas && s.Replicas <= cfg.HPA.MinReplicas
		})
		cancel()
		if err != nil {
			waitErr = exitcode.With(exitcode.Timeout, fmt.Errorf("no scale-down to %d replicas within %s: %w", cfg.HPA.MinReplicas, o.WaitTimeout, err))
		} else {
			rec.Result(step.Result{Step: "load", Check: fmt.Sprintf("scaled down to %d", cfg.HPA.MinReplicas), OK: true, Message: "after " + timeline.Seconds(time.Since(start)).String()})
		}
	}
	stopWatch()
	t := tl.Timeline()
	if t.FirstScaleUp != nil {
		rec.Action("load", "load start -> first scale-up: "+t.FirstScaleUp.String())
	}
	if t.ScaledUpReady != nil {
		rec.Action("load", "load start -> scaled-up pods Ready: "+t.ScaledUpReady.String())
	}
	for _, line := range timeline.Chart(t, 60) {
		rec.Action("load", line)
	}
	if o.Report != "" {
		b, _ := json.MarshalIndent(map[string]any{"load": res.sum, "timeline": t}, "", "  ")
		if o.Scrub != nil {
			b = []byte(o.Scrub(string(b)))
		}
		if err := os.WriteFile(o.Report, append(b, '\n'), 0o644); err != nil && waitErr == nil {
			waitErr = fmt.Errorf("write --report: %w", err)
		}
	}
	rec.StepDone("load", waitErr)
	return &LoadResult{Load: res.sum, Timeline: &t}, waitErr
}

// Describe says what a load sends, for progress lines.
func Describe(o load.Options) string {
	d := "until stopped"
	if o.Duration > 0 {
		d = "for " + o.Duration.String()
	}
	if o.Concurrency > 0 {
		return fmt.Sprintf("%d requests in flight %s", o.Concurrency, d)
	}
	return fmt.Sprintf("%g requests/s %s", o.Rate, d)
}
