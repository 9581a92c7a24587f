package main

import (
	"testing"
)

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
