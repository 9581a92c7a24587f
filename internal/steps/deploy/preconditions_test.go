package deploy

import (
	"testing"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
)

// A ComputeClass serves only the pods that select it: the vLLM pods
// select the one the cluster's GPU nodes come from, a named one must be
// able to make them, and with several the user chooses.
func TestComputeClass(t *testing.T) {
	cases := []struct {
		name, given string
		classes     []string
		viaClass    bool
		ok, said    bool
		selected    string
	}{
		{"node pool, none named", "", []string{"a"}, false, false, false, ""},
		{"the only way", "", []string{"a"}, true, true, true, "a"},
		{"several", "", []string{"a", "b"}, true, false, true, ""},
		{"named and able", "b", []string{"a", "b"}, false, true, true, "b"},
		{"named, not able", "c", []string{"a", "b"}, true, false, true, "c"},
	}
	for _, c := range cases {
		w := config.Default().Workload
		w.ComputeClass = c.given
		p, said := ComputeClass(&w, c.classes, c.viaClass)
		if said != c.said || p.OK != c.ok || w.ComputeClass != c.selected || (!p.OK && said && p.Fix == "") {
			t.Errorf("%s: %+v said %v, selected %q", c.name, p, said, w.ComputeClass)
		}
	}
}
