package step

import (
	"context"
	"errors"
	"slices"
	"testing"
)

// NamespaceWaits runs what was put off in order, each even after one
// failed, joins the errors, and forgets what it ran.
func TestNamespaceWaits(t *testing.T) {
	var n NamespaceWaits
	var ran []string
	errB := errors.New("namespace b is not gone")
	for _, name := range []string{"a", "b", "c"} {
		n.Add(func(context.Context) error {
			ran = append(ran, name)
			if name == "b" {
				return errB
			}
			return nil
		})
	}
	if err := n.Wait(context.Background()); !errors.Is(err, errB) {
		t.Errorf("Wait: %v, want the failed wait's error", err)
	}
	if !slices.Equal(ran, []string{"a", "b", "c"}) {
		t.Errorf("ran %v, want a, b, c in order", ran)
	}
	ran = nil
	if err := n.Wait(context.Background()); err != nil || len(ran) != 0 {
		t.Errorf("a second Wait ran %v (%v): the waits are forgotten once run", ran, err)
	}
}
