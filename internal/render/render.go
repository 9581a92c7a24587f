// Package render turns the configuration into the stack's Kubernetes objects
// by executing the templates in templates/. The configuration is the only
// input, and the Hugging Face token is never part of the output: the Secret
// renders with Redacted in its place and SetSecretToken fills the real value
// into the object at apply time.
package render

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"text/template"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/templates"
)

// Redacted stands in for the Hugging Face token in everything rendered.
const Redacted = "<redacted>"

// Source names a step's template (templates/<Step>.yaml.tmpl) and whether
// its objects are shared by every instance (see internal/owner), which
// decides their ownership labels.
type Source struct {
	Step   string
	Shared bool
}

// Has reports whether step has a template (identity has none: it annotates
// the adapter's ServiceAccount).
func Has(step string) bool { return tmpl.Lookup(step+".yaml.tmpl") != nil }

// data is what a template sees: the configuration, and the step it renders
// for (used in the ownership labels).
type data struct {
	*config.Config
	Step     string
	Shared   bool
	Redacted string
}

var tmpl = template.Must(template.New("stack").Funcs(template.FuncMap{
	"q":        quote,
	"indent":   indent,
	"seconds":  func(d time.Duration) int64 { return int64(d / time.Second) },
	"quantity": Quantity,
	// include is replaced in init: it needs the parsed template itself.
	"include": func(string, any) (string, error) { return "", nil },
}).ParseFS(templates.FS, "*.yaml.tmpl"))

func init() {
	tmpl.Funcs(template.FuncMap{"include": func(name string, d any) (string, error) {
		var b bytes.Buffer
		err := tmpl.ExecuteTemplate(&b, name, d)
		return b.String(), err
	}})
}

// YAML renders one step's objects as a multi-document YAML stream.
func YAML(cfg *config.Config, src Source) ([]byte, error) {
	t := tmpl.Lookup(src.Step + ".yaml.tmpl")
	if t == nil {
		return nil, fmt.Errorf("render: no template for step %q", src.Step)
	}
	var b bytes.Buffer
	d := data{Config: cfg, Step: src.Step, Shared: src.Shared, Redacted: Redacted}
	if err := t.Execute(&b, d); err != nil {
		return nil, fmt.Errorf("render %s: %w", src.Step, err)
	}
	return b.Bytes(), nil
}

// AllYAML renders the given steps as one stream that `kubectl apply -f -`
// accepts, each document headed by a comment naming its step. The token
// Secret is left out (see TokenSecretNote).
func AllYAML(cfg *config.Config, srcs ...Source) ([]byte, error) {
	var out bytes.Buffer
	for _, src := range srcs {
		s := src.Step
		y, err := YAML(cfg, src)
		if err != nil {
			return nil, err
		}
		for _, doc := range splitDocuments(y) {
			obj, err := decode(doc)
			if err != nil {
				return nil, fmt.Errorf("render %s: %w", s, err)
			}
			if IsTokenSecret(cfg, obj) {
				continue
			}
			fmt.Fprintf(&out, "---\n# Source: vllm-hpa %s\n%s\n", s, strings.TrimSpace(doc))
		}
	}
	return out.Bytes(), nil
}

// Objects renders one step's objects, in apply order; shared says they are
// shared by every instance (see Source).
func Objects(cfg *config.Config, step string, shared bool) ([]*unstructured.Unstructured, error) {
	y, err := YAML(cfg, Source{Step: step, Shared: shared})
	if err != nil {
		return nil, err
	}
	var objs []*unstructured.Unstructured
	for i, doc := range splitDocuments(y) {
		u, err := decode(doc)
		if err != nil {
			return nil, fmt.Errorf("render %s: document %d: %w", step, i+1, err)
		}
		objs = append(objs, u)
	}
	return objs, nil
}

func decode(doc string) (*unstructured.Unstructured, error) {
	j, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	return u, u.UnmarshalJSON(j)
}

