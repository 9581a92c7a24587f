package deploy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/promtext"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// Probe is verify's "metrics" section, right after deploy's checks: the
// server's own /metrics carries the gauges the stack reads, for the model.
func (Definition) Probe() step.Probe {
	return step.Probe{Name: "metrics", After: Name, Check: func(ctx context.Context, env step.ProbeEnv) []step.Result {
		u, err := env.ServerURL(ctx)
		if err != nil {
			return []step.Result{{Step: "metrics", Check: "vllm /metrics reachable", Reason: "Unreachable", Message: err.Error()}}
		}
		w := env.Config.Workload
		out := []step.Result{MetricsEndpoint(ctx, u, w.Model, RequiredGauges(env.Config))}
		if w.ModelSource != "" {
			out = append(out, ModelLoadedFrom(ctx, u, w.Model, w.ModelSource))
		}
		return out
	}}
}

// Gauges are the vLLM gauges verify requires on /metrics.
var Gauges = []string{"vllm:num_requests_running", "vllm:num_requests_waiting"}

// RequiredGauges are Gauges and those of the HPA's metrics.
func RequiredGauges(cfg *config.Config) []string {
	out := slices.Clone(Gauges)
	for _, m := range cfg.ScaledMetrics() {
		if !slices.Contains(out, m.Gauge) {
			out = append(out, m.Gauge)
		}
	}
	return out
}

// maxProbeBody bounds what a probe reads of the server's answer.
const maxProbeBody = 16 << 20

// probeGet GETs base+path within 15 s and hands a 200's body (at most
// maxProbeBody) to judge; r is the result it fills when the server cannot
// be read.
func probeGet(ctx context.Context, base, path string, r step.Result, judge func(body io.Reader) step.Result) step.Result {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.Reason, r.Message = "Unreachable", err.Error()
		return r
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		r.Reason, r.Message = "HTTPStatus", fmt.Sprintf("GET %s answered %s", path, resp.Status)
		return r
	}
	return judge(io.LimitReader(resp.Body, maxProbeBody))
}

// MetricsEndpoint fetches base/metrics and checks that the gauges are
// there for the model, parsing the Prometheus text format.
func MetricsEndpoint(ctx context.Context, base, model string, gauges []string) step.Result {
	r := step.Result{Step: "metrics", Check: "vllm /metrics carries the gauges"}
	return probeGet(ctx, base, "/metrics", r, func(body io.Reader) step.Result { return judgeMetrics(r, body, model, gauges) })
}

func judgeMetrics(r step.Result, body io.Reader, model string, gauges []string) step.Result {
	fams, err := promtext.Families(body)
	if err != nil {
		r.Reason, r.Message = "Unparsable", err.Error()
		return r
	}
	var have, missing []string
	for _, g := range gauges {
		if v, ok := promtext.Gauge(fams, g, map[string]string{"model_name": model}); ok {
			have = append(have, fmt.Sprintf("%s=%g", g, v))
		} else {
			missing = append(missing, g)
		}
	}
	if len(missing) > 0 {
		r.Reason, r.Message = "GaugeMissing", fmt.Sprintf("no %s with model_name=%q on /metrics", strings.Join(missing, ", "), model)
		return r
	}
	r.OK, r.Message = true, strings.Join(have, " ")
	return r
}
