package cmd

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/gcpfake"
)

// adapterPodUIDs are the running adapter pods.
func adapterPodUIDs(t *testing.T, tb *testbed) string {
	l, err := tb.cp.Client.CoreV1().Pods("custom-metrics").List(context.Background(), metav1.ListOptions{LabelSelector: "k8s-app=custom-metrics-stackdriver-adapter"})
	if err != nil {
		t.Fatal(err)
	}
	var uids []string
	for _, p := range l.Items {
		if p.DeletionTimestamp == nil {
			uids = append(uids, string(p.UID))
		}
	}
	return strings.Join(uids, ",")
}

// ourMembers are the IAM members of the project's monitoring.viewer that
// belong to a vllm-hpa stack (a Google service account of the project, or
// the adapter's principal).
func ourMembers(g *gcpfake.GCP) []string {
	var out []string
	for _, m := range gcpfake.Members(g.Projects.Policy("my-proj"), viewerRole) {
		if strings.Contains(m, "my-proj.iam.gserviceaccount.com") || strings.Contains(m, "svc.id.goog") {
			out = append(out, m)
		}
	}
	return out
}

// TestSharedIdentityIsCounted: two instances on one cluster share the
// adapter and so its Google service account; the account records the
// cluster once; cleanup of one instance leaves the account and its roles
// to the other, whose identity still checks out; the last one removes
// them.
func TestSharedIdentityIsCounted(t *testing.T) {
	g := startGCP(t)
	alpha := newInstance(t, "alpha3", "alpha3-ns")
	beta := alpha.another("beta3", "beta3-ns")
	t.Cleanup(func() { gcpRun(t, g, beta, "cleanup", "--wait=false"); gcpRun(t, g, alpha, "cleanup", "--wait=false") })
	gcpMustRun(t, g, alpha, "up")
	gcpMustRun(t, g, beta, "up")
	a := g.IAM.Account(gsaEmail)
	if a == nil || strings.Count(a.Description, ",") != 0 || !strings.Contains(a.Description, "Clusters: ") {
		t.Fatalf("account after two instances on one cluster: %v", a)
	}
	out := gcpMustRun(t, g, beta, "cleanup", "-o", "json")
	if !strings.Contains(out, "Workload Identity kept: the adapter on this cluster is still used by instance(s) alpha3") {
		t.Errorf("beta's cleanup does not say the identity stays for alpha3:\n%s", out)
	}
	if g.IAM.Account(gsaEmail) == nil || len(ourMembers(g)) != 1 || !gcpfake.HasMember(g.IAM.AccountPolicy(gsaEmail), wiRole, ksaMember) {
		t.Fatalf("beta's cleanup removed what alpha uses: account %v, members %v", g.IAM.Account(gsaEmail), ourMembers(g))
	}
	// alpha's identity is whole: a re-run writes nothing.
	before := g.Mutations()
	gcpMustRun(t, g, alpha, "identity")
	if g.Mutations() != before {
		t.Errorf("alpha's identity needed %d writes after beta's cleanup", g.Mutations()-before)
	}
	gcpMustRun(t, g, alpha, "cleanup")
	if g.IAM.Account(gsaEmail) != nil || len(ourMembers(g)) != 0 {
		t.Errorf("the last cleanup left account %v, members %v", g.IAM.Account(gsaEmail), ourMembers(g))
	}
}

