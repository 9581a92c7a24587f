package cmd

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vllm-hpa/vllm-hpa/internal/load"
	"github.com/vllm-hpa/vllm-hpa/internal/session"
	"github.com/vllm-hpa/vllm-hpa/internal/timeline"
)

// jsonFields collects the JSON field names of t and the structs it holds.
func jsonFields(t reflect.Type, seen map[reflect.Type]bool, out map[string]bool) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] || t.PkgPath() == "time" {
		return
	}
	seen[t] = true
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("json"), ",")[0]
		if f.Anonymous && tag == "" {
			jsonFields(f.Type, seen, out)
			continue
		}
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		out[tag] = true
		jsonFields(f.Type, seen, out)
	}
}

// TestJSONSchemaDocumented: every field of every --output json document is
// documented in docs/output.md.
func TestJSONSchemaDocumented(t *testing.T) {
	t.Parallel()
	path, _ := filepath.Abs("../docs/output.md")
	docBytes, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(docBytes)
	fields := map[string]bool{}
	for _, v := range []any{verifyJSON{}, planJSON{}, session.StepStatus{}, versionInfo{}, load.Summary{}, timeline.Timeline{}, tuneJSON{}, stepListJSON{}, configDoc{}} {
		jsonFields(reflect.TypeOf(v), map[reflect.Type]bool{}, fields)
	}
	for f := range fields {
		if !strings.Contains(doc, "`"+f+"`") {
			t.Errorf("docs/output.md does not document the JSON field %q", f)
		}
	}
}

// strict decodes b into v, refusing fields the schema does not have.
func strict(t *testing.T, b string, v any) {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader([]byte(b)))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		t.Errorf("output does not match its schema: %v\n%s", err, b)
	}
	if d.More() {
		t.Errorf("more than one document on stdout:\n%s", b)
	}
}

func TestJSONOutputsMatchSchema(t *testing.T) {
	_, out, _ := run(t, "", nil, "up", "--dry-run", "-o", "json", "--project", "my-proj")
	strict(t, out, &planJSON{})
	_, out, _ = run(t, "", nil, "version", "-o", "json")
	strict(t, out, &versionInfo{})
	inst := newInstance(t, "schema", "schema-ns")
	_, out, _ = kubeRun(t, inst, "cleanup", "hpa", "-o", "json")
	var r runJSON
	strict(t, out, &r)
	if r.Command != "cleanup" || !r.OK || len(r.Steps) != 1 || r.Steps[0].Status != "ok" {
		t.Errorf("cleanup document: %+v", r)
	}
	code, out, _ := kubeRun(t, inst, "hpa", "-o", "json", "--timeout", "1s")
	r = runJSON{}
	strict(t, out, &r)
	if r.OK || r.ExitCode != code || code == 0 {
		t.Errorf("a failed run's document: exit %d, %+v", code, r)
	}
	kubeRun(t, inst, cleanupKube...)
	_, out, _ = kubeRun(t, inst, "status", "-o", "json")
	var st statusJSON
	strict(t, out, &st)
	if st.Command != "status" || len(st.Steps) != 5 {
		t.Errorf("status document: %+v", st)
	}
}
