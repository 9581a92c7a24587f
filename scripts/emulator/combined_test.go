package main

import (
	"strings"
	"testing"
)

// A combined strategy on both backends: one HPA on running and kv-cache,
// with a running target the load never reaches (100) and a kv-cache target
// it passes (0.2 of a 1,000-token cache that 10 answers of about 57 tokens
// fill to 0.57): the HPA scales 1 -> 3 (its maximum) on kv-cache alone,
// so the second metric is read and the HPA takes the larger count.
//
// The second backend is hpa.backend auto, on an emulated cluster that
// serves GKE's native custom metrics (GA, performance profile): up says
// it chose native, builds no adapter and changes nothing on Google's
// side, the HPA scales on autoscaling.gke.io|gemma-server-vllm|... as the
// GKE stand-in serves it, and cleanup leaves nothing owned. A scale on
// the walkthrough's own metric, num-requests-running, on the native
// route is the native demo's (BACKEND=native make demo in
// docs/native-metrics.md, run by TestDocumentedDemo: 1 -> 3 -> 1).
func TestCombinedStrategyOnEmulator(t *testing.T) {
	parallel(t)
	o := testOptions(t)
	o.Sim.KVCacheTokens = 1000
	// A Standard cluster this time (the others are Autopilot), whose L4
	// pool holds the image on a secondary boot disk: up says so.
	o.ImageCache = "boot-disk"
	e := startEmulator(t, o)
	for _, backend := range []string{"adapter", "auto"} {
		t.Run(backend, func(t *testing.T) {
			useEmulator(t, e, map[string]string{
				"VLLM_HPA_HPA_BACKEND":         backend,
				"VLLM_HPA_HPA_METRIC":          "running+kv-cache",
				"VLLM_HPA_HPA_TARGET":          "100",
				"VLLM_HPA_HPA_KV_CACHE_TARGET": "0.2",
				// The cache's use moves with every answer's start and end:
				// the HPA may ask for 2, then 4, on the way. At most 3.
				"VLLM_HPA_HPA_MAX_REPLICAS": "3",
			})
			mutations := e.GCP.Mutations()
			up := must(t, "up")
			if !strings.Contains(up.errOut, "the image cache of a secondary boot disk on l4-pool") {
				t.Errorf("up does not say the pool holds the image:\n%s", up.errOut)
			}
			kv := "prometheus.googleapis.com|vllm:kv_cache_usage_perc|gauge"
			if backend == "auto" {
				kv = "autoscaling.gke.io|gemma-server-vllm|kv-cache-usage-perc"
				nativeUp(t, e, up, mutations)
			}
			r := must(t, "verify", "-o", "json", "--load", "--rate", "10", "--expect-replicas", "3", "--scale-down", "--wait-timeout", "2m")
			scaledUpAndDown(t, r)
			if !strings.Contains(r.errOut, kv+" above target") {
				t.Errorf("the HPA did not scale on %s:\n%s", kv, r.errOut)
			}
			if !strings.Contains(r.errOut, "kv-cache current") {
				t.Errorf("verify does not show kv-cache's current value:\n%s", r.errOut)
			}
			must(t, "cleanup")
			if left := owned(t, e); len(left) != 0 {
				t.Errorf("cleanup left %v", left)
			}
		})
	}
}

// nativeUp checks what up did on the native route: chose it, built no
// adapter, made no Google API change (since mutations), and created the
// AutoscalingMetric.
func nativeUp(t *testing.T, e *Emulator, up runResult, mutations int64) {
	t.Helper()
	if !strings.Contains(up.errOut, "hpa.backend auto: native, as cluster gpu-hpa serves") {
		t.Errorf("up does not say it chose native:\n%s", up.errOut)
	}
	if n := e.GCP.Mutations() - mutations; n != 0 {
		t.Errorf("the native route made %d Google API changes", n)
	}
	objects := owned(t, e)
	for o := range objects {
		if strings.Contains(o, "custom-metrics") || strings.Contains(o, "APIService") {
			t.Errorf("the native route created %s", o)
		}
	}
	if _, ok := objects["AutoscalingMetric default/gemma-server-vllm"]; !ok {
		t.Errorf("no AutoscalingMetric among %v", objects)
	}
}
