package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/iam/apiv1/iampb"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcpfake"
)

// The emulator's adapter needs the identity the real one needs, and
// answers the real one's 404 for every failure; vllm-hpa names the cause
// from its own evidence: each missing grant, a grant IAM has not applied
// yet, a disabled account, the API turned off, and, with every grant in
// place, no samples in Cloud Monitoring. One emulator for all of them, one
// cause at a time, each undone before the next.
func TestAdapterNeedsIdentity(t *testing.T) {
	parallel(t)
	e := startEmulator(t, testOptions(t))
	useEmulator(t, e, map[string]string{"VLLM_HPA_TIMEOUTS_HPA": "15s"})
	gsa := "metrics-adapter-gsa@my-proj.iam.gserviceaccount.com"

	// No identity: the adapter exits at start, the adapter step says so,
	// and the hpa wait ends naming the identity, not "no samples".
	r := vllmHPA(t, "up", "--skip", "identity")
	if r.code != exitcode.Timeout || !strings.Contains(r.errOut, "cause (IdentityNotSet)") || !strings.Contains(r.errOut, "the adapter's pods exit at start until it can read Cloud Monitoring") {
		t.Fatalf("up --skip identity: exit %d, want %d naming the identity:\n%s", r.code, exitcode.Timeout, r.errOut)
	}
	if !strings.Contains(r.errOut, "Failed request to stackdriver api") {
		t.Errorf("the adapter's own last words are not shown:\n%s", r.errOut)
	}
	// The identity step is what makes the metric flow.
	must(t, "up")
	must(t, "verify")

	verifyFails := func(t *testing.T, want ...string) runResult {
		t.Helper()
		r := vllmHPA(t, "verify", "-o", "json")
		got := failing(t, r.out)
		for _, w := range want {
			if r.code != exitcode.CheckFailed || !contains(got, w) {
				t.Errorf("verify: exit %d, failing %v, want %s", r.code, got, w)
			}
		}
		return r
	}
	project := func() *iampb.Policy { return e.GCP.Projects.Policy("my-proj") }
	withoutViewer := func() {
		p := project()
		for _, b := range p.Bindings {
			if b.Role == "roles/monitoring.viewer" {
				b.Members = nil
			}
		}
		get, set := e.GCP.Projects.Writer("my-proj")
		p.Etag = get().Etag
		if err := set(p); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("grant removed by someone else", func(t *testing.T) {
		withoutViewer()
		r := verifyFails(t, "identity/roles/monitoring.viewer binding: MemberMissing", "custom-metric/metric readable for every pod: GrantMissing")
		if !strings.Contains(r.errOut, "does not hold roles/monitoring.viewer on projects/my-proj (removed by someone?)") {
			t.Errorf("the cause is not named:\n%s", r.errOut)
		}
		must(t, "identity")
	})
	t.Run("grant just made", func(t *testing.T) {
		b := gcpfake.DefaultBehaviour
		b.NewAccountWindow, b.IngestionDelay = 0, 0
		e.GCP.SetBehaviour(b) // Google's 2 minutes
		defer func() { b.IAMPropagation = 0; e.GCP.SetBehaviour(b) }()
		withoutViewer()
		must(t, "identity")
		r := verifyFails(t, "custom-metric/metric readable for every pod: IAMPropagating")
		if !strings.Contains(r.errOut, "IAM still propagating: roles/monitoring.viewer for serviceAccount:"+gsa+" was granted") || !strings.Contains(r.errOut, "left of the usual 2 minutes") {
			t.Errorf("the wait is not explained with the time left:\n%s", r.errOut)
		}
	})
	t.Run("account disabled", func(t *testing.T) {
		e.GCP.IAM.SetDisabled(gsa, true)
		defer e.GCP.IAM.SetDisabled(gsa, false)
		r := verifyFails(t, "identity/google service account exists: Disabled", "custom-metric/metric readable for every pod: AccountDisabled")
		if !strings.Contains(r.errOut, "gcloud iam service-accounts enable "+gsa) {
			t.Errorf("no fix named:\n%s", r.errOut)
		}
	})
	t.Run("monitoring api off", func(t *testing.T) {
		e.GCP.SetEnabled("my-proj", "monitoring.googleapis.com", false)
		defer e.GCP.SetEnabled("my-proj", "monitoring.googleapis.com", true)
		verifyFails(t, "custom-metric/metric readable for every pod: MonitoringAPIDisabled")
	})
	// The HPA's conditions are those of its last sync: they show the
	// metric again one sync (2 s) after the adapter reads it, later on a
	// busy machine.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
		r := vllmHPA(t, "verify")
		if r.code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("verify still fails a minute after every cause was undone: exit %d\n%s", r.code, r.errOut)
		}
	}
	// No samples in Cloud Monitoring, every grant in place: then, and
	// only then, "no samples". An ingestion delay of an hour leaves none
	// of the samples written so far queryable, as when none ever was.
	t.Run("no samples", func(t *testing.T) {
		was := e.GCP.Behaviour()
		b := was
		b.IngestionDelay = time.Hour
		e.GCP.SetBehaviour(b)
		defer e.GCP.SetBehaviour(was)
		// The HPA's conditions say so from its next sync on (2 s, later
		// on a busy machine): until then up could find the HPA as it was.
		const noSamples = "custom-metric/metric readable for every pod: NoSamples"
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Second) {
			r := vllmHPA(t, "verify", "-o", "json")
			f := failing(t, r.out)
			if contains(f, noSamples) && slices.ContainsFunc(f, func(c string) bool { return strings.HasPrefix(c, "hpa/") }) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("verify: exit %d, failing %v, want %s and the HPA's check", r.code, f, noSamples)
			}
		}
		r := vllmHPA(t, "up")
		if r.code != exitcode.Timeout || !strings.Contains(r.errOut, "cause (NoSamples): every grant is in place; Cloud Monitoring holds no sample of vllm:num_requests_running") {
			t.Errorf("up: exit %d, want %d naming the missing samples:\n%s", r.code, exitcode.Timeout, r.errOut)
		}
	})
	must(t, "cleanup")
	if left := owned(t, e); len(left) != 0 {
		t.Errorf("cleanup left %v", left)
	}
}
