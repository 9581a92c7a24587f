// Package textdiff says where two texts first differ, for the messages of
// tests that compare rendered output.
package textdiff

import (
	"fmt"
	"strings"
)

// First is the first line at which want and got differ, with both
// versions of it ("" when they are equal).
func First(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n  want: %s\n  got:  %s", i+1, wl, gl)
		}
	}
	return ""
}
