package identity

import (
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/vllm-hpa/vllm-hpa/internal/grants"
)

// The causes of the adapter's one 404, told apart from vllm-hpa's own
// evidence: each case is the evidence of one cause, and the diagnosis
// must name that one (and "no samples" only when all else holds).
func TestJudgeNamesTheCause(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	gsa := "metrics-adapter-gsa@my-proj.iam.gserviceaccount.com"
	viewer := BindingState{Resource: "projects/my-proj", Role: RoleMonitoringViewer, Member: "serviceAccount:" + gsa, Held: true}
	wi := BindingState{Resource: "projects/my-proj/serviceAccounts/" + gsa, Role: RoleWorkloadIdentity, Member: "serviceAccount:my-proj.svc.id.goog[custom-metrics/custom-metrics-stackdriver-adapter]", Held: true}
	ksa := func(annotation string, record ...grants.Grant) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetNamespace("custom-metrics")
		a := map[string]string{}
		if annotation != "" {
			a[WorkloadIdentityAnnotation] = annotation
		}
		if record != nil {
			a[GrantsAnnotation] = grants.Encode(record).(string)
		}
		u.SetAnnotations(a)
		return u
	}
	old := []grants.Grant{
		{Resource: viewer.Resource, Role: viewer.Role, Member: viewer.Member, Made: true, At: now.Add(-time.Hour)},
		{Resource: wi.Resource, Role: wi.Role, Member: wi.Member, Made: true, At: now.Add(-time.Hour)},
	}
	recent := []grants.Grant{old[0], {Resource: wi.Resource, Role: wi.Role, Member: wi.Member, Made: true, At: now.Add(-30 * time.Second)}}
	healthy := Evidence{Mode: "gsa", Account: AccountState{Email: gsa, Found: true}, Bindings: []BindingState{viewer, wi}, KSA: ksa(gsa, old...), WantAnnotation: gsa}
	with := func(change func(*Why)) Why {
		w := Why{Identity: healthy, Gauge: "vllm:num_requests_running", Pods: []string{"p1", "p2"}, Samples: map[string]float64{"p1": 1, "p2": 2}, AdapterNamespace: "custom-metrics", Now: now}
		w.Identity.Bindings = []BindingState{viewer, wi}
		change(&w)
		return w
	}
	cases := []struct {
		name   string
		why    Why
		reason string
		says   string
	}{
		{"identity step never ran", with(func(w *Why) {
			w.Identity.KSA = ksa("")
			w.Identity.Bindings = []BindingState{{Role: RoleMonitoringViewer, Member: viewer.Member}, {Role: RoleWorkloadIdentity, Member: wi.Member}}
		}), "IdentityNotSet", "run vllm-hpa identity"},
		{"monitoring api off", with(func(w *Why) {
			w.MonitoringOff, w.SamplesErr, w.Samples = true, errors.New("the monitoring.googleapis.com API is not enabled"), nil
		}), "MonitoringAPIDisabled", "Cloud Monitoring API is off"},
		{"annotation removed", with(func(w *Why) { w.Identity.KSA = ksa("", old...) }), "AnnotationMismatch", `want "` + gsa + `"`},
		{"account deleted", with(func(w *Why) { w.Identity.Account = AccountState{Email: gsa} }), "AccountMissing", "does not exist"},
		{"account disabled", with(func(w *Why) { w.Identity.Account.Disabled = true }), "AccountDisabled", "gcloud iam service-accounts enable " + gsa},
		{"viewer grant removed by someone else", with(func(w *Why) { w.Identity.Bindings[0].Held = false }), "GrantMissing", "does not hold roles/monitoring.viewer"},
		{"grant made 30 s ago", with(func(w *Why) { w.Identity.KSA = ksa(gsa, recent...) }), "IAMPropagating", "granted 30s ago; about 1m30s left of the usual 2 minutes"},
		{"grant made 4 minutes ago", with(func(w *Why) {
			r := append([]grants.Grant{}, recent...)
			r[1].At = now.Add(-4 * time.Minute)
			w.Identity.KSA = ksa(gsa, r...)
		}), "IAMPropagating", "allow up to 3m0s more"},
		{"no samples yet", with(func(w *Why) { w.Samples, w.NoSuchMetric = nil, true }), "NoSamples", "holds no sample of vllm:num_requests_running for the pods yet"},
		// No samples is a cause whatever else is; a recent grant is said too.
		{"no samples, grant just made", with(func(w *Why) {
			w.Samples, w.NoSuchMetric = nil, true
			w.Identity.KSA = ksa(gsa, recent...)
		}), "NoSamples", "for the pods yet: Managed Prometheus writes one"},
		{"a new pod without samples", with(func(w *Why) { delete(w.Samples, "p2") }), "NoSamples", "for p2 yet"},
		{"all in place", with(func(w *Why) {}), "Unexplained", "kubectl logs -n custom-metrics"},
		{"all in place, the adapter exits", with(func(w *Why) { w.AdapterExit = "pod a exits at start: Failed request" }), "Unexplained", "Failed request"},
		{"identity unreadable", with(func(w *Why) { w.IdentityErr = errors.New("no credentials") }), "IdentityNotRead", "no credentials"},
		// A found grant (not made by vllm-hpa) has no age to wait out.
		{"direct mode, found grant", with(func(w *Why) {
			p := BindingState{Resource: "projects/my-proj", Role: RoleMonitoringViewer, Member: "principal://x", Held: true}
			w.Identity = Evidence{Mode: "direct", Bindings: []BindingState{p}, KSA: ksa("", grants.Grant{Resource: p.Resource, Role: p.Role, Member: p.Member, At: now})}
			w.Samples = nil
		}), "NoSamples", "every grant is in place"},
		// The adapter serves p1: its identity works, whatever the age of
		// its grants, and p2's samples are the cause.
		{"a new pod, grant just made, the adapter serving the other", with(func(w *Why) {
			w.Identity.KSA = ksa(gsa, recent...)
			w.Served = []string{"p1"}
			delete(w.Samples, "p2")
		}), "NoSamples", "the adapter serves p1, so its identity works; Cloud Monitoring holds no sample of vllm:num_requests_running for p2 yet"},
		{"no Ready pod", with(func(w *Why) { w.Pods = nil }), "NoReadyPods", "no Ready pod"},
	}
	for _, c := range cases {
		d := Judge(c.why)
		if d.Reason != c.reason || !strings.Contains(d.Message, c.says) {
			t.Errorf("%s: %s %q, want %s with %q", c.name, d.Reason, d.Message, c.reason, c.says)
		}
	}
}

