package cmd

// Google Cloud's documented failure modes, on in the fakes as they are in
// production, and how vllm-hpa reacts to each: what it retries, what it
// says, which exit code.

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/iam/admin/apiv1/adminpb"
	"cloud.google.com/go/iam/apiv1/iampb"
	container "google.golang.org/api/container/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcpfake"
)

// identityActions are the identity step's actions in a -o json document.
func identityActions(t *testing.T, out string) []string {
	t.Helper()
	var doc runJSON
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	for _, s := range doc.Steps {
		if s.Step == "identity" {
			return s.Actions
		}
	}
	return nil
}

// A new account is invisible to IAM for a while: the grants naming it are
// refused INVALID_ARGUMENT "does not exist", and its own policy reads
// NOT_FOUND/PERMISSION_DENIED. identity waits, says why, counts the waits.
func TestNewAccountPropagates(t *testing.T) {
	g := startGCP(t)
	g.SetBehaviour(gcpfake.Behaviour{NewAccountWindow: 3 * time.Second, MaxPrincipals: 1500})
	inst := newInstance(t, "newsa", "newsa-ns")
	t.Cleanup(func() { gcpRun(t, g, inst, "cleanup", "identity", "adapter", "--wait=false") })
	mustRun(t, inst, "adapter")

	code, out, errOut := gcpRun(t, g, inst, "identity", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d:\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(errOut, "IAM does not see service account "+gsaEmail+" yet (a new service account takes up to a minute to propagate") {
		t.Errorf("no progress line says why it waits:\n%s", errOut)
	}
	waits := regexp.MustCompile(`(\d+) waits for the new account to propagate`)
	total := 0
	for _, a := range identityActions(t, out) {
		if m := waits.FindStringSubmatch(a); m != nil {
			n, _ := strconv.Atoi(m[1])
			total += n
		}
	}
	if total == 0 {
		t.Errorf("no action counts the waits:\n%s", out)
	}
	if !gcpfake.HasMember(g.Projects.Policy("my-proj"), viewerRole, gsaMember) || !gcpfake.HasMember(g.IAM.AccountPolicy(gsaEmail), wiRole, ksaMember) {
		t.Error("a binding is missing after the waits")
	}
	t.Logf("%d waits over a %s window", total, 3*time.Second)
}

// A Workload Identity pool exists only once a cluster of the project
// enables Workload Identity; before that IAM refuses the KSA member.
func TestWorkloadPoolMissing(t *testing.T) {
	inst := newInstance(t, "nopool", "nopool-ns")
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	mustRun(t, inst, "adapter")

	// Kubeconfig mode with a context that is not GKE's: the refusal,
	// turned into exit 5 with the fix.
	t.Run("refused", func(t *testing.T) {
		g := startGCP(t)
		g.SetWorkloadPool("my-proj", false)
		t.Cleanup(func() { gcpRun(t, g, inst, "cleanup", "identity") })
		code, _, errOut := gcpRun(t, g, inst, "identity")
		if code != exitcode.Precondition || !strings.Contains(errOut, "the Workload Identity pool my-proj.svc.id.goog does not exist") ||
			!strings.Contains(errOut, "--workload-pool=my-proj.svc.id.goog") {
			t.Errorf("exit %d, want %d:\n%s", code, exitcode.Precondition, errOut)
		}
		if gcpfake.HasMember(g.IAM.AccountPolicy(gsaEmail), wiRole, ksaMember) {
			t.Error("the KSA member was granted without a pool")
		}
	})

	// A GKE context (gke_PROJECT_LOCATION_CLUSTER) names the cluster: its
	// configuration is read first and nothing changes.
	t.Run("checked first", func(t *testing.T) {
		g := startGCP(t)
		g.SetWorkloadPool("my-proj", false)
		g.GKE.PutCluster("projects/my-proj/locations/us-central1/clusters/gpu-hpa", &container.Cluster{
			Name: "gpu-hpa", Status: "RUNNING", CurrentMasterVersion: "1.33.5-gke.1000",
			MonitoringConfig: &container.MonitoringConfig{ManagedPrometheusConfig: &container.ManagedPrometheusConfig{Enabled: true}},
		})
		kubeconfig := gkeKubeconfig(t, inst, "gke_my-proj_us-central1_gpu-hpa")
		code, _, errOut := gcpRun(t, g, inst, "identity", "--kubeconfig", kubeconfig)
		if code != exitcode.Precondition || !strings.Contains(errOut, "--workload-pool=my-proj.svc.id.goog") || !strings.Contains(errOut, "nothing was changed") {
			t.Errorf("exit %d, want %d:\n%s", code, exitcode.Precondition, errOut)
		}
		if g.Mutations() != 0 {
			t.Errorf("%d mutating GCP calls", g.Mutations())
		}
	})
}

// gkeKubeconfig is the testbed's kubeconfig with its context renamed as
// gcloud names a GKE cluster's.
func gkeKubeconfig(t *testing.T, inst instance, context string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(inst.tb.cp.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx := cfg.Contexts[cfg.CurrentContext]
	delete(cfg.Contexts, cfg.CurrentContext)
	cfg.Contexts[context], cfg.CurrentContext = ctx, context
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// Deleting a bound account leaves deleted:serviceAccount:EMAIL?uid=N in the
// policies; re-creating the email gives a new account with an empty policy.
// identity grants again; cleanup leaves no trace of either account.
func TestDeletedAccountLeftovers(t *testing.T) {
	g := startGCP(t)
	inst := newInstance(t, "leftover", "leftover-ns")
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	mustRun(t, inst, "adapter")
	gcpMustRun(t, g, inst, "identity")
	first := g.IAM.Account(gsaEmail).UniqueId

	// Someone deletes the account while it is bound.
	if _, err := g.IAM.DeleteServiceAccount(context.Background(), &adminpb.DeleteServiceAccountRequest{Name: "projects/my-proj/serviceAccounts/" + gsaEmail}); err != nil {
		t.Fatal(err)
	}
	leftover := fmt.Sprintf("deleted:serviceAccount:%s?uid=%s", gsaEmail, first)
	if !gcpfake.HasMember(g.Projects.Policy("my-proj"), viewerRole, leftover) {
		t.Fatalf("the fake did not rewrite the member: %v", g.Projects.Policy("my-proj"))
	}

	// identity re-creates it: a new uniqueId, an empty policy, granted again.
	gcpMustRun(t, g, inst, "identity")
	if a := g.IAM.Account(gsaEmail); a == nil || a.UniqueId == first {
		t.Fatalf("account not re-created with a new uniqueId: %v", a)
	}
	if !gcpfake.HasMember(g.IAM.AccountPolicy(gsaEmail), wiRole, ksaMember) || !gcpfake.HasMember(g.Projects.Policy("my-proj"), viewerRole, gsaMember) {
		t.Error("the re-created account is not granted again")
	}

	code, _, errOut := gcpRun(t, g, inst, "cleanup", "identity")
	if code != 0 || !strings.Contains(errOut, leftover[:strings.Index(leftover, "=")+1]+"... removed (what IAM left of the deleted account") {
		t.Errorf("cleanup exit %d; does it say it removed the leftover?\n%s", code, errOut)
	}
	for _, b := range g.Projects.Policy("my-proj").Bindings {
		for _, m := range b.Members {
			if strings.Contains(m, gsaEmail) {
				t.Errorf("project policy keeps %s in %s", m, b.Role)
			}
		}
	}
}

// A disabled account exists but cannot authenticate: identity refuses it
// with the fix, verify reports it.
func TestDisabledAccount(t *testing.T) {
	g := startGCP(t)
	inst := newInstance(t, "off", "off-ns")
	t.Cleanup(func() { gcpRun(t, g, inst, "cleanup", "identity", "adapter", "--wait=false") })
	mustRun(t, inst, "adapter")
	gcpMustRun(t, g, inst, "identity")
	g.IAM.SetDisabled(gsaEmail, true)

	before := g.Mutations()
	code, _, errOut := gcpRun(t, g, inst, "identity")
	fix := "gcloud iam service-accounts enable " + gsaEmail + " --project my-proj"
	if code != exitcode.Precondition || !strings.Contains(errOut, "is disabled") || !strings.Contains(errOut, fix) {
		t.Errorf("exit %d, want %d:\n%s", code, exitcode.Precondition, errOut)
	}
	if g.Mutations() != before {
		t.Errorf("%d mutating calls on a disabled account", g.Mutations()-before)
	}
	code, out, _ := gcpRun(t, g, inst, "verify", "-o", "json")
	if code != exitcode.CheckFailed || !strings.Contains(out, `"reason": "Disabled"`) {
		t.Errorf("verify exit %d, want %d and a Disabled check:\n%s", code, exitcode.CheckFailed, out)
	}
	g.IAM.SetDisabled(gsaEmail, false)
}

// A policy holds at most 1,500 principals: a full project policy is a
// clear error, exit 5, and the policy is left as it was.
func TestPolicyFull(t *testing.T) {
	g := startGCP(t)
	inst := newInstance(t, "full", "full-ns")
	t.Cleanup(func() { gcpRun(t, g, inst, "cleanup", "identity") })
	mustRun(t, inst, "adapter")
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	members := make([]string, 1500)
	for i := range members {
		members[i] = fmt.Sprintf("user:u%d@example.com", i)
	}
	g.Projects.SetPolicy("my-proj", &iampb.Policy{Version: 1, Bindings: []*iampb.Binding{{Role: "roles/viewer", Members: members}}})

	code, _, errOut := gcpRun(t, g, inst, "identity")
	// Counted before the write, as Google counts: every occurrence.
	if code != exitcode.Precondition || !strings.Contains(errOut, "the IAM policy of projects/my-proj is full: it would hold 1501 principals (Google allows 1500") {
		t.Errorf("exit %d, want %d:\n%s", code, exitcode.Precondition, errOut)
	}
	if gcpfake.HasMember(g.Projects.Policy("my-proj"), viewerRole, gsaMember) || len(gcpfake.Members(g.Projects.Policy("my-proj"), "roles/viewer")) != 1500 {
		t.Error("the full policy changed")
	}
}

// The Cloud Monitoring API must be enabled: checked before any change,
// exit 5 with the gcloud fix.
func TestMonitoringAPIDisabled(t *testing.T) {
	inst := newInstance(t, "noapi", "noapi-ns")
	// A caller that may not read Service Usage is told what was not
	// checked, and the run goes on.
	t.Run("not readable", func(t *testing.T) {
		g := startGCP(t)
		g.Services.Denied = func(string) bool { return true }
		mustRun(t, inst, "adapter")
		t.Cleanup(func() { gcpRun(t, g, inst, "cleanup", "identity", "adapter") })
		code, _, errOut := gcpRun(t, g, inst, "identity")
		if code != 0 || !strings.Contains(errOut, "APIs not checked: the caller may not read Service Usage") {
			t.Errorf("exit %d:\n%s", code, errOut)
		}
	})
	g := startGCP(t)
	g.Services.SetEnabled("my-proj", "monitoring.googleapis.com", false)
	code, _, errOut := gcpRun(t, g, inst, "up")
	if code != exitcode.Precondition || !strings.Contains(errOut, "gcloud services enable monitoring.googleapis.com --project my-proj") {
		t.Errorf("exit %d, want %d:\n%s", code, exitcode.Precondition, errOut)
	}
	if g.Mutations() != 0 {
		t.Errorf("%d mutating GCP calls", g.Mutations())
	}
	if left := ownedObjects(t, inst); len(left) != 0 {
		t.Errorf("Kubernetes objects written: %v", keys(left))
	}
}

// A run interrupted right after it created the account leaves one IAM does
// not show yet; the next run's read of it may be refused
// PERMISSION_DENIED, as IAM answers for a new account. That is not the
// caller's own denial: the create tells them apart (ALREADY_EXISTS), and
// the account is used. A caller who truly may not read it is refused by
// the create too, and the read's denial is the error.
func TestResumeAfterAccountCreated(t *testing.T) {
	inst := newInstance(t, "resume", "resume-ns")
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	mustRun(t, inst, "adapter")

	t.Run("new account", func(t *testing.T) {
		g := startGCP(t)
		g.SetBehaviour(gcpfake.Behaviour{NewAccountWindow: 3 * time.Second, MaxPrincipals: 1500})
		t.Cleanup(func() { gcpRun(t, g, inst, "cleanup", "identity") })
		g.Projects.Denied = func(method, resource string) bool { return method == "SetIamPolicy" }
		if code, _, errOut := gcpRun(t, g, inst, "identity"); code != exitcode.Denied {
			t.Fatalf("first run exit %d, want %d:\n%s", code, exitcode.Denied, errOut)
		}
		first := g.IAM.Account(gsaEmail)
		if first == nil {
			t.Fatal("the first run did not create the account")
		}
		g.Projects.Denied = nil
		var denials atomic.Int32
		g.IAM.Faults = func(method string) error {
			if method == "GetServiceAccount" && denials.Add(1) == 1 {
				return status.Error(codes.PermissionDenied, "Permission 'iam.serviceAccounts.get' denied on resource (or it may not exist).")
			}
			return nil
		}
		code, _, errOut := gcpRun(t, g, inst, "identity")
		if code != 0 {
			t.Fatalf("re-run exit %d:\n%s", code, errOut)
		}
		if !strings.Contains(errOut, "Google service account "+gsaEmail+" exists (created by vllm-hpa") {
			t.Errorf("the re-run does not say it found its own account:\n%s", errOut)
		}
		if a := g.IAM.Account(gsaEmail); a == nil || a.UniqueId != first.UniqueId {
			t.Errorf("the account was replaced: %v, was %v", a, first)
		}
		if !gcpfake.HasMember(g.Projects.Policy("my-proj"), viewerRole, gsaMember) || !gcpfake.HasMember(g.IAM.AccountPolicy(gsaEmail), wiRole, ksaMember) {
			t.Error("a binding is missing after the re-run")
		}
	})
	t.Run("caller denied", func(t *testing.T) {
		g := startGCP(t)
		g.IAM.Denied = func(method, resource string) bool {
			return method == "GetServiceAccount" || method == "CreateServiceAccount"
		}
		code, _, errOut := gcpRun(t, g, inst, "identity")
		if code != exitcode.Denied || !strings.Contains(errOut, "get service account "+gsaEmail+": permission denied") {
			t.Errorf("exit %d, want %d and the read's denial:\n%s", code, exitcode.Denied, errOut)
		}
		if g.IAM.Account(gsaEmail) != nil {
			t.Error("an account was created for a caller who may not create one")
		}
	})
}

// What Google answers before it looks at a call: an organization policy,
// a VPC Service Controls perimeter, a rate limit, APIs switched off. Each
// is said as itself, with its fix and its exit code; what waiting cures is
// retried and said.
func TestGoogleRefusals(t *testing.T) {
	inst := newInstance(t, "refused", "refused-ns")
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	mustRun(t, inst, "adapter")

	t.Run("org policy forbids new accounts", func(t *testing.T) {
		g := startGCP(t)
		g.SetOrgPolicy(gcpfake.OrgPolicy{DisableServiceAccountCreation: true})
		t.Cleanup(func() { gcpRun(t, g, inst, "cleanup", "identity") })
		code, _, errOut := gcpRun(t, g, inst, "identity")
		if code != exitcode.Precondition || !strings.Contains(errOut, "constraints/iam.disableServiceAccountCreation") || !strings.Contains(errOut, "--identity-mode direct") {
			t.Errorf("exit %d, want %d naming the constraint and --identity-mode direct:\n%s", code, exitcode.Precondition, errOut)
		}
		if g.IAM.Account(gsaEmail) != nil {
			t.Error("an account was created against the policy")
		}
	})

	t.Run("perimeter", func(t *testing.T) {
		g := startGCP(t)
		g.SetPerimeter("iam.googleapis.com", true)
		code, _, errOut := gcpRun(t, g, inst, "identity")
		if code != exitcode.Precondition || !strings.Contains(errOut, "VPC Service Controls perimeter around iam.googleapis.com") ||
			!strings.Contains(errOut, "vpcServiceControlsUniqueIdentifier: vpcsc-iam-googleapis-com-violation") {
			t.Errorf("exit %d, want %d naming the perimeter:\n%s", code, exitcode.Precondition, errOut)
		}
		if g.Mutations() != 0 {
			t.Errorf("%d mutating calls", g.Mutations())
		}
	})

	t.Run("rate limited", func(t *testing.T) {
		g := startGCP(t)
		t.Cleanup(func() { gcpRun(t, g, inst, "cleanup", "identity") })
		g.Throttle(2, 200*time.Millisecond)
		code, _, errOut := gcpRun(t, g, inst, "identity")
		if code != 0 || !strings.Contains(errOut, "Google answered ResourceExhausted RATE_LIMIT_EXCEEDED") {
			t.Errorf("exit %d, want 0 after retries said on stderr:\n%s", code, errOut)
		}
		if !gcpfake.HasMember(g.Projects.Policy("my-proj"), viewerRole, gsaMember) {
			t.Error("the grant is missing after the retries")
		}
	})

	// Every API that is off, in one list and one gcloud line, before
	// anything changes.
	t.Run("several APIs off", func(t *testing.T) {
		g := startGCP(t)
		g.SetEnabled("my-proj", "iam.googleapis.com", false)
		g.SetEnabled("my-proj", "monitoring.googleapis.com", false)
		code, _, errOut := gcpRun(t, g, inst, "identity")
		if code != exitcode.Precondition || !strings.Contains(errOut, "gcloud services enable iam.googleapis.com monitoring.googleapis.com --project my-proj") {
			t.Errorf("exit %d, want %d with one gcloud line for both:\n%s", code, exitcode.Precondition, errOut)
		}
		if g.Mutations() != 0 {
			t.Errorf("%d mutating calls", g.Mutations())
		}
	})
}
