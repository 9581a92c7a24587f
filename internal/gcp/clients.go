package gcp

import (
	"context"
	"errors"
	"fmt"
	"strings"

	admin "cloud.google.com/go/iam/admin/apiv1"
	resourcemanager "cloud.google.com/go/resourcemanager/apiv3"
	"golang.org/x/oauth2"
	container "google.golang.org/api/container/v1"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
)

// Endpoints override where each API is reached. "" is Google's endpoint; a
// value starting with http:// is a plaintext local fake (tests, the local
// emulator), reached without credentials over gRPC.
type Endpoints struct {
	IAM, ResourceManager, Container, ServiceUsage string
}

// Clients are the Google API clients the identity step and the
// preconditions use.
type Clients struct {
	IAM      *admin.IamClient
	Projects *resourcemanager.ProjectsClient
	opts     Options
	ts       oauth2.TokenSource
}

// plaintext reports whether endpoint names a local plaintext fake.
func plaintext(endpoint string) bool { return strings.HasPrefix(endpoint, "http://") }

// Dial opens the clients: the container API always, the IAM and Resource
// Manager clients only with withIAM (no connection is opened to an API that
// will not be called). Credentials (ADC, impersonated if asked) are looked
// up only if an API to be called is a real Google endpoint.
func Dial(ctx context.Context, o Options, e Endpoints, withIAM bool) (*Clients, error) {
	c := &Clients{opts: o}
	c.opts.ContainerEndpoint = e.Container
	c.opts.ServiceUsageEndpoint = e.ServiceUsage
	if o.TokenSource != nil || !plaintext(e.Container) || (withIAM && (!plaintext(e.IAM) || !plaintext(e.ResourceManager) || !plaintext(e.ServiceUsage))) {
		ts, err := TokenSource(ctx, o)
		if err != nil {
			return nil, err
		}
		c.ts = ts
	}
	if !withIAM {
		return c, nil
	}
	var err error
	if c.IAM, err = admin.NewIamClient(ctx, c.grpcOptions(e.IAM)...); err != nil {
		return nil, fmt.Errorf("open the IAM client: %w", err)
	}
	if c.Projects, err = resourcemanager.NewProjectsClient(ctx, c.grpcOptions(e.ResourceManager)...); err != nil {
		return nil, fmt.Errorf("open the Resource Manager client: %w", err)
	}
	return c, nil
}

func (c *Clients) grpcOptions(endpoint string) []option.ClientOption {
	if plaintext(endpoint) {
		return []option.ClientOption{
			option.WithEndpoint(strings.TrimPrefix(endpoint, "http://")),
			option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		}
	}
	return ClientOptions(endpoint, c.ts)
}

// Close closes the clients.
func (c *Clients) Close() {
	if c.IAM != nil {
		c.IAM.Close()
	}
	if c.Projects != nil {
		c.Projects.Close()
	}
}

// Classify gives a Google API error its exit code and a plain message:
// PERMISSION_DENIED exits 6, NOT_FOUND of what must exist 5.
func Classify(err error, what string) error {
	if err == nil {
		return nil
	}
	if exitcode.Of(err) != exitcode.Failure {
		// Already classified (e.g. a wait for IAM that ran out).
		return fmt.Errorf("%s: %w", what, err)
	}
	code := status.Code(err)
	var gerr *googleapi.Error
	if errors.As(err, &gerr) {
		switch gerr.Code {
		case 403:
			code = codes.PermissionDenied
		case 404:
			code = codes.NotFound
		}
	}
	msg := message(err)
	switch {
	case code == codes.InvalidArgument && strings.Contains(msg, "Identity Pool does not exist"):
		pool := "PROJECT.svc.id.goog"
		if _, rest, ok := strings.Cut(msg, "Identity Pool does not exist ("); ok {
			pool, _, _ = strings.Cut(rest, ")")
		}
		return exitcode.With(exitcode.Precondition, fmt.Errorf("%s: the Workload Identity pool %s does not exist: it is created when a GKE cluster of the project enables Workload Identity: gcloud container clusters update CLUSTER --location LOCATION --workload-pool=%s", what, pool, pool))
	case code == codes.InvalidArgument && strings.Contains(msg, "larger than the maximum allowed size"):
		return exitcode.With(exitcode.Precondition, fmt.Errorf("%s: the IAM policy is full: %s (remove members that are no longer used, or grant to groups), then re-run", what, msg))
	}
	switch code {
	case codes.PermissionDenied:
		// Google answers so for a project that does not exist too.
		return exitcode.With(exitcode.Denied, fmt.Errorf("%s: permission denied: %s (check that --project names a project that exists, then grant the caller the role that allows it, e.g. roles/iam.serviceAccountAdmin and roles/resourcemanager.projectIamAdmin)", what, message(err)))
	case codes.NotFound:
		return exitcode.With(exitcode.Precondition, fmt.Errorf("%s: not found: %s", what, message(err)))
	}
	return fmt.Errorf("%s: %w", what, err)
}

func message(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Message()
	}
	return err.Error()
}

// Cluster reads a GKE cluster through the container API.
func (c *Clients) Cluster(ctx context.Context, project, location, name string) (*container.Cluster, error) {
	return GetCluster(ctx, c.opts.ContainerEndpoint, c.ts, project, location, name)
}
