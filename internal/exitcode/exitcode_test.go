package exitcode_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// TestExitCodeTable: every documented code, reached from the errors that
// produce it, also when wrapped.
func TestExitCodeTable(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("deploy: %w", err) }
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"success", nil, 0},
		{"failure", errors.New("apply failed"), 1},
		{"bad input", exitcode.With(exitcode.BadInput, errors.New("invalid hpa.target")), 2},
		{"check failed", &step.Failed{Results: []step.Result{{Step: "hpa", Check: "hpa scaling active"}}}, 3},
		{"timeout", &kube.TimeoutError{What: "Deployment"}, 4},
		{"deadline", context.DeadlineExceeded, 4},
		{"precondition", exitcode.With(exitcode.Precondition, errors.New("no workload pool")), 5},
		{"denied", exitcode.With(exitcode.Denied, errors.New("permission denied")), 6},
		{"conflict", &kube.ConflictError{Object: "Deployment x", Conflicts: []kube.FieldConflict{{Field: ".spec.replicas", Manager: "kubectl"}}}, 7},
		{"interrupted", context.Canceled, 130},
	} {
		for _, err := range []error{tc.err, wrapOrNil(tc.err, wrap)} {
			if got := exitcode.Of(err); got != tc.want {
				t.Errorf("%s: Of(%v) = %d, want %d", tc.name, err, got, tc.want)
			}
		}
	}
	// Every code in the table is distinct and documented once.
	seen := map[int]bool{}
	for _, e := range exitcode.Table {
		if seen[e.Code] || e.Meaning == "" {
			t.Errorf("code %d duplicated or undocumented", e.Code)
		}
		seen[e.Code] = true
	}
	if len(seen) != 9 {
		t.Errorf("%d codes documented, want 9", len(seen))
	}
}

func wrapOrNil(err error, wrap func(error) error) error {
	if err == nil {
		return nil
	}
	return wrap(err)
}
