package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/vllm-hpa/vllm-hpa/internal/behavior"
	"github.com/vllm-hpa/vllm-hpa/internal/localcluster"
	"github.com/vllm-hpa/vllm-hpa/internal/stages"
)

// The gke profile's lags, shortened, on the adapter route: the metric
// reaches the HPA only after the ingestion delay; the new pods wait for
// GPU nodes the cluster autoscaler adds (FailedScheduling,
// TriggeredScaleUp), pull, load (not Ready while /health fails), and are
// Ready before they can answer. verify --load's stages show each. The
// cold start's cutters are on: the vLLM image on the GPU pool's secondary
// boot disk, and the weights streamed from Cloud Storage as the pods' own
// identity (whose grant IAM applies only after a while: a pod that starts
// before restarts); both stages come out shorter than the model's figures
// without them, and cleanup takes the bucket grant back.
func TestGKEProfileOnEmulator(t *testing.T) {
	parallel(t)
	o := GKEOptions(1, false)
	o.Dir, o.Bin = t.TempDir(), k8sBin(t)
	o.HPASyncPeriod, o.IngestionDelay, o.IAMPropagation = 2*time.Second, 4*time.Second, 4*time.Second
	o.GPUNodes = localcluster.GPUNodes{GPUs: 1, Provisioning: 3 * time.Second, Max: 4}
	// Events are stamped in whole seconds: a whole pull of 4 s keeps the
	// boot disk's (4 s / 29) under half of it even when its two stamps
	// straddle a second on a busy machine (1 s straddled half of 1 s).
	o.ImagePull, o.ProbePeriod = 4*time.Second, 500*time.Millisecond
	// Long enough that Ready comes WarmGap before the first answer.
	o.Sim.LoadTime, o.Sim.WarmupTime = 2*time.Second, 7*time.Second
	o.CrashBackoff = 2 * time.Second
	// 6 GB of weights: 6 s from Hugging Face, 1 s streamed.
	o.ImageCache, o.Weights = "boot-disk", Weights{Bytes: 6e9, HubRate: 1e9, StreamerRate: 6e9}
	e := startEmulator(t, o)
	// The metric lags the pods here (ingestion 4 s, HPA sync 2 s): the
	// HPA may read the one pod's load after it has scaled and ask for
	// more, as on GKE. At most 3, the walkthrough's.
	// The simulator answers in about a second: the fast profile's drain
	// (at GKE's timings the profile leaves vllm-hpa's 30 s).
	useEmulator(t, e, map[string]string{"VLLM_HPA_HPA_MAX_REPLICAS": "3", "VLLM_HPA_WORKLOAD_DRAIN": DefaultOptions().Settings["VLLM_HPA_WORKLOAD_DRAIN"]})
	must(t, "up", "--model-source", o.ModelBucket)
	r := must(t, "verify", "-o", "json", "--model-source", o.ModelBucket, "--load", "--rate", "10", "--expect-replicas", "3", "--scale-down", "--wait-timeout", "3m")
	scaledUpAndDown(t, r)
	for _, w := range []string{"model loaded from " + o.ModelBucket, "model bucket readable by the vLLM pods"} {
		if !strings.Contains(r.errOut+r.out, w) {
			t.Errorf("verify does not prove %q:\n%s", w, r.errOut)
		}
	}

	var doc struct {
		Stages   stages.Report
		Behavior *behavior.Recommendation
	}
	if err := json.Unmarshal([]byte(r.out), &doc); err != nil {
		t.Fatal(err)
	}
	s := doc.Stages
	d := func(v *stages.Seconds) time.Duration { return time.Duration(*v) }
	// The model's lower bounds, not timings of this machine: a sample is
	// queryable IngestionDelay after its scrape, the scrape follows the
	// load.
	if s.MetricAbove == nil || d(s.MetricAbove) < o.IngestionDelay {
		t.Errorf("metric above target at %v, before the %s ingestion delay", s.MetricAbove, o.IngestionDelay)
	}
	if s.Decision == nil || len(s.Pods) != 2 {
		t.Fatalf("want a decision and 2 new pods:\n%s", r.errOut)
	}
	const slack = 500 * time.Millisecond // events and conditions are stamped in whole seconds
	for _, p := range s.Pods {
		if !p.FailedScheduling || !p.TriggeredScaleUp || p.NodeCreated == nil || p.NodeReady == nil {
			t.Errorf("%s: no node provisioning seen (failedScheduling %v, triggeredScaleUp %v, node %v/%v)", p.Name, p.FailedScheduling, p.TriggeredScaleUp, p.NodeCreated, p.NodeReady)
			continue
		}
		for _, v := range []*stages.Seconds{p.Scheduled, p.Pulled, p.Started, p.Ready, p.FirstAnswer} {
			if v == nil {
				t.Fatalf("%s: a stage is missing: %+v", p.Name, p)
			}
		}
		// The cutters: the pull from the boot disk, the weights streamed.
		load := d(p.Ready) - d(p.Started)
		if d(p.Scheduled) < d(p.NodeReady) || d(p.Pulled)-d(p.Scheduled) >= o.ImagePull/2 ||
			load < o.Sim.LoadTime+o.Weights.stream(o.Weights.Bytes)-slack || load >= o.Sim.LoadTime+o.Weights.download() || d(p.FirstAnswer) < d(p.Ready) {
			t.Errorf("%s: stages out of the model's order, or not cut (pull %s of %s whole; load %s against %s streamed, %s downloaded): %+v", p.Name,
				d(p.Pulled)-d(p.Scheduled), o.ImagePull, load, o.Sim.LoadTime+o.Weights.stream(o.Weights.Bytes), o.Sim.LoadTime+o.Weights.download(), p)
		}
	}
	// The behaviour the cold start asks for: nothing holds a scale-up
	// back, and the scale-down window is at least the cold start.
	if b := doc.Behavior; b == nil || b.ScaleUpStabilization != 0 || b.ScaleUpPercent < 100 || b.ScaleDownStabilization < b.ColdStart || b.ColdStart <= 0 {
		t.Errorf("behaviour %+v, want none on scale-up and a scale-down window of at least the cold start:\n%s", doc.Behavior, r.errOut)
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
	if pol := e.GCP.Storage.Policy(strings.Split(strings.TrimPrefix(o.ModelBucket, "gs://"), "/")[0]); len(pol.Bindings) != 0 {
		t.Errorf("cleanup left the bucket's policy %v", pol)
	}
}
