package gcp_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"cloud.google.com/go/iam/apiv1/iampb"
	resourcemanager "cloud.google.com/go/resourcemanager/apiv3"
	"google.golang.org/api/option"
	"google.golang.org/genproto/googleapis/type/expr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/gcpfake"
)

func projectsClient(t *testing.T, g *gcpfake.GCP) *resourcemanager.ProjectsClient {
	c, err := resourcemanager.NewProjectsClient(context.Background(),
		option.WithEndpoint(g.ResourceManagerEndpoint[len("http://"):]), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSetMemberKeepsEverythingElse(t *testing.T) {
	g, err := gcpfake.Start(gcpfake.Project{ID: "p-1", Number: "1"})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	cond := &iampb.Binding{Role: "roles/viewer", Members: []string{"user:a@example.com"}, Condition: &expr.Expr{Title: "t", Expression: "request.time < timestamp('2030-01-01T00:00:00Z')"}}
	g.Projects.SetPolicy("p-1", &iampb.Policy{Version: 3, Bindings: []*iampb.Binding{
		{Role: "roles/monitoring.viewer", Members: []string{"user:b@example.com"}}, cond,
	}})
	// IAM refuses a member that is not an existing account.
	g.IAM.PutAccount("p-1", "x", "x", "")
	p := gcp.ProjectPolicy(projectsClient(t, g), "p-1")
	ctx := context.Background()

	changed, stats, err := gcp.SetMember(ctx, p, "roles/monitoring.viewer", "serviceAccount:x@p-1.iam.gserviceaccount.com", true, gcp.DefaultBackoff)
	if err != nil || !changed || stats.Writes != 1 {
		t.Fatalf("add: changed=%v stats=%+v err=%v", changed, stats, err)
	}
	got := g.Projects.Policy("p-1")
	if !gcpfake.HasMember(got, "roles/monitoring.viewer", "user:b@example.com") || !gcpfake.HasMember(got, "roles/monitoring.viewer", "serviceAccount:x@p-1.iam.gserviceaccount.com") {
		t.Errorf("members after add: %v", got.Bindings)
	}
	if !proto.Equal(got.Bindings[1], cond) {
		t.Errorf("conditional binding changed: %v", got.Bindings[1])
	}

	// Idempotent: no write when already as asked.
	changed, stats, _ = gcp.SetMember(ctx, p, "roles/monitoring.viewer", "serviceAccount:x@p-1.iam.gserviceaccount.com", true, gcp.DefaultBackoff)
	if changed || stats.Writes != 0 {
		t.Errorf("second add wrote: %+v", stats)
	}

	// Remove ours only.
	if _, _, err := gcp.SetMember(ctx, p, "roles/monitoring.viewer", "serviceAccount:x@p-1.iam.gserviceaccount.com", false, gcp.DefaultBackoff); err != nil {
		t.Fatal(err)
	}
	got = g.Projects.Policy("p-1")
	if gcpfake.HasMember(got, "roles/monitoring.viewer", "serviceAccount:x@p-1.iam.gserviceaccount.com") || !gcpfake.HasMember(got, "roles/monitoring.viewer", "user:b@example.com") || !proto.Equal(got.Bindings[1], cond) {
		t.Errorf("after remove: %v", got.Bindings)
	}
}

func TestSetMemberRetriesTransientAndStale(t *testing.T) {
	g, err := gcpfake.Start(gcpfake.Project{ID: "p-1", Number: "1"})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	sets := 0
	g.Projects.Faults = func(method string) error {
		if method != "SetIamPolicy" {
			return nil
		}
		sets++
		switch sets {
		case 1:
			return status.Error(codes.Aborted, "stale etag")
		case 2:
			return status.Error(codes.Unavailable, "try again")
		}
		return nil
	}
	changed, stats, err := gcp.SetMember(context.Background(), gcp.ProjectPolicy(projectsClient(t, g), "p-1"), "roles/monitoring.viewer", "user:c@example.com", true, gcp.DefaultBackoff)
	if err != nil || !changed {
		t.Fatalf("changed=%v err=%v stats=%+v", changed, err, stats)
	}
	if stats.Retries != 2 || stats.Writes != 3 {
		t.Errorf("want 2 retries of 3 writes: %+v", stats)
	}
	// PERMISSION_DENIED is not retried.
	g.Projects.Faults = func(string) error { return status.Error(codes.PermissionDenied, "no") }
	_, stats, err = gcp.SetMember(context.Background(), gcp.ProjectPolicy(projectsClient(t, g), "p-1"), "roles/monitoring.viewer", "user:d@example.com", true, gcp.DefaultBackoff)
	if status.Code(err) != codes.PermissionDenied || stats.Retries != 0 {
		t.Errorf("denied: err=%v stats=%+v", err, stats)
	}
}

// Google counts every occurrence of a principal toward a policy's 1,500
// (and groups toward 250): a write that would pass either is refused
// before it is made (exit 5), and a removal from a full policy still
// goes through.
func TestPolicyFullRefusedBeforeWrite(t *testing.T) {
	g, err := gcpfake.Start(gcpfake.Project{ID: "p-1", Number: "1"})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()
	var members []string
	for i := 0; i < 750; i++ {
		members = append(members, fmt.Sprintf("user:u%d@example.com", i))
	}
	// 750 members in two roles: 1,500 principals as Google counts them.
	g.Projects.SetPolicy("p-1", &iampb.Policy{Version: 3, Bindings: []*iampb.Binding{
		{Role: "roles/viewer", Members: members}, {Role: "roles/browser", Members: members},
	}})
	p := gcp.ProjectPolicy(projectsClient(t, g), "p-1")
	writes := g.Projects.Counters.Mutations.Load()
	_, _, err = gcp.SetMember(context.Background(), p, "roles/monitoring.viewer", "user:u1@example.com", true, gcp.DefaultBackoff)
	var full *gcp.PolicyFullError
	if !errors.As(err, &full) || full.Principals != 1501 || exitcode.Of(err) != exitcode.Precondition {
		t.Fatalf("err %v (exit %d), want the policy full at 1501", err, exitcode.Of(err))
	}
	if g.Projects.Counters.Mutations.Load() != writes {
		t.Error("the refused change was written")
	}
	if _, _, err := gcp.SetMember(context.Background(), p, "roles/viewer", "user:u1@example.com", false, gcp.DefaultBackoff); err != nil {
		t.Errorf("removal from a full policy: %v", err)
	}
	// The fake refuses as Google does: every occurrence counted.
	pol := g.Projects.Policy("p-1")
	pol.Bindings = append(pol.Bindings, &iampb.Binding{Role: "roles/editor", Members: []string{"user:a@example.com", "user:b@example.com"}})
	if _, err := g.Projects.SetIamPolicy(context.Background(), &iampb.SetIamPolicyRequest{Resource: "projects/p-1", Policy: pol}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("the fake took 1,501 principals: %v", err)
	}
}
