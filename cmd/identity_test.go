package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/iam/apiv1/iampb"
	container "google.golang.org/api/container/v1"
	"google.golang.org/genproto/googleapis/type/expr"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcpfake"
)

const (
	gsaEmail   = "metrics-adapter-gsa@my-proj.iam.gserviceaccount.com"
	gsaMember  = "serviceAccount:" + gsaEmail
	ksaMember  = "serviceAccount:my-proj.svc.id.goog[custom-metrics/custom-metrics-stackdriver-adapter]"
	viewerRole = "roles/monitoring.viewer"
	wiRole     = "roles/iam.workloadIdentityUser"
)

func startGCP(t *testing.T) *gcpfake.GCP {
	t.Helper()
	g, err := gcpfake.Start(gcpfake.Project{ID: "my-proj", Number: "123456789012"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Stop)
	// As if a cluster of the project had Workload Identity.
	g.SetWorkloadPool("my-proj", true)
	return g
}

// gcpRun runs vllm-hpa with the Google APIs pointed at the fakes.
func gcpRun(t *testing.T, g *gcpfake.GCP, inst instance, args ...string) (int, string, string) {
	t.Helper()
	return kubeRunEnv(t, inst, g.Env(), args...)
}

func gcpMustRun(t *testing.T, g *gcpfake.GCP, inst instance, args ...string) string {
	t.Helper()
	out, _ := mustRunGCP(t, g, inst, args...)
	return out
}

func ksaAnnotation(t *testing.T, inst instance) (string, bool) {
	sa, err := inst.tb.cp.Client.CoreV1().ServiceAccounts("custom-metrics").Get(context.Background(), "custom-metrics-stackdriver-adapter", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, ok := sa.Annotations["iam.gke.io/gcp-service-account"]
	return v, ok
}

func TestIdentityGSA(t *testing.T) {
	g := startGCP(t)
	inst := newInstance(t, "ident", "ident-ns")
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	mustRun(t, inst, "adapter")

	gcpMustRun(t, g, inst, "identity")
	a := g.IAM.Account(gsaEmail)
	if a == nil || a.DisplayName != "Metrics Adapter GSA" || !strings.HasPrefix(a.Description, "Created by vllm-hpa") {
		t.Fatalf("account = %v", a)
	}
	if !gcpfake.HasMember(g.Projects.Policy("my-proj"), viewerRole, gsaMember) {
		t.Error("project policy lacks roles/monitoring.viewer for the GSA")
	}
	if !gcpfake.HasMember(g.IAM.AccountPolicy(gsaEmail), wiRole, ksaMember) {
		t.Error("account policy lacks roles/iam.workloadIdentityUser for the KSA")
	}
	if v, _ := ksaAnnotation(t, inst); v != gsaEmail {
		t.Errorf("KSA annotation = %q", v)
	}

	// Twice: no second write.
	before := g.Mutations()
	out := gcpMustRun(t, g, inst, "identity", "-o", "json")
	if after := g.Mutations(); after != before {
		t.Errorf("second identity made %d mutating calls", after-before)
	}
	if !strings.Contains(out, "already granted") {
		t.Errorf("second run does not say the bindings hold:\n%s", out)
	}

	// Checks through verify's step checks.
	code, out, errOut := gcpRun(t, g, inst, "verify", "-o", "json")
	var doc runJSON
	json.Unmarshal([]byte(out), &doc)
	var identityChecks []string
	for _, s := range doc.Steps {
		if s.Step == "identity" {
			for _, c := range s.Checks {
				identityChecks = append(identityChecks, fmt.Sprintf("%s=%v", c.Check, c.OK))
			}
		}
	}
	if strings.Join(identityChecks, " ") != "google service account exists=true roles/monitoring.viewer binding=true roles/iam.workloadIdentityUser binding=true ksa annotation=true" {
		t.Errorf("identity checks: %v (verify exit %d: %s)", identityChecks, code, errOut)
	}

	// Cleanup twice: our members gone, the account deleted, the annotation
	// removed; the second run changes nothing.
	gcpMustRun(t, g, inst, "cleanup", "identity")
	if g.IAM.Account(gsaEmail) != nil {
		t.Error("account not deleted")
	}
	if gcpfake.HasMember(g.Projects.Policy("my-proj"), viewerRole, gsaMember) {
		t.Error("project policy still has our member")
	}
	if _, ok := ksaAnnotation(t, inst); ok {
		t.Error("KSA annotation not removed")
	}
	before = g.Mutations()
	gcpMustRun(t, g, inst, "cleanup", "identity")
	if after := g.Mutations(); after != before {
		t.Errorf("second cleanup made %d mutating calls", after-before)
	}
}

func TestIdentityDirect(t *testing.T) {
	g := startGCP(t)
	inst := newInstance(t, "direct", "direct-ns")
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	gcpMustRun(t, g, inst, "adapter")
	gcpMustRun(t, g, inst, "identity", "--identity-mode", "direct")
	principal := "principal://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/my-proj.svc.id.goog/subject/ns/custom-metrics/sa/custom-metrics-stackdriver-adapter"
	if !gcpfake.HasMember(g.Projects.Policy("my-proj"), viewerRole, principal) {
		t.Errorf("project policy lacks the KSA principal: %v", g.Projects.Policy("my-proj"))
	}
	if g.IAM.Account(gsaEmail) != nil {
		t.Error("direct mode created a Google service account")
	}
	if _, ok := ksaAnnotation(t, inst); ok {
		t.Error("direct mode annotated the KSA")
	}
	gcpMustRun(t, g, inst, "cleanup", "identity", "--identity-mode", "direct")
	if gcpfake.HasMember(g.Projects.Policy("my-proj"), viewerRole, principal) {
		t.Error("cleanup left the principal")
	}
}

// TestIdentityUnderConcurrentWriters: while identity and then cleanup run,
// 20 other writers add and remove their own members in the same project
// policy (by etag-guarded read-modify-write, as gcloud does). Every foreign
// member that should be there is there at the end, conditional bindings
// survive, and ours is present after identity and absent after cleanup.
func TestIdentityUnderConcurrentWriters(t *testing.T) {
	t.Parallel()
	for _, conditional := range []bool{false, true} {
		t.Run(fmt.Sprintf("conditional=%v", conditional), func(t *testing.T) {
			g := startGCP(t)
			inst := newInstance(t, fmt.Sprintf("conc%v", conditional), fmt.Sprintf("conc%v-ns", conditional))
			t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
			mustRun(t, inst, "adapter")
			cond := &iampb.Binding{Role: "roles/storage.objectViewer", Members: []string{"group:ml@example.com"},
				Condition: &expr.Expr{Title: "weekdays", Expression: `request.time.getDayOfWeek("Europe/Berlin") < 5`}}
			initial := &iampb.Policy{Version: 1, Bindings: []*iampb.Binding{{Role: viewerRole, Members: []string{"user:existing@example.com"}}}}
			if conditional {
				initial.Version = 3
				initial.Bindings = append(initial.Bindings, cond)
			}
			g.Projects.SetPolicy("my-proj", initial)
			// A network's latency on vllm-hpa's calls, so that its
			// read-modify-write races the writers as it would on GCP.
			g.Projects.Faults = func(string) error { time.Sleep(2 * time.Millisecond); return nil }

			var ours []string
			stats := runWriters(t, g, 20, func() {
				ours = append(ours, policyActions(gcpMustRun(t, g, inst, "identity", "-o", "json"))...)
				if !gcpfake.HasMember(g.Projects.Policy("my-proj"), viewerRole, gsaMember) {
					t.Error("our member absent right after identity")
				}
				ours = append(ours, policyActions(gcpMustRun(t, g, inst, "cleanup", "identity", "-o", "json"))...)
			})
			final := g.Projects.Policy("my-proj")
			lost := 0
			for i := 0; i < 20; i++ {
				if !gcpfake.HasMember(final, "roles/viewer", fmt.Sprintf("user:writer%d@example.com", i)) {
					lost++
				}
				if gcpfake.HasMember(final, "roles/viewer", fmt.Sprintf("user:tmp%d@example.com", i)) {
					t.Errorf("writer %d's temporary member survived its removal", i)
				}
			}
			if !gcpfake.HasMember(final, viewerRole, "user:existing@example.com") {
				lost++
			}
			if conditional {
				var found bool
				for _, b := range final.Bindings {
					if proto.Equal(b, cond) {
						found = true
					}
				}
				if !found {
					t.Errorf("conditional binding lost: %v", final.Bindings)
					lost++
				}
			}
			if gcpfake.HasMember(final, viewerRole, gsaMember) {
				t.Error("our member present after cleanup")
			}
			if lost != 0 {
				t.Errorf("%d foreign members lost", lost)
			}
			t.Logf("writers=20 foreign-writes=%d foreign-retries=%d aborted-total=%d members-lost=%d conditional=%v; vllm-hpa: %s",
				stats.writes.Load(), stats.retries.Load(), g.Projects.Counters.Aborted.Load(), lost, conditional, strings.Join(ours, "; "))
		})
	}
}

// policyActions picks the project-policy lines (with their write and retry
// counts) from a run's JSON.
func policyActions(out string) []string {
	var doc runJSON
	json.Unmarshal([]byte(out), &doc)
	var lines []string
	for _, s := range doc.Steps {
		for _, a := range s.Actions {
			if strings.HasPrefix(a, "projects/my-proj: ") {
				lines = append(lines, strings.TrimPrefix(a, "projects/my-proj: "))
			}
		}
	}
	return lines
}

type writerStats struct{ writes, retries atomic.Int64 }

// runWriters runs n foreign writers on the project policy while during()
// runs. Each adds its own member for good, and adds and removes a temporary
// one over and over.
func runWriters(t *testing.T, g *gcpfake.GCP, n int, during func()) *writerStats {
	get, set := g.Projects.Writer("my-proj")
	stats := &writerStats{}
	rmw := func(modify func(*iampb.Policy)) {
		for {
			p := get()
			modify(p)
			p.Version = 3
			// A real client's round trip between read and write.
			time.Sleep(time.Duration(500+rand.IntN(1500)) * time.Microsecond)
			err := set(p)
			if err == nil {
				stats.writes.Add(1)
				return
			}
			if status.Code(err) != codes.Aborted {
				t.Errorf("writer: %v", err)
				return
			}
			stats.retries.Add(1)
			time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			mine, tmp := fmt.Sprintf("user:writer%d@example.com", i), fmt.Sprintf("user:tmp%d@example.com", i)
			rmw(func(p *iampb.Policy) { addTo(p, "roles/viewer", mine) })
			for {
				select {
				case <-stop:
					rmw(func(p *iampb.Policy) { removeFrom(p, "roles/viewer", tmp) })
					return
				default:
				}
				rmw(func(p *iampb.Policy) { addTo(p, "roles/viewer", tmp) })
				rmw(func(p *iampb.Policy) { removeFrom(p, "roles/viewer", tmp) })
				// Busy, as shared policies go: together the writers try
				// a few hundred writes a second.
				time.Sleep(time.Duration(50+rand.IntN(100)) * time.Millisecond)
			}
		}(i)
	}
	during()
	close(stop)
	wg.Wait()
	return stats
}

func addTo(p *iampb.Policy, role, member string) {
	for _, b := range p.Bindings {
		if b.Role == role && b.Condition == nil {
			for _, m := range b.Members {
				if m == member {
					return
				}
			}
			b.Members = append(b.Members, member)
			return
		}
	}
	p.Bindings = append(p.Bindings, &iampb.Binding{Role: role, Members: []string{member}})
}

func removeFrom(p *iampb.Policy, role, member string) {
	for _, b := range p.Bindings {
		if b.Role == role && b.Condition == nil {
			kept := b.Members[:0]
			for _, m := range b.Members {
				if m != member {
					kept = append(kept, m)
				}
			}
			b.Members = kept
		}
	}
}

func TestIdentityErrors(t *testing.T) {
	inst := newInstance(t, "errs", "errs-ns")
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	mustRun(t, inst, "adapter")

	t.Run("permission denied", func(t *testing.T) {
		g := startGCP(t)
		g.Projects.Denied = func(method, resource string) bool { return method == "SetIamPolicy" }
		code, out, errOut := gcpRun(t, g, inst, "identity", "-o", "json")
		if code != exitcode.Denied || !strings.Contains(errOut, "permission denied") {
			t.Errorf("exit %d, want %d:\n%s", code, exitcode.Denied, errOut)
		}
		// What was done before the failure is listed.
		if !strings.Contains(out, "Google service account "+gsaEmail+" created") {
			t.Errorf("output does not list the account created before the failure:\n%s", out)
		}
	})
	// Google answers PERMISSION_DENIED for a project that does not exist,
	// as for one the caller may not see.
	t.Run("project not found", func(t *testing.T) {
		g := startGCP(t)
		before := g.Mutations()
		code, _, errOut := gcpRun(t, g, inst, "identity", "--project", "other-proj")
		if code != exitcode.Denied || !strings.Contains(errOut, "other-proj") || !strings.Contains(errOut, "--project names a project that exists") {
			t.Errorf("exit %d, want %d:\n%s", code, exitcode.Denied, errOut)
		}
		if g.Mutations() != before {
			t.Errorf("%d mutating calls for a project that does not exist", g.Mutations()-before)
		}
		// Refused among the preconditions, before the first step.
		if !strings.Contains(errOut, "get project other-proj: permission denied") || strings.Contains(errOut, "▸ identity") {
			t.Errorf("the project is not refused among the preconditions:\n%s", errOut)
		}
	})
	t.Run("account name taken", func(t *testing.T) {
		g := startGCP(t)
		g.IAM.PutAccount("my-proj", "metrics-adapter-gsa", "Someone else's", "made by hand")
		before := g.Mutations()
		code, _, errOut := gcpRun(t, g, inst, "identity")
		if code != exitcode.Conflict || !strings.Contains(errOut, "was not created by vllm-hpa") || !strings.Contains(errOut, "--adopt") {
			t.Errorf("exit %d, want %d:\n%s", code, exitcode.Conflict, errOut)
		}
		if g.Mutations() != before {
			t.Error("a taken account name still led to IAM writes")
		}
		// Adopting it works, and cleanup then leaves the account (and
		// removes the grants vllm-hpa made).
		gcpMustRun(t, g, inst, "identity", "--adopt-existing-gsa")
		gcpMustRun(t, g, inst, "cleanup", "identity", "--adopt-existing-gsa")
		if g.IAM.Account(gsaEmail) == nil {
			t.Error("cleanup deleted an account vllm-hpa did not create")
		}
		if gcpfake.HasMember(g.Projects.Policy("my-proj"), viewerRole, gsaMember) || gcpfake.HasMember(g.IAM.AccountPolicy(gsaEmail), wiRole, ksaMember) {
			t.Error("cleanup left the grants vllm-hpa made")
		}
	})
	// An adopted account whose grants were there already: up says so, and
	// cleanup leaves every one of them, as they are not vllm-hpa's.
	t.Run("adopted with its grants in place", func(t *testing.T) {
		g := startGCP(t)
		g.IAM.PutAccount("my-proj", "metrics-adapter-gsa", "Someone else's", "made by hand")
		g.Projects.SetPolicy("my-proj", &iampb.Policy{Version: 3, Bindings: []*iampb.Binding{{Role: viewerRole, Members: []string{gsaMember, "user:ops@example.com"}}}})
		setAccountPolicy(t, g, &iampb.Policy{Bindings: []*iampb.Binding{{Role: wiRole, Members: []string{ksaMember}}}})
		project, account := g.Projects.Policy("my-proj"), g.IAM.AccountPolicy(gsaEmail)
		out := gcpMustRun(t, g, inst, "identity", "--adopt-existing-gsa", "-o", "json")
		if strings.Count(out, "already granted") != 2 {
			t.Errorf("identity does not say both grants were in place:\n%s", out)
		}
		code, out, errOut := gcpRun(t, g, inst, "cleanup", "identity", "--adopt-existing-gsa", "--dry-run", "-o", "json")
		if code != 0 || strings.Count(out, "found in place, not made by vllm-hpa") != 2 {
			t.Errorf("cleanup --dry-run: exit %d, does not keep both grants:\n%s\n%s", code, out, errOut)
		}
		gcpMustRun(t, g, inst, "cleanup", "identity", "--adopt-existing-gsa")
		if got := g.Projects.Policy("my-proj"); !proto.Equal(&iampb.Policy{Bindings: got.Bindings}, &iampb.Policy{Bindings: project.Bindings}) {
			t.Errorf("cleanup changed the project's grants it found: %v, were %v", got.Bindings, project.Bindings)
		}
		if got := g.IAM.AccountPolicy(gsaEmail); !proto.Equal(&iampb.Policy{Bindings: got.Bindings}, &iampb.Policy{Bindings: account.Bindings}) {
			t.Errorf("cleanup changed the account's grants it found: %v, were %v", got.Bindings, account.Bindings)
		}
		if a, _ := ksaAnnotation(t, inst); a != "" {
			t.Errorf("the annotation stays: %q", a)
		}
	})
}

// TestPreconditions: each failing precondition is reported with its fix,
// exits 5, and nothing is mutated in GCP or Kubernetes.
func TestPreconditions(t *testing.T) {
	inst := newInstance(t, "precond", "precond-ns")
	good := func() *container.Cluster {
		return &container.Cluster{
			Name: "gpu-hpa", Status: "RUNNING", CurrentMasterVersion: "1.33.5-gke.1000",
			WorkloadIdentityConfig: &container.WorkloadIdentityConfig{WorkloadPool: "my-proj.svc.id.goog"},
			MonitoringConfig:       &container.MonitoringConfig{ManagedPrometheusConfig: &container.ManagedPrometheusConfig{Enabled: true}},
			NodePools: []*container.NodePool{{Name: "gpu", Config: &container.NodeConfig{
				Accelerators:           []*container.AcceleratorConfig{{AcceleratorType: "nvidia-l4", AcceleratorCount: 1}},
				WorkloadMetadataConfig: &container.WorkloadMetadataConfig{Mode: "GKE_METADATA"},
			}}},
		}
	}
	cases := []struct {
		name    string
		breakIt func(c *container.Cluster)
		want    string
	}{
		{"workload identity pool", func(c *container.Cluster) { c.WorkloadIdentityConfig = nil }, "--workload-pool=my-proj.svc.id.goog"},
		{"managed prometheus", func(c *container.Cluster) { c.MonitoringConfig = nil }, "--enable-managed-prometheus"},
		{"version", func(c *container.Cluster) { c.CurrentMasterVersion = "1.26.15-gke.100" }, "--master --cluster-version=1.27"},
		{"gpu pool", func(c *container.Cluster) { c.NodePools[0].Config.Accelerators = nil }, "gcloud container node-pools create nvidia-l4-pool"},
		{"metadata server", func(c *container.Cluster) { c.NodePools[0].Config.WorkloadMetadataConfig = nil }, "--workload-metadata=GKE_METADATA"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := startGCP(t)
			cl := good()
			c.breakIt(cl)
			g.GKE.PutCluster("projects/my-proj/locations/us-central1/clusters/gpu-hpa", cl)
			code, _, errOut := gcpRun(t, g, inst, "up", "--cluster", "gpu-hpa", "--location", "us-central1", "--kubeconfig", inst.tb.cp.Kubeconfig)
			if code != exitcode.Precondition || !strings.Contains(errOut, c.want) {
				t.Errorf("exit %d, want %d with %q:\n%s", code, exitcode.Precondition, c.want, errOut)
			}
			if g.Mutations() != 0 {
				t.Errorf("%d mutating GCP calls", g.Mutations())
			}
			if left := ownedObjects(t, inst); len(left) != 0 {
				t.Errorf("Kubernetes objects written: %v", keys(left))
			}
		})
	}
	t.Run("all met", func(t *testing.T) {
		g := startGCP(t)
		g.GKE.PutCluster("projects/my-proj/locations/us-central1/clusters/gpu-hpa", good())
		t.Cleanup(func() { kubeRun(t, inst, cleanupKube...) })
		code, out, errOut := gcpRun(t, g, inst, "deploy", "--cluster", "gpu-hpa", "--location", "us-central1", "--kubeconfig", inst.tb.cp.Kubeconfig)
		if code != 0 || !strings.Contains(errOut, "✓ gpu nodes") {
			t.Errorf("exit %d: %s %s", code, out, errOut)
		}
		// Each step's own preconditions: deploy needs GPU nodes, not
		// the identity's pool or Managed Prometheus.
		if strings.Contains(errOut, "workload identity pool") || strings.Contains(errOut, "managed prometheus") {
			t.Errorf("deploy checked other steps' preconditions:\n%s", errOut)
		}
	})
}

// TestUpAndCleanupWholeStack runs every step with the GCP fakes: up twice
// (the second changes nothing in Kubernetes or GCP), then cleanup, which
// leaves no owned object and no IAM member of ours.
func TestUpAndCleanupWholeStack(t *testing.T) {
	g := startGCP(t)
	inst := newInstance(t, "whole", "whole-ns")
	cp := inst.tb.cp
	t.Cleanup(func() { kubeRun(t, inst, tidyKube...) })
	gcpMustRun(t, g, inst, "up")
	objects, mutations := ownedObjects(t, inst), g.Mutations()
	out := gcpMustRun(t, g, inst, "up", "-o", "json")
	if after := ownedObjects(t, inst); !equalMaps(objects, after) {
		for k, v := range after {
			if objects[k] != v {
				t.Errorf("second up changed %s (resourceVersion %s -> %s)", k, objects[k], v)
			}
		}
	}
	if g.Mutations() != mutations {
		t.Errorf("second up made %d mutating GCP calls", g.Mutations()-mutations)
	}
	var doc runJSON
	if err := json.Unmarshal([]byte(out), &doc); err != nil || !doc.OK || len(doc.Steps) != 6 { // preconditions and the five steps
		t.Errorf("second up: %v %+v", err, doc)
	}

	// Changing the Google service account changes the annotation, which
	// restarts the adapter's pods.
	pods := func() string {
		l, _ := cp.Client.CoreV1().Pods("custom-metrics").List(context.Background(), metav1.ListOptions{LabelSelector: "k8s-app=custom-metrics-stackdriver-adapter"})
		var uids []string
		for _, p := range l.Items {
			if p.DeletionTimestamp == nil {
				uids = append(uids, string(p.UID))
			}
		}
		return strings.Join(uids, ",")
	}
	before := pods()
	_, out, _ = gcpRun(t, g, inst, "identity", "--gsa-name", "other-adapter-gsa", "-o", "json")
	if !strings.Contains(out, "adapter pods restarted") || pods() == before {
		t.Errorf("annotation change did not restart the adapter pods (pods %s -> %s)", before, pods())
	}
	gcpMustRun(t, g, inst, "cleanup", "identity", "--gsa-name", "other-adapter-gsa")

	gcpMustRun(t, g, inst, "cleanup")
	if left := ownedObjects(t, inst); len(left) != 0 {
		t.Errorf("cleanup left %v", keys(left))
	}
	for _, m := range gcpfake.Members(g.Projects.Policy("my-proj"), viewerRole) {
		if strings.Contains(m, "my-proj.iam.gserviceaccount.com") || strings.Contains(m, "svc.id.goog") {
			t.Errorf("cleanup left IAM member %s", m)
		}
	}
	if g.IAM.Account(gsaEmail) != nil {
		t.Error("cleanup left the Google service account")
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
