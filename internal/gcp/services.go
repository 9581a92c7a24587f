package gcp

import (
	"context"
	"fmt"

	"cloud.google.com/go/resourcemanager/apiv3/resourcemanagerpb"

	"google.golang.org/api/serviceusage/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
)

// MonitoringAPI is the service the adapter reads metrics from.
const MonitoringAPI = "monitoring.googleapis.com"

// ServiceEnabled reads, through the Service Usage API, whether service is
// enabled on project.
func (c *Clients) ServiceEnabled(ctx context.Context, project, service string) (bool, error) {
	svc, err := serviceusage.NewService(ctx, restOptions(c.opts.ServiceUsageEndpoint, c.ts)...)
	if err != nil {
		return false, err
	}
	name := "projects/" + project + "/services/" + service
	var s *serviceusage.GoogleApiServiceusageV1Service
	_, err = Retry(ctx, DefaultBackoff, func(ctx context.Context) (err error) {
		s, err = svc.Services.Get(name).Context(ctx).Do()
		return err
	})
	if err != nil {
		return false, Classify(err, "read whether "+service+" is enabled on project "+project)
	}
	return s.State == "ENABLED", nil
}

// CheckMonitoringAPI fails (exit 5, with the gcloud fix) unless the Cloud
// Monitoring API is enabled on project: the adapter reads every metric
// through it.
func (c *Clients) CheckMonitoringAPI(ctx context.Context, project string) error {
	ok, err := c.ServiceEnabled(ctx, project, MonitoringAPI)
	if err != nil {
		return err
	}
	if !ok {
		return exitcode.With(exitcode.Precondition, fmt.Errorf("the Cloud Monitoring API (%s) is not enabled on project %s, so the adapter cannot read the metric; enable it with: gcloud services enable %s --project %s", MonitoringAPI, project, MonitoringAPI, project))
	}
	return nil
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
