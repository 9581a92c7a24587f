// Package verify checks everything that makes autoscaling work, in the
// walkthrough's order: the server and its /metrics, the PodMonitoring, the
// adapter and its APIServices, the metric through the custom metrics API for
// every pod, the HPA, and the identity bindings.
package verify

import (
	"context"
	"errors"
	"fmt"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/nativemetrics"
	"github.com/vllm-hpa/vllm-hpa/internal/output"
	"github.com/vllm-hpa/vllm-hpa/internal/reach"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
)

// Section is one group of checks, printed under its name.
type Section struct {
	Name  string
	Check func(ctx context.Context) ([]step.Result, error)
}

// Sections are verify's groups of checks, in the walkthrough's order
// (internal/steps): each step's own checks, each followed by the probes
// that follow it (step.Prober: after deploy the server's /metrics, after
// the adapter the HPA's metric through its route), which read more than
// a step's objects. server gives the vLLM server's base URL (a
// port-forward, or --endpoint). Only the steps in names are checked
// (verify --skip leaves the others out, with the probes that follow
// them).
func Sections(cfg *config.Config, s *steps.Stack, server *Server, names []string) []Section {
	env := step.ProbeEnv{Config: cfg, Deps: s.Deps(), ServerURL: server.URL}
	probes := steps.Probes()
	var out []Section
	for _, name := range steps.Names() {
		if !slices.Contains(names, name) {
			continue
		}
		out = append(out, Section{Name: name, Check: func(ctx context.Context) ([]step.Result, error) {
			st, err := s.Step(name)
			if err != nil {
				return nil, err
			}
			return st.Check(ctx)
		}})
		for _, p := range probes {
			if p.After == name {
				out = append(out, Section{Name: p.Name, Check: func(ctx context.Context) ([]step.Result, error) { return p.Check(ctx, env), nil }})
			}
		}
	}
	return out
}

// Checks runs every section in order, reporting each check to rec. The
// error is the first section that could not check (an error, not a failed
// check), else a *step.Failed with every failed check, else nil.
func Checks(ctx context.Context, sections []Section, rec *output.Progress) error {
	var failed []step.Result
	var firstErr error
	for _, sec := range sections {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec.StepStarted(sec.Name)
		results, err := sec.Check(ctx)
		var secFailed []step.Result
		for _, r := range results {
			rec.Result(r)
			if !r.OK {
				secFailed = append(secFailed, r)
			}
		}
		failed = append(failed, secFailed...)
		if err == nil && len(secFailed) > 0 {
			err = &step.Failed{Results: secFailed}
		}
		rec.StepDone(sec.Name, err)
		if err != nil && firstErr == nil && len(secFailed) == 0 {
			firstErr = fmt.Errorf("%s: %w", sec.Name, err)
		}
	}
	if firstErr != nil {
		return firstErr
	}
	if len(failed) > 0 {
		return &step.Failed{Results: failed}
	}
	return nil
}

// Server reaches the vLLM server: at Endpoint, or through a port-forward to
// a Ready pod behind the Service (moving to another Ready pod if the
// connection breaks), opened on first use.
type Server struct {
	Endpoint string
	Config   *config.Config
	Kube     *kube.Client
	// OnMove hears when the port-forward moves to another pod.
	OnMove func(from, to string, why error)

	tunnel *reach.Tunnel
}

// URL is the server's base URL.
func (s *Server) URL(ctx context.Context) (string, error) {
	switch {
	case s.Endpoint != "":
		return s.Endpoint, nil
	case s.tunnel != nil:
		return s.tunnel.URL(), nil
	case s.Kube == nil:
		return "", errors.New("no Kubernetes connection for a port-forward; give --endpoint")
	}
	w := s.Config.Workload
	t, err := reach.Open(ctx, s.Kube.Typed, s.Kube.Config, w.Namespace, s.Config.Service.Name, s.Config.Service.Port)
	if err != nil {
		return "", fmt.Errorf("port-forward to service %s/%s: %w", w.Namespace, s.Config.Service.Name, err)
	}
	t.OnMove = s.OnMove
	s.tunnel = t
	return t.URL(), nil
}

// Moves is how often the port-forward has moved to another pod (0 with
// --endpoint).
func (s *Server) Moves() int {
	if s.tunnel == nil {
		return 0
	}
	return s.tunnel.Moves()
}

// Close closes the port-forward, if one was opened.
func (s *Server) Close() {
	if s.tunnel != nil {
		s.tunnel.Close()
	}
}

// OtherBackendHint adds to a failed verify, when the live HPA reads its
// metric from the other backend than cfg's, how to check the route it
// uses: the checks were of the wrong one. One read, on failure only.
func OtherBackendHint(ctx context.Context, k *kube.Client, cfg *config.Config, err error) error {
	h, gerr := k.Typed.AutoscalingV2().HorizontalPodAutoscalers(cfg.Workload.Namespace).Get(ctx, cfg.HPA.Name, metav1.GetOptions{})
	if gerr != nil || len(h.Spec.Metrics) == 0 || h.Spec.Metrics[0].Pods == nil {
		return err
	}
	live := h.Spec.Metrics[0].Pods.Metric.Name
	_, _, native := nativemetrics.ParseMetricName(live)
	if native == cfg.Native() {
		return err
	}
	want := config.BackendAdapter
	if native {
		want = config.BackendNative
	}
	return exitcode.With(exitcode.Of(err), fmt.Errorf("%w\nthe HPA reads %s, the %s route, but these checks were of hpa.backend %s: run verify with --backend %s (or set hpa.backend in the configuration)", err, live, want, cfg.HPA.Backend, want))
}
