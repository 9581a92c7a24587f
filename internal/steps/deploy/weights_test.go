package deploy

import (
	"strings"
	"testing"

	"cloud.google.com/go/iam/apiv1/iampb"
	"google.golang.org/genproto/googleapis/type/expr"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
)

func TestJudgeModelCards(t *testing.T) {
	const src = "gs://b/google/gemma-3-1b-it"
	for _, c := range []struct {
		name   string
		cards  []ModelCard
		ok     bool
		reason string
	}{
		{"from the bucket", []ModelCard{{ID: "google/gemma-3-1b-it", Root: src}}, true, ""},
		{"trailing slash", []ModelCard{{ID: "google/gemma-3-1b-it", Root: src + "/"}}, true, ""},
		{"from Hugging Face", []ModelCard{{ID: "google/gemma-3-1b-it", Root: "google/gemma-3-1b-it"}}, false, "OtherSource"},
		{"another model", []ModelCard{{ID: "other", Root: src}}, false, "NotServed"},
		{"none", nil, false, "NotServed"},
	} {
		r := JudgeModelCards(c.cards, "google/gemma-3-1b-it", src)
		if r.OK != c.ok || r.Reason != c.reason {
			t.Errorf("%s: %+v", c.name, r)
		}
	}
}

func TestBucketGrantResult(t *testing.T) {
	const m = "principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p.svc.id.goog/subject/ns/n/sa/s"
	for _, c := range []struct {
		name string
		pol  *iampb.Policy
		ok   bool
	}{
		{"viewer", &iampb.Policy{Bindings: []*iampb.Binding{{Role: "roles/storage.objectViewer", Members: []string{m}}}}, true},
		{"admin includes it", &iampb.Policy{Bindings: []*iampb.Binding{{Role: "roles/storage.admin", Members: []string{m}}}}, true},
		{"only under a condition", &iampb.Policy{Bindings: []*iampb.Binding{{Role: "roles/storage.objectViewer", Members: []string{m}, Condition: &expr.Expr{Expression: "request.time < timestamp('2020-01-01T00:00:00Z')"}}}}, false},
		{"someone else", &iampb.Policy{Bindings: []*iampb.Binding{{Role: "roles/storage.objectViewer", Members: []string{"user:a@example.com"}}}}, false},
		{"a role that cannot read", &iampb.Policy{Bindings: []*iampb.Binding{{Role: "roles/storage.legacyBucketReader", Members: []string{m}}}}, false},
	} {
		r := BucketGrantResult(c.pol, "b", m)
		if r.OK != c.ok || (!r.OK && !strings.Contains(r.Message, "run vllm-hpa deploy")) {
			t.Errorf("%s: %+v", c.name, r)
		}
	}
}

func TestJudgeModelSource(t *testing.T) {
	const a, b = "gs://m/a", "gs://m/b"
	for _, c := range []struct {
		name, want, live string
		said, ok         bool
		hint             string
	}{
		{"both Hugging Face", "", "", false, false, ""},
		{"the bucket asked for", a, a, true, true, ""},
		{"asked for, not deployed", a, "", true, false, "run vllm-hpa deploy --model-source " + a},
		{"deployed, not asked for", "", a, true, false, "pass --model-source " + a},
		{"another bucket", b, a, true, false, "not from " + b},
	} {
		cfg := config.Default()
		cfg.Workload.ModelSource = c.want
		r, said := JudgeModelSource(&cfg, c.live)
		if said != c.said || r.OK != c.ok || !strings.Contains(r.Message, c.hint) {
			t.Errorf("%s: said %v %+v", c.name, said, r)
		}
	}
}