// TestChangedGSANameIsReleased: `up` with another --gsa-name restarts the
// adapter's pods (whichever command changes the identity), and the account
// vllm-hpa created before under the old name is found and deleted with its
// role, not left behind.
func TestChangedGSANameIsReleased(t *testing.T) {
	g := startGCP(t)
	inst := newInstance(t, "rename", "rename-ns")
	t.Cleanup(func() { gcpRun(t, g, inst, "cleanup", "--gsa-name", "other-adapter-gsa", "--wait=false") })
	gcpMustRun(t, g, inst, "up")
	pods := adapterPodUIDs(t, inst.tb)
	out := gcpMustRun(t, g, inst, "up", "--gsa-name", "other-adapter-gsa", "-o", "json")
	other := "other-adapter-gsa@my-proj.iam.gserviceaccount.com"
	if !strings.Contains(out, "adapter pods restarted") || adapterPodUIDs(t, inst.tb) == pods {
		t.Errorf("up with a new account did not restart the adapter pods:\n%s", out)
	}
	if g.IAM.Account(gsaEmail) != nil {
		t.Error("the account under the old name was left behind")
	}
	if m := ourMembers(g); len(m) != 1 || m[0] != "serviceAccount:"+other {
		t.Errorf("project members after the rename: %v", m)
	}
	gcpMustRun(t, g, inst, "cleanup", "--gsa-name", "other-adapter-gsa")
	if g.IAM.Account(other) != nil || len(ourMembers(g)) != 0 {
		t.Errorf("cleanup left account %v, members %v", g.IAM.Account(other), ourMembers(g))
	}
}

// TestConcurrentRuns: two `up` of one instance at once both succeed
// (creating the Google service account concurrently is not an error);
// `up` racing `cleanup` ends in a state the next `up` converges from.
func TestConcurrentRuns(t *testing.T) {
	g := startGCP(t)
	inst := newInstance(t, "race", "race-ns")
	t.Cleanup(func() { gcpRun(t, g, inst, "cleanup", "--wait=false") })
	concurrently := func(a, b []string) (codes [2]int, outs [2]string) {
		var wg sync.WaitGroup
		for i, args := range [][]string{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var out, errOut string
				codes[i], out, errOut = gcpRun(t, g, inst, args...)
				outs[i] = out + errOut
			}()
		}
		wg.Wait()
		return codes, outs
	}
	codes, outs := concurrently([]string{"up"}, []string{"up"})
	if codes[0] != 0 || codes[1] != 0 {
		t.Fatalf("two concurrent ups: exit %v\n%s\n---\n%s", codes, outs[0], outs[1])
	}
	// Short waits: the race itself may end either run early; what matters
	// is that a cleanup, then an up, converge from whatever it left.
	codes, outs = concurrently([]string{"up", "--timeout", "10s"}, []string{"cleanup", "--timeout", "10s"})
	t.Logf("up racing cleanup: exit %v", codes)
	// The race may leave both namespaces being deleted behind APIServices
	// the racing up created and whose adapter the racing cleanup removed:
	// the namespace controller cannot finish a namespace while discovery
	// fails, and discovery fails while those APIServices answer nothing
	// (make test saw both runs time out, then an up wait 4 minutes for
	// race-ns: its deploy step comes first and cannot mend the adapter).
	// cleanup deletes the APIServices before the namespaces, so it gets
	// out of that; the namespace controller's per-namespace backoff,
	// grown while discovery failed, still makes the waits long on a
	// loaded machine (timeouts.cleanup, 60 s by default; CI failed twice
	// so).
	env := g.Env()
	env["VLLM_HPA_TIMEOUTS_CLEANUP"] = "4m"
	for _, command := range []string{"cleanup", "up"} {
		if code, out, errOut := kubeRunEnv(t, inst, env, command); code != 0 {
			t.Fatalf("%s after the race: exit %d\n%s\n%s\nrace:\n%s\n---\n%s", command, code, out, errOut, outs[0], outs[1])
		}
	}
	// Two cleanups at once both reach the goal: what one deleted is, to
	// the other, already gone, never a failure. Nor a wait: the account
	// the other deleted is not taken for a new one IAM does not show yet
	// (a minute and a half of retries, in about half the runs, before).
	if codes, outs = concurrently([]string{"cleanup"}, []string{"cleanup"}); codes != [2]int{0, 0} {
		t.Errorf("two concurrent cleanups: exit %v\n%s\n---\n%s", codes, outs[0], outs[1])
	}
	for _, out := range outs {
		// The account goes a moment before the annotation that names it:
		// a few attempts (250 ms, then doubling) may fall in between.
		if n := strings.Count(out, "IAM does not see"); n > 6 {
			t.Errorf("a concurrent cleanup waited for the account the other deleted (%d attempts):\n%s", n, out)
		}
	}
	if left := ownedObjects(t, inst); len(left) != 0 {
		t.Errorf("cleanup after the race left %v", keys(left))
	}
	if g.IAM.Account(gsaEmail) != nil || len(ourMembers(g)) != 0 {
		t.Errorf("cleanup after the race left account %v, members %v", g.IAM.Account(gsaEmail), ourMembers(g))
	}
}

