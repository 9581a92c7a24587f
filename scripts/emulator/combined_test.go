package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A combined strategy on both backends: one HPA on running and kv-cache,
// with a running target the load never reaches (100) and a kv-cache target
// it passes (0.2 of a 1,000-token cache that 10 answers of about 57 tokens
// fill to 0.57): the HPA scales 1 -> 3 on kv-cache alone, so the second
// metric is read and the HPA takes the larger count.
func TestCombinedStrategyOnEmulator(t *testing.T) {
	bin := k8sBin(t)
	o := DefaultOptions()
	o.Dir, o.Bin = t.TempDir(), bin
	o.HPASyncPeriod, o.ImagePull, o.NativeInterval = 2*time.Second, time.Second, 2*time.Second
	o.Sim.KVCacheTokens = 1000
	e, err := Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	for _, backend := range []string{"adapter", "native"} {
		t.Run(backend, func(t *testing.T) {
			cliEnv = map[string]string{
				"HOME":                                  t.TempDir(),
				"KUBECACHEDIR":                          t.TempDir(),
				"VLLM_HPA_MONITORING_INTERVAL":          "2s",
				"VLLM_HPA_HPA_SCALE_DOWN_STABILIZATION": "5s",
				"VLLM_HPA_HPA_BACKEND":                  backend,
				"VLLM_HPA_HPA_METRIC":                   "running+kv-cache",
				"VLLM_HPA_HPA_TARGET":                   "100",
				"VLLM_HPA_HPA_KV_CACHE_TARGET":          "0.2",
			}
			for k, v := range e.Env {
				cliEnv[k] = v
			}
			must(t, "up")
			r := must(t, "verify", "-o", "json", "--load", "--rate", "10", "--expect-replicas", "3", "--scale-down", "--wait-timeout", "2m")
			scaledUpAndDown(t, r)
			kv := "prometheus.googleapis.com|vllm:kv_cache_usage_perc|gauge"
			if backend == "native" {
				kv = "autoscaling.gke.io|gemma-server-vllm|kv-cache-usage-perc"
			}
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
