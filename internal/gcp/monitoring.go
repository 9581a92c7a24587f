package gcp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	monitoring "cloud.google.com/go/monitoring/apiv3/v2"
	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// AdapterWindow is how far back the Custom Metrics Stackdriver Adapter
// looks for a gauge's newest sample (ALIGN_NEXT_OLDER over 5 minutes,
// fixed in its code).
const AdapterWindow = 5 * time.Minute

// SeriesQuery names the pods' series of one Managed Prometheus gauge, as
// the adapter queries them.
type SeriesQuery struct {
	Project, Location, Cluster, Namespace string
	Gauge                                 string // e.g. vllm:num_requests_running
	Pods                                  []string
}

// MetricType is the Cloud Monitoring type Managed Prometheus stores a
// gauge as.
func MetricType(gauge string) string { return "prometheus.googleapis.com/" + gauge + "/gauge" }

// Filter is the adapter's filter for q (its clauses sorted, joined by
// AND, as the adapter builds it).
func (q SeriesQuery) Filter() string {
	quoted := make([]string, len(q.Pods))
	for i, p := range q.Pods {
		quoted[i] = fmt.Sprintf("%q", p)
	}
	pods := fmt.Sprintf("metric.labels.pod = one_of(%s)", strings.Join(quoted, ","))
	if len(q.Pods) == 1 {
		pods = "metric.labels.pod = " + quoted[0]
	}
	return strings.Join([]string{
		pods,
		fmt.Sprintf("metric.type = %q", MetricType(q.Gauge)),
		fmt.Sprintf("resource.labels.cluster = %q", q.Cluster),
		fmt.Sprintf("resource.labels.location = %q", q.Location),
		fmt.Sprintf("resource.labels.namespace = %q", q.Namespace),
		fmt.Sprintf("resource.labels.project_id = %q", q.Project),
		`resource.type = "prometheus_target"`,
	}, " AND ")
}

// ErrNoSuchMetric is Cloud Monitoring not knowing the gauge (or its pod
// label) at all yet: no sample of it has been ingested.
var ErrNoSuchMetric = errors.New("Cloud Monitoring holds no sample of the metric yet")

// Samples reads, with the caller's credentials, the newest sample of q's
// gauge for each of q's pods within the adapter's window: what the
// adapter would find if it could read Cloud Monitoring. Pods without a
// sample are absent from the map; ErrNoSuchMetric when the metric type
// is unknown.
func (c *Clients) Samples(ctx context.Context, q SeriesQuery) (map[string]float64, error) {
	if c.Monitoring == nil {
		return nil, errors.New("no Cloud Monitoring client")
	}
	now := time.Now()
	req := &monitoringpb.ListTimeSeriesRequest{
		Name:     "projects/" + q.Project,
		Filter:   q.Filter(),
		Interval: &monitoringpb.TimeInterval{StartTime: timestamppb.New(now.Add(-AdapterWindow)), EndTime: timestamppb.New(now)},
		Aggregation: &monitoringpb.Aggregation{
			AlignmentPeriod:  durationpb.New(AdapterWindow),
			PerSeriesAligner: monitoringpb.Aggregation_ALIGN_NEXT_OLDER,
		},
	}
	out := map[string]float64{}
	// At most maxPodsPerQuery pods a query, as the adapter queries them.
	for pods := range slices.Chunk(q.Pods, maxPodsPerQuery) {
		part := q
		part.Pods = pods
		req.Filter = part.Filter()
		got, err := c.samples(ctx, req)
		if err != nil {
			return nil, err
		}
		maps.Copy(out, got)
	}
	return out, nil
}

// maxPodsPerQuery is how many pods one query names (Cloud Monitoring's
// one_of takes at most 100 values).
const maxPodsPerQuery = 100

// samples runs one query, retried whole.
func (c *Clients) samples(ctx context.Context, req *monitoringpb.ListTimeSeriesRequest) (map[string]float64, error) {
	out := map[string]float64{}
	_, err := Retry(ctx, DefaultBackoff, func(ctx context.Context) error {
		clear(out)
		it := c.Monitoring.ListTimeSeries(ctx, req)
		for {
			ts, err := it.Next()
			if err == iterator.Done {
				return nil
			}
			if err != nil {
				return err
			}
			if len(ts.GetPoints()) == 0 {
				continue
			}
			// Several series of one pod (vLLM's model_name and engine
			// labels) add up, as the adapter adds them.
			v := ts.GetPoints()[0].GetValue()
			out[ts.GetMetric().GetLabels()["pod"]] += v.GetDoubleValue() + float64(v.GetInt64Value())
		}
	})
	if d, ok := DetailsOf(err); ok && d.Code == codes.NotFound {
		return nil, ErrNoSuchMetric
	}
	if err != nil {
		return nil, Classify(err, "read the samples in Cloud Monitoring ("+req.Filter+")")
	}
	return out, nil
}

// newMonitoringClient opens the Cloud Monitoring client at endpoint.
func (c *Clients) newMonitoringClient(ctx context.Context, endpoint string) (*monitoring.MetricClient, error) {
	return monitoring.NewMetricClient(ctx, c.grpcOptions(endpoint)...)
}
