package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/vllm-hpa/vllm-hpa/internal/localcluster"
)

// The gke profile's lags, shortened, on the adapter route: the metric
// reaches the HPA only after the ingestion delay; the new pods wait for
// GPU nodes the cluster autoscaler adds (FailedScheduling,
// TriggeredScaleUp), pull, load (not Ready while /health fails), and are
// Ready before they can answer. verify --load's stages show each.
func TestGKEProfileOnEmulator(t *testing.T) {
	bin := k8sBin(t)
	o := GKEOptions(1)
	o.Dir, o.Bin = t.TempDir(), bin
	o.HPASyncPeriod, o.IngestionDelay = 2*time.Second, 4*time.Second
	o.GPUNodes = localcluster.GPUNodes{GPUs: 1, Provisioning: 3 * time.Second, Max: 4}
	o.ImagePull, o.ProbePeriod = time.Second, 500*time.Millisecond
	// Long enough that Ready comes WarmGap before the first answer.
	o.Sim.LoadTime, o.Sim.WarmupTime = 2*time.Second, 7*time.Second
	e, err := Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	cliEnv = map[string]string{
		"HOME":                                  t.TempDir(),
		"KUBECACHEDIR":                          t.TempDir(),
		"VLLM_HPA_MONITORING_INTERVAL":          "2s",
		"VLLM_HPA_HPA_SCALE_DOWN_STABILIZATION": "5s",
	}
	for k, v := range e.Env {
		cliEnv[k] = v
	}
	must(t, "up")
	r := must(t, "verify", "-o", "json", "--load", "--rate", "10", "--expect-replicas", "3", "--scale-down", "--wait-timeout", "3m")
	scaledUpAndDown(t, r)

	var doc struct {
		Stages struct {
			MetricAbove *float64 `json:"metricAboveTargetSeconds"`
			Decision    *float64 `json:"decisionSeconds"`
			Pods        []struct {
				Name             string   `json:"pod"`
				NodeCreated      *float64 `json:"nodeCreatedSeconds"`
				NodeReady        *float64 `json:"nodeReadySeconds"`
				Scheduled        *float64 `json:"scheduledSeconds"`
				Pulled           *float64 `json:"imagePulledSeconds"`
				Started          *float64 `json:"startedSeconds"`
				Ready            *float64 `json:"readySeconds"`
				FirstAnswer      *float64 `json:"firstAnswerSeconds"`
				FailedScheduling bool     `json:"failedScheduling"`
				TriggeredScaleUp bool     `json:"triggeredScaleUp"`
			} `json:"pods"`
			ReadyBeforeWarm []string `json:"readyBeforeWarm"`
		} `json:"stages"`
	}
	if err := json.Unmarshal([]byte(r.out), &doc); err != nil {
		t.Fatal(err)
	}
	s := doc.Stages
	// The model's lower bounds, not timings of this machine: a sample is
	// queryable IngestionDelay after its scrape, the scrape follows the
	// load.
	if s.MetricAbove == nil || *s.MetricAbove < o.IngestionDelay.Seconds() {
		t.Errorf("metric above target at %v s, before the %s ingestion delay", s.MetricAbove, o.IngestionDelay)
	}
	if s.Decision == nil || len(s.Pods) != 2 {
		t.Fatalf("want a decision and 2 new pods:\n%s", r.errOut)
	}
	for _, p := range s.Pods {
		if !p.FailedScheduling || !p.TriggeredScaleUp || p.NodeCreated == nil || p.NodeReady == nil {
			t.Errorf("%s: no node provisioning seen (failedScheduling %v, triggeredScaleUp %v, node %v/%v)", p.Name, p.FailedScheduling, p.TriggeredScaleUp, p.NodeCreated, p.NodeReady)
			continue
		}
		all := []*float64{p.Scheduled, p.Pulled, p.Started, p.Ready, p.FirstAnswer}
		for _, v := range all {
			if v == nil {
				t.Fatalf("%s: a stage is missing: %+v", p.Name, p)
			}
		}
		if *p.Scheduled < *p.NodeReady || *p.Pulled-*p.Scheduled < o.ImagePull.Seconds()-0.5 ||
			*p.Ready-*p.Started < o.Sim.LoadTime.Seconds()-0.5 || *p.FirstAnswer < *p.Ready {
			t.Errorf("%s: stages out of the model's order or shorter than its lags: %+v", p.Name, p)
		}
	}
	if len(s.ReadyBeforeWarm) == 0 {
		t.Errorf("no pod flagged Ready before warm with a %s warm-up:\n%s", o.Sim.WarmupTime, r.errOut)
	}
	for _, w := range []string{"biggest stage", "first answer"} {
		if !strings.Contains(r.errOut+r.out, w) {
			t.Errorf("verify does not show %q:\n%s", w, r.errOut)
		}
	}
	t.Logf("verify --load:\n%s", r.errOut[strings.Index(r.errOut, "scale-up, stage by stage"):])
	must(t, "cleanup")
}
