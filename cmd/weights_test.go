package cmd

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/iam/apiv1/iampb"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/gcpfake"
	"github.com/vllm-hpa/vllm-hpa/internal/grants"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
)

// The vLLM pods' KSA principal in the fakes' project (number
// 123456789012) for instance namespace ns.
func weightsPrincipal(ns string) string {
	return "principal://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/my-proj.svc.id.goog/subject/ns/" + ns + "/sa/vllm-gemma-deployment"
}

// putModel writes a small model's files into gs://bucket/dir.
func putModel(g interface {
	PutObject(bucket, object string, size int64)
}, bucket, dir string) {
	for name, size := range map[string]int64{"config.json": 900, "tokenizer.json": 33e6, "tokenizer_config.json": 1e6, "model.safetensors": 2e9} {
		g.PutObject(bucket, dir+"/"+name, size)
	}
}

// TestModelFromBucket: deploy with workload.model-source refuses a bucket
// that is missing or does not hold the model (exit 5, the commands that
// copy it, nothing changed), refuses a principal IAM does not know yet (no
// Workload Identity pool), then grants the vLLM pods' own KSA
// roles/storage.objectViewer on the bucket keeping every other member,
// records the grant on the KSA, and renders the streamer's arguments;
// cleanup, even without the setting, removes only that grant and the KSA.
// A grant found in place is used and kept.
func TestModelFromBucket(t *testing.T) {
	g := startGCP(t)
	inst := newInstance(t, "weights", "weights-ns")
	t.Cleanup(func() { gcpRun(t, g, inst, "cleanup", "deploy", "--wait=false") })
	const source = "gs://my-models/google/gemma-3-1b-it"
	g.Storage.PutBucket("my-proj", "my-models")
	theirs := &iampb.Policy{Version: 1, Bindings: []*iampb.Binding{
		{Role: gcp.RoleObjectViewer, Members: []string{"user:alice@example.com"}},
		{Role: "roles/storage.admin", Members: []string{"group:ops@example.com"}},
	}}
	g.Storage.SetPolicy("my-models", theirs)
	deployments := func() int {
		l, err := inst.tb.cp.Client.AppsV1().Deployments(inst.namespace).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return len(l.Items)
	}

	copyModel := "fix: hf download google/gemma-3-1b-it --local-dir ./gemma-3-1b-it --exclude '*.pth' '*.bin' && gcloud storage rsync --recursive ./gemma-3-1b-it " + source
	for _, c := range []struct {
		name, source string
		want         []string
	}{
		{"bucket missing", "gs://no-such-bucket/m", []string{"the bucket gs://no-such-bucket (workload.model-source) does not exist", "gcloud storage buckets create gs://no-such-bucket"}},
		{"model not copied", source, []string{"holds no object: the model was not copied there", copyModel}},
	} {
		before := g.Mutations()
		code, _, errOut := gcpRun(t, g, inst, "deploy", "--model-source", c.source)
		for _, w := range append(c.want, "nothing was changed") {
			if code != 5 || !strings.Contains(errOut, w) {
				t.Fatalf("%s: exit %d, want 5 naming %q:\n%s", c.name, code, w, errOut)
			}
		}
		if g.Mutations() != before || deployments() != 0 {
			t.Fatalf("%s: %d Google writes, %d Deployments after a refusal", c.name, g.Mutations()-before, deployments())
		}
	}
	g.Storage.PutObject("my-models", "google/gemma-3-1b-it/config.json", 900)
	code, _, errOut := gcpRun(t, g, inst, "deploy", "--model-source", source)
	if code != 5 || !strings.Contains(errOut, "lacks a tokenizer (tokenizer.json or tokenizer.model), weights as *.safetensors") {
		t.Fatalf("half a model: exit %d\n%s", code, errOut)
	}
	putModel(g.Storage, "my-models", "google/gemma-3-1b-it")

	// A caller who may not change the bucket's policy: refused (exit 6)
	// before anything is written.
	g.Storage.Denied = func(permission, _ string) bool { return permission == "storage.buckets.setIamPolicy" }
	code, _, errOut = gcpRun(t, g, inst, "deploy", "--model-source", source)
	g.Storage.Denied = nil
	if code != 6 || !strings.Contains(errOut, "lacks storage.buckets.setIamPolicy on gs://my-models") || !strings.Contains(errOut, "roles/storage.admin") {
		t.Fatalf("no setIamPolicy: exit %d\n%s", code, errOut)
	}
	if _, err := inst.tb.cp.Client.CoreV1().ServiceAccounts(inst.namespace).Get(context.Background(), "vllm-gemma-deployment", metav1.GetOptions{}); err == nil || deployments() != 0 {
		t.Fatal("a refused deploy wrote objects")
	}

	// A principal IAM does not know: the project has no pool yet.
	g.SetWorkloadPool("my-proj", false)
	code, _, errOut = gcpRun(t, g, inst, "deploy", "--model-source", source)
	g.SetWorkloadPool("my-proj", true)
	if code != 5 || !strings.Contains(errOut, "Workload Identity pool my-proj.svc.id.goog does not exist") || !strings.Contains(errOut, "--workload-pool=my-proj.svc.id.goog") {
		t.Fatalf("no pool: exit %d\n%s", code, errOut)
	}
	if !proto.Equal(stripEtag(g.Storage.Policy("my-models")), stripEtag(theirs)) {
		t.Fatalf("a refused write changed the policy: %v", g.Storage.Policy("my-models"))
	}

	_, errOut = mustRunGCP(t, g, inst, "deploy", "--model-source", source)
	member := weightsPrincipal(inst.namespace)
	pol := g.Storage.Policy("my-models")
	if !gcp.HasMember(pol, gcp.RoleObjectViewer, member) || !gcp.HasMember(pol, gcp.RoleObjectViewer, "user:alice@example.com") || !gcp.HasMember(pol, "roles/storage.admin", "group:ops@example.com") {
		t.Fatalf("bucket policy after deploy: %v", pol)
	}
	if !strings.Contains(errOut, "model in bucket") || !strings.Contains(errOut, "granted") {
		t.Errorf("deploy's progress does not say the model check and the grant:\n%s", errOut)
	}
	ctx := context.Background()
	ksa, err := inst.tb.kube(t).Dynamic.Resource(kube.ServiceAccountsGVR).Namespace(inst.namespace).Get(ctx, "vllm-gemma-deployment", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := grants.Find(grants.Read(ksa), "projects/_/buckets/my-models", gcp.RoleObjectViewer, member); !ok || !r.Made {
		t.Fatalf("the KSA's record = %v", ksa.GetAnnotations())
	}
	d, err := inst.tb.cp.Client.AppsV1().Deployments(inst.namespace).Get(ctx, "vllm-gemma-deployment", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if d.Spec.Template.Spec.ServiceAccountName != "vllm-gemma-deployment" || c.Image != "vllm/vllm-openai:v0.11.1" ||
		!slices.Contains(c.Args, "--model="+source) || !slices.Contains(c.Args, "--load-format=runai_streamer") || !slices.Contains(c.Args, "--served-model-name=$(MODEL_ID)") {
		t.Fatalf("Deployment: sa %q image %q args %v", d.Spec.Template.Spec.ServiceAccountName, c.Image, c.Args)
	}

	// A re-run writes nothing to Google.
	before := g.Storage.Counters.Mutations.Load()
	mustRunGCP(t, g, inst, "deploy", "--model-source", source)
	if n := g.Storage.Counters.Mutations.Load() - before; n != 0 {
		t.Errorf("a re-run wrote the bucket policy %d times", n)
	}

	secret := func() bool {
		_, err := inst.tb.cp.Client.CoreV1().Secrets(inst.namespace).Get(ctx, "hf-secret", metav1.GetOptions{})
		return err == nil
	}
	if secret() {
		t.Fatal("the weights come from the bucket, yet deploy wrote the Hugging Face token's Secret")
	}

	// Back to Hugging Face: once the rollout is done, the grant and the
	// KSA go; and to the bucket again: the token Secret goes.
	mustRunGCP(t, g, inst, "deploy")
	if gcp.HasMember(g.Storage.Policy("my-models"), gcp.RoleObjectViewer, member) || !secret() {
		t.Fatalf("deploy without the bucket kept its grant (%v) or wrote no token Secret", g.Storage.Policy("my-models"))
	}
	if _, err := inst.tb.cp.Client.CoreV1().ServiceAccounts(inst.namespace).Get(ctx, "vllm-gemma-deployment", metav1.GetOptions{}); err == nil {
		t.Fatal("deploy without the bucket kept the vLLM pods' KSA")
	}
	mustRunGCP(t, g, inst, "deploy", "--model-source", source)
	if !gcp.HasMember(g.Storage.Policy("my-models"), gcp.RoleObjectViewer, member) || secret() {
		t.Fatal("deploy with the bucket again: no grant, or the token Secret kept")
	}

	// Without Google credentials, cleanup could not remove the grant:
	// refused before anything is deleted.
	code, _, errOut = kubeRun(t, inst, "cleanup", "deploy")
	if code != 5 || !strings.Contains(errOut, "nothing was deleted") || deployments() != 1 {
		t.Fatalf("cleanup without credentials: exit %d, %d Deployments\n%s", code, deployments(), errOut)
	}

	// cleanup without the setting still finds the KSA, its record, and
	// removes only vllm-hpa's grant.
	mustRunGCP(t, g, inst, "cleanup", "deploy")
	pol = g.Storage.Policy("my-models")
	if gcp.HasMember(pol, gcp.RoleObjectViewer, member) || !gcp.HasMember(pol, gcp.RoleObjectViewer, "user:alice@example.com") || !gcp.HasMember(pol, "roles/storage.admin", "group:ops@example.com") {
		t.Fatalf("bucket policy after cleanup: %v", pol)
	}
	if _, err := inst.tb.cp.Client.CoreV1().ServiceAccounts(inst.namespace).Get(ctx, "vllm-gemma-deployment", metav1.GetOptions{}); err == nil {
		t.Fatal("cleanup left the vLLM pods' KSA")
	}

	// A grant someone made before: used, recorded as found, kept.
	pre := proto.Clone(theirs).(*iampb.Policy)
	pre.Bindings[0].Members = append(pre.Bindings[0].Members, member)
	g.Storage.SetPolicy("my-models", pre)
	mustRunGCP(t, g, inst, "deploy", "--model-source", source)
	mustRunGCP(t, g, inst, "cleanup", "deploy", "--model-source", source)
	if !gcp.HasMember(g.Storage.Policy("my-models"), gcp.RoleObjectViewer, member) {
		t.Fatal("cleanup removed a grant vllm-hpa found in place")
	}
}

// mustRunGCP runs vllm-hpa with the Google APIs pointed at the fakes, and
// fails the test unless it exits 0; its stdout and stderr.
func mustRunGCP(t *testing.T, g *gcpfake.GCP, inst instance, args ...string) (string, string) {
	t.Helper()
	code, out, errOut := gcpRun(t, g, inst, args...)
	if code != 0 {
		t.Fatalf("vllm-hpa %v: exit %d\n%s\n%s", args, code, out, errOut)
	}
	return out, errOut
}

func stripEtag(p *iampb.Policy) *iampb.Policy {
	p = proto.Clone(p).(*iampb.Policy)
	p.Etag, p.Version = nil, 0
	return p
}

// A Cloud Storage endpoint that accepts and never answers: deploy ends at
// its --timeout (exit 4), having written nothing (the listing comes first).
func TestModelBucketNeverAnswers(t *testing.T) {
	g := startGCP(t)
	inst := newInstance(t, "weights-hang", "weights-hang-ns")
	env := g.Env()
	env["VLLM_HPA_ENDPOINTS_STORAGE"] = "http://" + neverAnswers(t) + "/storage/v1/"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang fails, not stalls, the suite
	defer cancel()
	code, _, errOut := kubeRunCtx(t, ctx, inst, env, "deploy", "--model-source", "gs://my-models/m", "--timeout", "3s")
	if code != exitcode.Timeout || !strings.Contains(errOut, "--timeout 3s reached") {
		t.Fatalf("exit %d, want %d naming the limit:\n%s", code, exitcode.Timeout, errOut)
	}
	if _, err := inst.tb.cp.Client.CoreV1().ServiceAccounts(inst.namespace).Get(context.Background(), "vllm-gemma-deployment", metav1.GetOptions{}); err == nil {
		t.Fatal("deploy wrote its KSA before the bucket answered")
	}
}

// TestModelBucketForeignAndSecondInstance: a ServiceAccount someone else
// made with our very name and values (no ownership label) is theirs: deploy
// refuses it (exit 7) before the bucket's policy is touched, and leaves it
// as it was. A second instance in another namespace streaming from the same
// bucket gets a grant of its own principal; cleanup of the first takes only
// its own grant back.
func TestModelBucketForeignAndSecondInstance(t *testing.T) {
	g := startGCP(t)
	inst := newInstance(t, "foreignsa", "foreignsa-ns")
	other := inst.another("secondsa", "secondsa-ns")
	t.Cleanup(func() {
		gcpRun(t, g, inst, "cleanup", "deploy")
		gcpRun(t, g, other, "cleanup", "deploy")
	})
	const source = "gs://my-models/google/gemma-3-1b-it"
	g.Storage.PutBucket("my-proj", "my-models")
	putModel(g.Storage, "my-models", "google/gemma-3-1b-it")
	ctx := context.Background()
	cs := inst.tb.cp.Client
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: inst.namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	foreign, err := cs.CoreV1().ServiceAccounts(inst.namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "vllm-gemma-deployment"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := g.Mutations()
	code, _, errOut := gcpRun(t, g, inst, "deploy", "--model-source", source)
	if code != int(exitcode.Conflict) || !strings.Contains(errOut, "vllm-gemma-deployment") {
		t.Fatalf("a foreign ServiceAccount with our name: exit %d, want %d naming it:\n%s", code, exitcode.Conflict, errOut)
	}
	if g.Mutations() != before || gcp.HasMember(g.Storage.Policy("my-models"), gcp.RoleObjectViewer, weightsPrincipal(inst.namespace)) {
		t.Fatalf("the bucket's policy was changed for a ServiceAccount that is not ours: %v", g.Storage.Policy("my-models"))
	}
	if sa, err := cs.CoreV1().ServiceAccounts(inst.namespace).Get(ctx, "vllm-gemma-deployment", metav1.GetOptions{}); err != nil || sa.ResourceVersion != foreign.ResourceVersion {
		t.Fatalf("the foreign ServiceAccount was changed (%v): %v", err, sa)
	}
	if err := cs.CoreV1().ServiceAccounts(inst.namespace).Delete(ctx, "vllm-gemma-deployment", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	mustRunGCP(t, g, inst, "deploy", "--model-source", source)
	mustRunGCP(t, g, other, "deploy", "--model-source", source)
	pol := g.Storage.Policy("my-models")
	if !gcp.HasMember(pol, gcp.RoleObjectViewer, weightsPrincipal(inst.namespace)) || !gcp.HasMember(pol, gcp.RoleObjectViewer, weightsPrincipal(other.namespace)) {
		t.Fatalf("two instances on one bucket: %v", pol)
	}
	mustRunGCP(t, g, inst, "cleanup", "deploy")
	pol = g.Storage.Policy("my-models")
	if gcp.HasMember(pol, gcp.RoleObjectViewer, weightsPrincipal(inst.namespace)) || !gcp.HasMember(pol, gcp.RoleObjectViewer, weightsPrincipal(other.namespace)) {
		t.Fatalf("cleanup of one instance: %v", pol)
	}
}
