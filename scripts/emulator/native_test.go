package main

import (
	"strings"
	"testing"
)

// The native route end to end: on an emulated cluster that serves GKE's
// native custom metrics (GA, performance profile), hpa.backend auto
// picks native from the container API, up builds no adapter and calls no
// Google API that changes anything, the HPA scales 1 -> 3 -> 1 on
// autoscaling.gke.io|gemma-server-vllm|num-requests-running served by the
// GKE stand-in, and cleanup leaves nothing.
func TestNativeOnEmulator(t *testing.T) {
	parallel(t)
	e := startEmulator(t, testOptions(t))
	useEmulator(t, e, map[string]string{"VLLM_HPA_HPA_BACKEND": "auto"})

	r := must(t, "up")
	if !strings.Contains(r.errOut, "hpa.backend auto: native, as cluster gpu-hpa serves") {
		t.Errorf("up does not say it chose native:\n%s", r.errOut)
	}
	if n := e.GCP.Mutations(); n != 0 {
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

	r = must(t, "verify", "-o", "json", "--load", "--rate", "10", "--expect-replicas", "3", "--scale-down", "--wait-timeout", "2m")
	doc, sizes := scaledUpAndDown(t, r)
	if !strings.Contains(r.errOut, "autoscaling.gke.io|gemma-server-vllm|num-requests-running above target") {
		t.Errorf("the HPA did not scale on the native metric:\n%s", r.errOut)
	}
	t.Logf("native: rescales %v; load start -> first scale-up %.1fs, -> pods Ready %.1fs", sizes, *doc.Timeline.FirstScaleUp, *doc.Timeline.ScaledUpReady)

	must(t, "cleanup")
	if left := owned(t, e); len(left) != 0 {
		t.Errorf("cleanup left %v", left)
	}
}

// The profile is read before the flags that override its timings, as the
// flag package reads it: the last given wins.
func TestPreFlag(t *testing.T) {
	for _, c := range []struct {
		args  []string
		value string
		found bool
	}{
		{[]string{"--profile", "fast"}, "fast", true},
		{[]string{"-profile=fast"}, "fast", true},
		{[]string{"--profile", "gke", "--dir", "d", "--profile=fast"}, "fast", true},
		{[]string{"--dir", "d"}, "", false},
		{[]string{"--", "--profile", "fast"}, "", false},
		{[]string{"--profile"}, "", false},
	} {
		v, ok := preFlag(c.args, "profile")
		if v != c.value || ok != c.found {
			t.Errorf("%v: %q %v, want %q %v", c.args, v, ok, c.value, c.found)
		}
	}
}

func TestBoolPreFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		set  bool
	}{
		{[]string{"--compress", "50", "--compress-metric-path"}, true},
		{[]string{"-compress-metric-path"}, true},
		{[]string{"--compress-metric-path=false"}, false},
		{[]string{"--compress-metric-path=true", "--dir", "d"}, true},
		{[]string{"--dir", "d"}, false},
		{[]string{"--", "--compress-metric-path"}, false},
	} {
		if got := boolPreFlag(c.args, "compress-metric-path"); got != c.set {
			t.Errorf("%v: %v, want %v", c.args, got, c.set)
		}
	}
}
