package gcp

import (
	"context"
	"fmt"
	"strings"
	"sync"

	admin "cloud.google.com/go/iam/admin/apiv1"
	monitoring "cloud.google.com/go/monitoring/apiv3/v2"
	resourcemanager "cloud.google.com/go/resourcemanager/apiv3"
	"golang.org/x/oauth2"
	container "google.golang.org/api/container/v1"
	"google.golang.org/api/option"
	storage "google.golang.org/api/storage/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Endpoints override where each API is reached. "" is Google's endpoint; a
// value starting with http:// is a plaintext local fake (tests, the local
// emulator), reached without credentials over gRPC.
type Endpoints struct {
	IAM, ResourceManager, Container, ServiceUsage, Monitoring, Storage string
}

// Clients are the Google API clients the identity step and the
// preconditions use.
type Clients struct {
	IAM      *admin.IamClient
	Projects *resourcemanager.ProjectsClient
	// Monitoring reads the samples behind the adapter's metric.
	Monitoring *monitoring.MetricClient
	opts       Options
	ts         oauth2.TokenSource
	// openStorage opens the Cloud Storage client once, on first use.
	openStorage func(ctx context.Context) (*storage.Service, error)
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
	if o.TokenSource != nil || !plaintext(e.Container) || (withIAM && (!plaintext(e.IAM) || !plaintext(e.ResourceManager) || !plaintext(e.ServiceUsage) || !plaintext(e.Monitoring))) {
		ts, err := TokenSource(ctx, o)
		if err != nil {
			return nil, err
		}
		c.ts = ts
	}
	withTokens := c.opts
	withTokens.TokenSource = c.ts
	c.openStorage = OpenStorage(withTokens, e.Storage)
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
	if c.Monitoring, err = c.newMonitoringClient(ctx, e.Monitoring); err != nil {
		return nil, fmt.Errorf("open the Cloud Monitoring client: %w", err)
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

// Storage is the Cloud Storage JSON API client (the model bucket and its
// policy), opened on first use: only a run with workload.model-source
// calls it, so only such a run looks up credentials for it.
func (c *Clients) Storage(ctx context.Context) (*storage.Service, error) {
	return c.openStorage(ctx)
}

// OpenStorage opens the Cloud Storage client alone, once, on first use:
// a local fake's endpoint without credentials, else with o's (ADC,
// impersonated if asked).
func OpenStorage(o Options, endpoint string) func(ctx context.Context) (*storage.Service, error) {
	var once sync.Once
	var svc *storage.Service
	var err error
	return func(ctx context.Context) (*storage.Service, error) {
		once.Do(func() { svc, err = openStorage(ctx, o, o.TokenSource, endpoint) })
		return svc, err
	}
}

func openStorage(ctx context.Context, o Options, ts oauth2.TokenSource, endpoint string) (*storage.Service, error) {
	if plaintext(endpoint) {
		ts = nil
	} else if ts == nil {
		var err error
		if ts, err = TokenSource(ctx, o); err != nil {
			return nil, err
		}
	}
	svc, err := storage.NewService(ctx, restOptions(endpoint, ts)...)
	if err != nil {
		return nil, fmt.Errorf("open the Cloud Storage client: %w", err)
	}
	return svc, nil
}

// Close closes the clients.
func (c *Clients) Close() {
	if c.IAM != nil {
		c.IAM.Close()
	}
	if c.Projects != nil {
		c.Projects.Close()
	}
	if c.Monitoring != nil {
		c.Monitoring.Close()
	}
}

// Cluster reads a GKE cluster through the container API.
func (c *Clients) Cluster(ctx context.Context, project, location, name string) (*container.Cluster, error) {
	return GetCluster(ctx, c.opts.ContainerEndpoint, c.ts, project, location, name)
}
