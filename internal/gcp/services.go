package gcp

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"cloud.google.com/go/resourcemanager/apiv3/resourcemanagerpb"
	"google.golang.org/api/serviceusage/v1"
)

// The Google APIs vllm-hpa calls, or that the stack needs enabled.
const (
	ServiceIAM             = "iam.googleapis.com"
	ServiceResourceManager = "cloudresourcemanager.googleapis.com"
	ServiceContainer       = "container.googleapis.com"
	ServiceServiceUsage    = "serviceusage.googleapis.com"
	// ServiceMonitoring is the API the adapter reads every metric through
	// (and vllm-hpa reads the samples behind them).
	ServiceMonitoring = "monitoring.googleapis.com"
)

// maxBatchGet is how many services one Service Usage batchGet may name.
const maxBatchGet = 30

// ErrServiceUsageOff is the Service Usage API itself not enabled: which
// APIs are cannot be read.
var ErrServiceUsageOff = errors.New("the Service Usage API is not enabled")

// DisabledServices reads, with one Service Usage batchGet, which of
// services are not enabled on project (ErrServiceUsageOff when Service
// Usage itself is not).
func (c *Clients) DisabledServices(ctx context.Context, project string, services []string) (disabled []string, err error) {
	svc, err := serviceusage.NewService(ctx, restOptions(c.opts.ServiceUsageEndpoint, c.ts)...)
	if err != nil {
		return nil, err
	}
	parent := "projects/" + project
	for batch := range slices.Chunk(services, maxBatchGet) {
		names := make([]string, len(batch))
		for i, s := range batch {
			names[i] = parent + "/services/" + s
		}
		var resp *serviceusage.BatchGetServicesResponse
		_, err = Retry(ctx, DefaultBackoff, func(ctx context.Context) (err error) {
			resp, err = svc.Services.BatchGet(parent).Names(names...).Context(ctx).Do()
			return err
		})
		if d, ok := DetailsOf(err); ok && d.Reason == ReasonServiceDisabled && d.Metadata["service"] == ServiceServiceUsage {
			return nil, ErrServiceUsageOff
		}
		if err != nil {
			return nil, Classify(err, "read which APIs are enabled on project "+project)
		}
		for _, s := range resp.Services {
			if s.State != "ENABLED" {
				name := s.Name[strings.LastIndex(s.Name, "/")+1:]
				if s.Config != nil && s.Config.Name != "" {
					name = s.Config.Name
				}
				disabled = append(disabled, name)
			}
		}
	}
	slices.Sort(disabled)
	return disabled, nil
}

// EnableCommand is the one gcloud line that enables services on project.
func EnableCommand(project string, services []string) string {
	return fmt.Sprintf("gcloud services enable %s --project %s", strings.Join(services, " "), project)
}

// ProjectNumber is the project's number, which Workload Identity
// Federation principals name.
func (c *Clients) ProjectNumber(ctx context.Context, project string) (string, error) {
	p, err := c.Project(ctx, project)
	if err != nil {
		return "", err
	}
	return strings.TrimPrefix(p.Name, "projects/"), nil
}

// Project reads project through Resource Manager. Google answers
// PERMISSION_DENIED alike for a project that does not exist and one the
// caller may not see; Classify's message says to check --project.
func (c *Clients) Project(ctx context.Context, project string) (*resourcemanagerpb.Project, error) {
	var p *resourcemanagerpb.Project
	_, err := Retry(ctx, DefaultBackoff, func(ctx context.Context) (err error) {
		p, err = c.Projects.GetProject(ctx, &resourcemanagerpb.GetProjectRequest{Name: "projects/" + project})
		return err
	})
	if err != nil {
		return nil, Classify(err, "get project "+project)
	}
	return p, nil
}
