package identity

import (
	"strings"
	"testing"

	"cloud.google.com/go/iam/apiv1/iampb"
	"google.golang.org/genproto/googleapis/type/expr"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
)

func TestAccountDescriptionRecordsClusters(t *testing.T) {
	d := describeClusters([]string{"b2", "a1", "b2"})
	if !strings.HasPrefix(d, gsaMarker) || !strings.HasSuffix(d, "Clusters: a1,b2") {
		t.Errorf("description %q", d)
	}
	if got := accountClusters(d); strings.Join(got, ",") != "a1,b2" {
		t.Errorf("clusters %v", got)
	}
	// An account of an earlier version recorded only its instance.
	if got := accountClusters("Created by vllm-hpa (instance x) for the Custom Metrics Stackdriver Adapter; deleted by vllm-hpa cleanup"); len(got) != 0 {
		t.Errorf("legacy description: clusters %v", got)
	}
	// As many 12-character cluster ids as fit in IAM's 256 bytes.
	var ids []string
	for i := 0; len(describeClusters(append(ids, "0123456789ab"))) <= gcp.MaxDescription; i++ {
		ids = append(ids, strings.Repeat(string(rune('a'+i%26)), 12))
	}
	if len(ids) < 8 {
		t.Errorf("only %d clusters fit in a description", len(ids))
	}
}

func TestBindingResult(t *testing.T) {
	pol := &iampb.Policy{Bindings: []*iampb.Binding{
		{Role: RoleMonitoringViewer, Members: []string{"serviceAccount:a@p.iam.gserviceaccount.com"}},
		{Role: RoleWorkloadIdentity, Members: []string{"serviceAccount:b"}, Condition: &expr.Expr{Expression: "true"}},
	}}
	cases := []struct {
		pol          *iampb.Policy
		role, member string
		ok           bool
		reason       string
	}{
		{nil, RoleMonitoringViewer, "x", false, "NotFound"},
		{pol, RoleMonitoringViewer, "serviceAccount:a@p.iam.gserviceaccount.com", true, ""},
		{pol, RoleMonitoringViewer, "serviceAccount:other", false, "MemberMissing"},
		// Only an unconditional binding counts.
		{pol, RoleWorkloadIdentity, "serviceAccount:b", false, "MemberMissing"},
	}
	for _, c := range cases {
		r := BindingResult(c.pol, "projects/p", c.role, c.member)
		if r.OK != c.ok || r.Reason != c.reason {
			t.Errorf("%s %s: %+v", c.role, c.member, r)
		}
	}
}

func TestAnnotationResult(t *testing.T) {
	cfg := config.Default()
	ksa := &unstructured.Unstructured{}
	ksa.SetAnnotations(map[string]string{WorkloadIdentityAnnotation: "a@p.iam.gserviceaccount.com"})
	for _, c := range []struct {
		ksa    *unstructured.Unstructured
		want   string
		ok     bool
		reason string
	}{
		{nil, "a@p.iam.gserviceaccount.com", false, "NotFound"},
		{ksa, "a@p.iam.gserviceaccount.com", true, ""},
		{ksa, "b@p.iam.gserviceaccount.com", false, "Mismatch"},
		{ksa, "", false, "Mismatch"}, // direct mode: no annotation wanted
		{&unstructured.Unstructured{}, "", true, ""},
	} {
		if r := AnnotationResult(c.ksa, &cfg, c.want); r.OK != c.ok || r.Reason != c.reason {
			t.Errorf("want %q: %+v", c.want, r)
		}
	}
}