// The record of grants: a grant made keeps its time, one found is kept as
// found, one vllm-hpa made earlier and finds again stays made.
func TestGrantRecord(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	g := grants.Grant{Resource: "projects/p", Role: RoleMonitoringViewer, Member: "serviceAccount:a"}
	record := grants.Note(nil, g, false, t0)
	if r, ok := grants.Find(record, g.Resource, g.Role, g.Member); !ok || r.Made || !r.At.Equal(t0) {
		t.Fatalf("found: %+v", record)
	}
	if made, known := madeByUs(record, g.Resource, g.Role, g.Member, true); made || !known {
		t.Error("a found grant reads as made")
	}
	record = grants.Note(record, g, false, t0.Add(time.Hour))
	if r, _ := grants.Find(record, g.Resource, g.Role, g.Member); !r.At.Equal(t0) {
		t.Errorf("found again changed the record: %+v", r)
	}
	record = grants.Note(record, g, true, t0.Add(2*time.Hour))
	if r, _ := grants.Find(record, g.Resource, g.Role, g.Member); !r.Made || len(record) != 1 {
		t.Errorf("made after found: %+v", record)
	}
	record = grants.Note(record, g, false, t0.Add(3*time.Hour))
	if r, _ := grants.Find(record, g.Resource, g.Role, g.Member); !r.Made || !r.At.Equal(t0.Add(2*time.Hour)) {
		t.Errorf("a grant vllm-hpa made, found again, is still made at its time: %+v", r)
	}
	// No record at all (an earlier version): the caller decides.
	if made, known := madeByUs(nil, g.Resource, g.Role, g.Member, true); !made || known {
		t.Error("unrecorded")
	}
	u := &unstructured.Unstructured{}
	u.SetAnnotations(map[string]string{GrantsAnnotation: grants.Encode(record).(string)})
	if got := grants.Read(u); len(got) != 1 || !got[0].Made {
		t.Errorf("round trip: %+v", got)
	}
	if grants.Encode(nil) != nil {
		t.Error("an empty record is not removed")
	}
}
