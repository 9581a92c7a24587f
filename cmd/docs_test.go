package cmd

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra/doc"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/iostreams"
	"github.com/vllm-hpa/vllm-hpa/internal/steps"
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

// inlineCommand is a command in a Markdown code span.
var inlineCommand = regexp.MustCompile("`((?:bin/)?vllm-hpa [^`]*|make [^`]*)`")

// TestInlineCommandsExist: the commands README.md and docs/ name in prose
// (`vllm-hpa cleanup hpa adapter`, `make test-faults`) exist as written:
// each vllm-hpa command and its flags parse, each make target is in the
// Makefile. Their blocks of commands are run by scripts/emulator's
// TestDocumented* tests.
func TestInlineCommandsExist(t *testing.T) {
	t.Parallel()
	makefile, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, d := range readDocs(t) {
		f := d.path
		for _, m := range inlineCommand.FindAllStringSubmatch(d.text, -1) {
			seen++
			words := strings.Fields(m[1])
			if words[0] == "make" {
				for _, target := range words[1:] {
					// A variable's value (make test TEST_ARGS=-test.v):
					// one the Makefile reads.
					if name, _, ok := strings.Cut(target, "="); ok {
						if !strings.Contains(string(makefile), "$("+name+")") {
							t.Errorf("%s: `%s`: the Makefile reads no variable %s", f, m[1], name)
						}
						continue
					}
					if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(target) + `:`).Match(makefile) {
						t.Errorf("%s: `%s`: the Makefile has no target %s", f, m[1], target)
					}
				}
				continue
			}
			root := NewRootCmd(iostreams.System())
			c, rest, err := root.Find(words[1:])
			if err == nil {
				err = c.ParseFlags(rest)
			}
			if err == nil && c.Args != nil {
				err = c.ValidateArgs(c.Flags().Args())
			}
			if err != nil {
				t.Errorf("%s: `%s` does not parse: %v", f, m[1], err)
			}
		}
	}
	if seen < 10 {
		t.Errorf("only %d commands in code spans: is the pattern still right?", seen)
	}
}

// The step lists the docs write out are the binary's: the walkthrough's
// steps (steps.Names), the steps that render objects (render
// --list-steps), and verify's probes (steps.Probes), in order.
func TestDocumentedStepLists(t *testing.T) {
	t.Parallel()
	read := func(f string) string {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	quoted := func(names []string) string {
		q := make([]string, len(names))
		for i, n := range names {
			q[i] = "`" + n + "`"
		}
		return strings.Join(q, ", ")
	}
	var probes []string
	for _, p := range steps.Probes() {
		probes = append(probes, "`"+p.Name+"`")
	}
	output := read("../docs/output.md")
	for _, want := range []string{
		"## up, " + strings.Join(steps.Names(), ", ") + ", cleanup, verify\n",
		"`preconditions`, " + quoted(steps.Names()) + "; verify adds " + strings.Join(probes, ", ") + " and `load`",
	} {
		if !strings.Contains(output, want) {
			t.Errorf("docs/output.md does not list the binary's steps: want %q", want)
		}
	}
	rendered := renderedNames()
	want := "(all steps, or one of " + strings.Join(rendered[:len(rendered)-1], ", ") + ", " + rendered[len(rendered)-1] + ")"
	if !strings.Contains(read("../README.md"), want) {
		t.Errorf("README.md's render row does not list render --list-steps: want %q", want)
	}
}

// configKeyInDocs is a code span that reads as a configuration key: one
// of the config file's sections, a dot, a key.
var configKeyInDocs = regexp.MustCompile("`((?:workload|hf-token|service|monitoring|adapter|identity|hpa|timeouts|kube|endpoints)\\.[a-z][a-z-]*)[`= ]")

// Every configuration key the docs cite exists: a user who copies one
// into a file or a flag gets what the doc says, not "unknown key".
func TestDocumentedKeysExist(t *testing.T) {
	t.Parallel()
	seen := 0
	for _, d := range readDocs(t) {
		for _, m := range configKeyInDocs.FindAllStringSubmatch(d.text, -1) {
			seen++
			// The architecture walkthrough adds this key, on purpose.
			if _, ok := config.SettingByKey(m[1]); !ok && m[1] != "adapter.health-port" {
				t.Errorf("%s cites the configuration key %s, which does not exist", d.path, m[1])
			}
		}
	}
	if seen < 20 {
		t.Errorf("only %d keys cited in the docs: is the pattern still right?", seen)
	}
}

// document is one of the docs: its path and its text.
type document struct{ path, text string }

// readDocs reads docs/*.md and README.md.
func readDocs(t *testing.T) []document {
	t.Helper()
	files, _ := filepath.Glob("../docs/*.md")
	files = append(files, "../README.md")
	var out []document
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, document{f, string(b)})
	}
	return out
}
