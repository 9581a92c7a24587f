package cmd

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra/doc"

	"github.com/vllm-hpa/vllm-hpa/internal/iostreams"
)

// TestCommandReference keeps docs/commands (generated with cobra/doc) in
// step with the commands; UPDATE_DOCS=1 regenerates it.
func TestCommandReference(t *testing.T) {
	t.Parallel()
	want, _ := filepath.Abs("../docs/commands")
	got := t.TempDir()
	root := NewRootCmd(iostreams.System())
	if err := doc.GenMarkdownTree(root, got); err != nil {
		t.Fatal(err)
	}
	if os.Getenv("UPDATE_DOCS") != "" {
		os.RemoveAll(want)
		if err := os.MkdirAll(want, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := doc.GenMarkdownTree(root, want); err != nil {
			t.Fatal(err)
		}
		return
	}
	gen, _ := os.ReadDir(got)
	have, _ := os.ReadDir(want)
	if len(gen) != len(have) {
		t.Errorf("docs/commands has %d files, the commands make %d: run UPDATE_DOCS=1 go test ./cmd -run TestCommandReference", len(have), len(gen))
	}
	for _, f := range gen {
		a, _ := os.ReadFile(filepath.Join(got, f.Name()))
		b, err := os.ReadFile(filepath.Join(want, f.Name()))
		if err != nil || string(a) != string(b) {
			t.Errorf("docs/commands/%s is stale: run UPDATE_DOCS=1 go test ./cmd -run TestCommandReference", f.Name())
		}
	}
}
