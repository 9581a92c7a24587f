package gcp_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	container "google.golang.org/api/container/v1"
	"google.golang.org/api/option"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/anypb"

	_ "google.golang.org/genproto/googleapis/rpc/errdetails" // the detail types the corpus names

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/gcpfake"
)

// corpusCase is one Google error document as Google sends it (REST), with
// what vllm-hpa must make of it.
type corpusCase struct {
	Name, Source string
	Exit         int
	Retryable    bool
	RetryDelay   string
	RESTOnly     bool
	Contains     []string
	Body         json.RawMessage
}

func loadCorpus(t *testing.T) []corpusCase {
	t.Helper()
	b, err := os.ReadFile("testdata/google-errors.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []corpusCase
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	return cases
}

// restError is the error the real REST client (container/v1) returns for
// a server answering body.
func restError(t *testing.T, body json.RawMessage) error {
	t.Helper()
	var head struct {
		Error struct {
			Code int `json:"code"`
		} `json:"error"`
	}
	json.Unmarshal(body, &head)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		w.WriteHeader(head.Error.Code)
		w.Write(body)
	}))
	defer srv.Close()
	svc, err := container.NewService(context.Background(), option.WithEndpoint(srv.URL+"/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	_, err = svc.Projects.Locations.Clusters.Get("projects/my-proj/locations/us-central1/clusters/c").Do()
	if err == nil {
		t.Fatal("no error")
	}
	return err
}

// grpcError is the same document as a gRPC status with its details.
func grpcError(t *testing.T, body json.RawMessage) error {
	t.Helper()
	var doc struct {
		Error struct {
			Message string            `json:"message"`
			Status  string            `json:"status"`
			Details []json.RawMessage `json:"details"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	code := codes.Unknown
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if strings.ReplaceAll(strings.ToUpper(c.String()), "_", "") == strings.ReplaceAll(doc.Error.Status, "_", "") {
			code = c
		}
	}
	st := status.New(code, doc.Error.Message)
	for _, d := range doc.Error.Details {
		var a anypb.Any
		if err := protojson.Unmarshal(d, &a); err != nil {
			t.Fatalf("detail %s: %v", d, err)
		}
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		if st, err = st.WithDetails(protoadapt.MessageV1Of(m)); err != nil {
			t.Fatal(err)
		}
	}
	return st.Err()
}

// Every document of the corpus, as the REST client receives it and as a
// gRPC status, gets its exit code, its message and its retry verdict
// from what Google says of it, never from the message text.
func TestGoogleErrorCorpus(t *testing.T) {
	for _, c := range loadCorpus(t) {
		forms := map[string]error{"rest": restError(t, c.Body)}
		if !c.RESTOnly {
			forms["grpc"] = grpcError(t, c.Body)
		}
		for form, err := range forms {
			t.Run(c.Name+"/"+form, func(t *testing.T) {
				got := gcp.Classify(err, "call")
				if exitcode.Of(got) != c.Exit {
					t.Errorf("exit %d, want %d: %v", exitcode.Of(got), c.Exit, got)
				}
				for _, want := range c.Contains {
					if !strings.Contains(got.Error(), want) {
						t.Errorf("message %q lacks %q", got, want)
					}
				}
				if r := gcp.Retryable(err); r != c.Retryable {
					t.Errorf("retryable %v, want %v", r, c.Retryable)
				}
				if c.RetryDelay != "" {
					d, _ := gcp.DetailsOf(err)
					if want, _ := time.ParseDuration(c.RetryDelay); d.RetryDelay != want {
						t.Errorf("retry delay %s, want %s", d.RetryDelay, want)
					}
				}
			})
		}
	}
}

// The fakes send what Google sends: each of their errors classifies as the
// corpus document of the same cause does.
func TestFakeErrorsClassifyAsGoogles(t *testing.T) {
	cases := []struct {
		name string
		err  *gcpfake.GoogleError
		exit int
		want string
	}{
		{"service disabled", gcpfake.ServiceDisabled("iam.googleapis.com", "123456789012"), exitcode.Precondition, "gcloud services enable iam.googleapis.com --project 123456789012"},
		{"permission", gcpfake.PermissionDenied("iam.googleapis.com", "iam.serviceAccounts.create", "projects/my-proj"), exitcode.Denied, "roles/iam.serviceAccountAdmin"},
		{"org policy", gcpfake.OrgPolicyViolation("iam.disableServiceAccountCreation", "projects/my-proj/serviceAccounts/?configvalue=", "Service account creation is not allowed on this project."), exitcode.Precondition, "--identity-mode direct"},
		{"perimeter", gcpfake.PerimeterViolation("iam.googleapis.com", "uid-1", "123456789012"), exitcode.Precondition, "vpcServiceControlsUniqueIdentifier: uid-1"},
		{"rate limit", gcpfake.RateLimited("iam.googleapis.com", "123456789012", time.Second), exitcode.Failure, "quota exceeded"},
	}
	for _, c := range cases {
		for form, err := range map[string]error{"grpc": c.err.GRPC(), "rest": restError(t, c.err.RESTBody())} {
			got := gcp.Classify(err, "call")
			if exitcode.Of(got) != c.exit || !strings.Contains(got.Error(), c.want) {
				t.Errorf("%s/%s: exit %d %q, want %d with %q", c.name, form, exitcode.Of(got), got, c.exit, c.want)
			}
		}
	}
}

// Retry honours the delay Google asks for, says why it waits, and stops
// when its budget is spent.
func TestRetryHonoursRetryInfo(t *testing.T) {
	limited := gcpfake.RateLimited("iam.googleapis.com", "1", 300*time.Millisecond).GRPC()
	var said []string
	ctx := gcp.WithNotice(context.Background(), func(msg string) { said = append(said, msg) })
	calls := 0
	start := time.Now()
	_, err := gcp.Retry(ctx, gcp.Backoff{Initial: time.Millisecond, Max: time.Millisecond, Attempts: 10, Budget: time.Minute}, func(context.Context) error {
		if calls++; calls < 3 {
			return limited
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("err %v after %d calls", err, calls)
	}
	if waited := time.Since(start); waited < 600*time.Millisecond {
		t.Errorf("waited %s, less than the 2 x 300ms Google asked for", waited)
	}
	if len(said) != 2 || !strings.Contains(said[0], "Google answered ResourceExhausted RATE_LIMIT_EXCEEDED (iam.googleapis.com/default_requests): retrying in 300ms") {
		t.Errorf("progress %q", said)
	}
	// A budget smaller than the delay asked for: no wait at all.
	calls = 0
	_, err = gcp.Retry(context.Background(), gcp.Backoff{Initial: time.Millisecond, Max: time.Millisecond, Attempts: 10, Budget: 100 * time.Millisecond}, func(context.Context) error {
		calls++
		return limited
	})
	if calls != 1 || status.Code(err) != codes.ResourceExhausted {
		t.Errorf("%d calls, err %v", calls, err)
	}
}