// TestServerMessagesScrubbed: an admission webhook whose refusal quotes the
// token Secret (the object as it arrived, with the token base64-encoded in
// its data, and the token decoded and URL-encoded) puts the token in the
// API server's message; vllm-hpa prints <redacted> in its place, on stderr
// and in JSON and YAML, at every verbosity.
func TestServerMessagesScrubbed(t *testing.T) {
	ctx := context.Background()
	const token = "hf_QUOTEDbyAdmission77"
	inst := newInstance(t, "scrub", "scrub-ns")
	cp := inst.tb.cp
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	webhook := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var secret corev1.Secret
		_ = json.Unmarshal(review.Request.Object.Raw, &secret)
		tok := string(secret.Data["hf_token"])
		review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: false, Result: &metav1.Status{
			Message: "refused: it holds " + tok + ", in a URL token=" + url.QueryEscape(tok) + ", as sent: " + string(review.Request.Object.Raw)}}
		review.Request = nil
		json.NewEncoder(w).Encode(review)
	}))
	defer webhook.Close()
	caBundle := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: webhook.Certificate().Raw})
	hook := &admissionregv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "quote-the-token"},
		Webhooks: []admissionregv1.ValidatingWebhook{{
			Name:                    "quote.vllm-hpa.test",
			ClientConfig:            admissionregv1.WebhookClientConfig{URL: ptrTo(webhook.URL + "/validate"), CABundle: caBundle},
			Rules:                   []admissionregv1.RuleWithOperations{{Operations: []admissionregv1.OperationType{admissionregv1.Create, admissionregv1.Update}, Rule: admissionregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"secrets"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": inst.namespace}},
			SideEffects:             ptrTo(admissionregv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			FailurePolicy:           ptrTo(admissionregv1.Fail),
		}},
	}
	if _, err := cp.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, hook, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cp.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(ctx, "quote-the-token", metav1.DeleteOptions{})
	})
	forms := []string{token, base64.StdEncoding.EncodeToString([]byte(token)), url.QueryEscape(token)}
	// The webhook takes a moment to be in force.
	deadline := time.Now().Add(30 * time.Second)
	for _, args := range [][]string{{"deploy", "-v"}, {"deploy", "-vv", "-o", "json"}, {"up", "--skip", "identity", "-o", "yaml"}} {
		for {
			code, out, errOut := kubeRunEnv(t, inst, map[string]string{"HF_TOKEN": token}, args...)
			if code == 0 && time.Now().Before(deadline) {
				mustRun(t, inst, cleanupKube...) // not in force yet
				time.Sleep(time.Second)
				continue
			}
			if code == 0 || !strings.Contains(out+errOut, "refused: it holds <redacted>, in a URL token=<redacted>") || !strings.Contains(out+errOut, `<redacted>`) {
				t.Fatalf("%v: exit %d, want the webhook's refusal with the token redacted:\n%s\n%s", args, code, out, errOut)
			}
			for _, f := range forms {
				if strings.Contains(out+errOut, f) {
					t.Errorf("%v: the token appears as %q in the output", args, f)
				}
			}
			break
		}
	}
	t.Logf("the webhook's message quoted the token in %d forms; vllm-hpa printed none of them", len(forms))
}
