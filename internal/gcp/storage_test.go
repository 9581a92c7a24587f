package gcp_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"cloud.google.com/go/iam/apiv1/iampb"
	"google.golang.org/api/option"
	storage "google.golang.org/api/storage/v1"
	"google.golang.org/grpc/codes"

	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/gcpfake"
)

func storageFake(t *testing.T) (*gcpfake.GCP, *storage.Service) {
	t.Helper()
	g, err := gcpfake.Start(gcpfake.Project{ID: "my-proj", Number: "123456789012"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Stop)
	svc, err := storage.NewService(context.Background(), option.WithEndpoint(g.StorageEndpoint), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	return g, svc
}

// A write with the etag of a policy someone changed since is refused as
// Cloud Storage refuses it (412 conditionNotMet), read as ABORTED, so that
// SetMember reads again and keeps the other writer's member.
func TestBucketPolicyStaleEtag(t *testing.T) {
	g, svc := storageFake(t)
	g.Storage.PutBucket("my-proj", "b")
	ctx := context.Background()
	p := gcp.BucketPolicy(svc, "b")
	read, err := p.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	g.Storage.SetPolicy("b", &iampb.Policy{Bindings: []*iampb.Binding{{Role: "roles/storage.admin", Members: []string{"user:bob@example.com"}}}})
	_, err = p.Set(ctx, read)
	if d, ok := gcp.DetailsOf(err); !ok || d.Code != codes.Aborted || !gcp.Retryable(err) {
		t.Fatalf("stale etag: %v (%+v)", err, d)
	}
	changed, stats, err := gcp.SetMember(ctx, p, gcp.RoleObjectViewer, "user:alice@example.com", true, gcp.DefaultBackoff)
	if err != nil || !changed || stats.Writes != 1 {
		t.Fatalf("SetMember: %v %v %v", changed, stats, err)
	}
	pol := g.Storage.Policy("b")
	if !gcp.HasMember(pol, gcp.RoleObjectViewer, "user:alice@example.com") || !gcp.HasMember(pol, "roles/storage.admin", "user:bob@example.com") {
		t.Fatalf("policy: %v", pol)
	}
}

// The listing pages through the directory and stops at its bound.
func TestListModel(t *testing.T) {
	g, svc := storageFake(t)
	ctx := context.Background()
	l, err := gcp.ListModel(ctx, svc, "nope", "m")
	if err != nil || !l.BucketMissing {
		t.Fatalf("missing bucket: %+v %v", l, err)
	}
	g.Storage.PutBucket("my-proj", "b")
	g.Storage.PutObject("b", "m/config.json", 10)
	g.Storage.PutObject("b", "m2/config.json", 10) // another directory
	for i := range 1500 {
		g.Storage.PutObject("b", "m/shard-"+strings.Repeat("0", 4-len(itoa(i)))+itoa(i)+".safetensors", 1<<20)
	}
	l, err = gcp.ListModel(ctx, svc, "b", "m")
	if err != nil || len(l.Files) != 1501 || l.Truncated || len(l.Weights()) != 1500 || l.Bytes != 1500<<20+10 {
		t.Fatalf("listing: %d files, %d weights, %d bytes, truncated %v, %v", len(l.Files), len(l.Weights()), l.Bytes, l.Truncated, err)
	}
	for i := 1500; i < 6000; i++ {
		g.Storage.PutObject("b", "m/x"+itoa(i), 1)
	}
	if l, err = gcp.ListModel(ctx, svc, "b", "m"); err != nil || !l.Truncated || len(l.Files) != 5000 {
		t.Fatalf("bounded listing: %d files, truncated %v, %v", len(l.Files), l.Truncated, err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestModelInBucket(t *testing.T) {
	model := gcp.ModelListing{Bucket: "b", Path: "g/m", Files: []string{"config.json", "tokenizer.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"}, Bytes: 3 << 30}
	for _, c := range []struct {
		name string
		l    gcp.ModelListing
		ok   bool
		want []string
	}{
		{"a model", model, true, []string{"2 safetensors file(s), 3.0 GiB in 5 objects"}},
		{"no bucket", gcp.ModelListing{Bucket: "b", Path: "g/m", BucketMissing: true}, false, []string{"gs://b (workload.model-source) does not exist", "gcloud storage buckets create gs://b --location us-central1 --uniform-bucket-level-access", "gcloud storage rsync --recursive ./m gs://b/g/m"}},
		{"empty", gcp.ModelListing{Bucket: "b", Path: "g/m"}, false, []string{"holds no object", "hf download g/m --local-dir ./m"}},
		{"pickled weights", gcp.ModelListing{Bucket: "b", Path: "g/m", Files: []string{"config.json", "tokenizer.model", "pytorch_model.bin"}}, false, []string{"lacks weights as *.safetensors"}},
		{"no config", gcp.ModelListing{Bucket: "b", Path: "g/m", Files: []string{"tokenizer.json", "model.safetensors"}}, false, []string{"lacks config.json (2 objects there)"}},
	} {
		p := gcp.ModelInBucket(c.l, "g/m", "us-central1")
		text := p.Message + " " + p.Fix
		if p.OK != c.ok {
			t.Errorf("%s: ok %v: %s", c.name, p.OK, text)
		}
		for _, w := range c.want {
			if !strings.Contains(text, w) {
				t.Errorf("%s: %q lacks %q", c.name, text, w)
			}
		}
	}
}

// A write Cloud Storage applied but whose answer was lost (503) is still
// this caller's change: the read that follows finds the member and
// SetMember says it changed the policy, so the grant is recorded as made.
func TestBucketPolicyLostAnswer(t *testing.T) {
	g, svc := storageFake(t)
	g.Storage.PutBucket("my-proj", "b")
	g.Storage.LostAnswers.Store(1)
	changed, stats, err := gcp.SetMember(context.Background(), gcp.BucketPolicy(svc, "b"), gcp.RoleObjectViewer, "user:alice@example.com", true, gcp.DefaultBackoff)
	if err != nil || !changed || stats.Writes != 1 || stats.Reads != 2 {
		t.Fatalf("changed %v, %v, %v", changed, stats, err)
	}
}

func TestRegion(t *testing.T) {
	for in, want := range map[string]string{"us-central1": "us-central1", "us-central1-a": "us-central1", "europe-west4-b": "europe-west4", "": ""} {
		if got := gcp.Region(in); got != want {
			t.Errorf("Region(%q) = %q, want %q", in, got, want)
		}
	}
}