// SetSecretToken puts the real token into the rendered Secret (as data, so
// that what the server stores is stable across applies). It is called only
// on the object about to be sent to the API server, never on output.
func SetSecretToken(cfg *config.Config, secret *unstructured.Unstructured, token string) error {
	if secret.GetKind() != "Secret" || secret.GetName() != cfg.HFToken.SecretName {
		return fmt.Errorf("render: %s/%s is not the token Secret", secret.GetKind(), secret.GetName())
	}
	unstructured.RemoveNestedField(secret.Object, "stringData")
	return unstructured.SetNestedStringMap(secret.Object, map[string]string{
		cfg.HFToken.SecretKey: base64.StdEncoding.EncodeToString([]byte(token)),
	}, "data")
}

// IsTokenSecret reports whether obj is the Hugging Face token's Secret.
func IsTokenSecret(cfg *config.Config, obj *unstructured.Unstructured) bool {
	return obj.GetKind() == "Secret" && obj.GetName() == cfg.HFToken.SecretName
}

// WithoutToken is the token Secret with no data at all: what plans show. A
// Secret with a placeholder in its data must never leave vllm-hpa, since
// `kubectl apply` would write the placeholder over the real token.
func WithoutToken(obj *unstructured.Unstructured) *unstructured.Unstructured {
	out := obj.DeepCopy()
	unstructured.RemoveNestedField(out.Object, "stringData")
	unstructured.RemoveNestedField(out.Object, "data")
	return out
}

// TokenSecretNote says how the token Secret comes to be, for output that
// leaves it out.
func TokenSecretNote(cfg *config.Config) string {
	return fmt.Sprintf("the Secret %s/%s holding the Hugging Face token is left out (applying a copy would overwrite the real token): `vllm-hpa deploy` creates it from HF_TOKEN or --hf-token-file, or run: kubectl create secret generic %s --namespace %s --from-file=%s=TOKEN_FILE",
		cfg.Workload.Namespace, cfg.HFToken.SecretName, cfg.HFToken.SecretName, cfg.Workload.Namespace, cfg.HFToken.SecretKey)
}

// IsPlaceholderToken reports whether a token held in the Secret is a stand-in
// rather than a token: what render printed in its place, or a template's
// "fill me in".
func IsPlaceholderToken(v string) bool {
	t := strings.ToLower(strings.TrimSpace(v))
	if t == "" || strings.ContainsAny(t, "<>{}$ ") || strings.Contains(t, "redacted") {
		return true
	}
	for _, p := range []string{"changeme", "change-me", "replace", "your-token", "your_token", "yourtoken", "token-here", "todo", "xxx", "hf_...", "placeholder", "dummy"} {
		if strings.Contains(t, p) {
			return true
		}
	}
	return false
}

// splitDocuments splits a YAML stream on document separators, dropping
// documents that hold only comments or whitespace.
func splitDocuments(y []byte) []string {
	var docs []string
	for _, d := range strings.Split("\n"+string(y), "\n---") {
		if hasContent(d) {
			docs = append(docs, strings.TrimPrefix(d, "\n"))
		}
	}
	return docs
}

func hasContent(doc string) bool {
	for _, line := range strings.Split(doc, "\n") {
		t := strings.TrimSpace(line)
		if t != "" && !strings.HasPrefix(t, "#") {
			return true
		}
	}
	return false
}

// quote renders any string as a double-quoted YAML scalar (JSON strings are
// valid YAML), so that no configured value can change the document's shape.
func quote(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return strings.TrimSuffix(b.String(), "\n")
}

func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(s, "\n", "\n"+pad)
}

// Quantity spells a target value as a Kubernetes quantity: whole numbers as
// they are, fractions in milli-units (0.5 -> 500m), as kubectl shows it and
// as the HPA reports its current value.
func Quantity(x float64) string {
	if x == math.Trunc(x) {
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return strconv.FormatInt(int64(math.Round(x*1000)), 10) + "m"
}
