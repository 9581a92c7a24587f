package gcpfake

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	metricpb "google.golang.org/genproto/googleapis/api/metric"
	"google.golang.org/genproto/googleapis/api/monitoredres"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Monitoring fakes Cloud Monitoring's MetricService for what Managed
// Service for Prometheus writes: gauges of monitored resource
// prometheus_target (resource labels project_id, location, cluster,
// namespace, job, instance; the rest, pod among them, metric labels). A
// sample is queryable Behaviour.IngestionDelay after it is written; a
// metric type has a descriptor once one of its samples is queryable.
// ListTimeSeries reads the filter language's equality and one_of clauses
// joined by AND, as the Stackdriver adapter and vllm-hpa write them, and
// refuses what it cannot read (INVALID_ARGUMENT), as Google refuses a
// malformed filter.
type Monitoring struct {
	monitoringpb.UnimplementedMetricServiceServer
	Counters Counters
	// Denied, if set, refuses the caller the methods (e.g.
	// "ListTimeSeries") it returns true for on a project.
	Denied func(method, project string) bool

	g      *GCP
	mu     sync.Mutex
	series map[string]*series // by project, type and labels
}

type series struct {
	project, metricType string
	resource, metric    map[string]string
	points              []timedPoint // oldest first
}

type timedPoint struct {
	at    time.Time
	value float64
}

func newMonitoring(g *GCP) *Monitoring { return &Monitoring{g: g, series: map[string]*series{}} }

// Sample is one point of one series, as a query sees it.
type Sample struct {
	Resource, Metric map[string]string
	At               time.Time
	Value            float64
}

func seriesKey(project, metricType string, resource, metric map[string]string) string {
	var parts []string
	for k, v := range resource {
		parts = append(parts, "r."+k+"="+v)
	}
	for k, v := range metric {
		parts = append(parts, "m."+k+"="+v)
	}
	sort.Strings(parts)
	return project + "|" + metricType + "|" + strings.Join(parts, ",")
}

// Write records one sample, as Managed Service for Prometheus's collector
// writes it at scrape time; it is queryable IngestionDelay later.
func (m *Monitoring) Write(project, metricType string, resource, metric map[string]string, value float64, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := seriesKey(project, metricType, resource, metric)
	s := m.series[key]
	if s == nil {
		s = &series{project: project, metricType: metricType, resource: resource, metric: metric}
		m.series[key] = s
	}
	s.points = append(s.points, timedPoint{at: at, value: value})
	// Keep an hour: nothing reads further back.
	for len(s.points) > 1 && at.Sub(s.points[0].at) > time.Hour {
		s.points = s.points[1:]
	}
}

// queryable is the newest time a sample may have been written to be read
// now.
func (m *Monitoring) queryable(now time.Time) time.Time {
	return now.Add(-m.g.current().IngestionDelay)
}

// Known reports whether metricType has a descriptor in project: whether
// any of its samples is queryable.
func (m *Monitoring) Known(project, metricType string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	limit := m.queryable(time.Now())
	for _, s := range m.series {
		if s.project == project && s.metricType == metricType && len(s.points) > 0 && !s.points[0].at.After(limit) {
			return true
		}
	}
	return false
}

// Latest is, for each series of metricType in project whose labels f
// accepts, its newest queryable sample within window of now: what a query
// aligned ALIGN_NEXT_OLDER over window returns.
func (m *Monitoring) Latest(project, metricType string, f Filter, window time.Duration) []Sample {
	now := time.Now()
	return m.query(project, metricType, f, now.Add(-window), now, true)
}

func (m *Monitoring) query(project, metricType string, f Filter, start, end time.Time, newestOnly bool) []Sample {
	m.mu.Lock()
	defer m.mu.Unlock()
	limit := m.queryable(time.Now())
	var out []Sample
	for _, s := range m.series {
		if s.project != project || s.metricType != metricType || !f.accepts(s) {
			continue
		}
		for i := len(s.points) - 1; i >= 0; i-- {
			p := s.points[i]
			if p.at.After(limit) || p.at.After(end) {
				continue
			}
			if p.at.Before(start) {
				break
			}
			out = append(out, Sample{Resource: s.resource, Metric: s.metric, At: p.at, Value: p.value})
			if newestOnly {
				break
			}
		}
	}
	return out
}

// Filter is a parsed Cloud Monitoring filter: clauses joined by AND.
type Filter []Clause

// Clause is `key = "value"` or `key = one_of("a", "b")`.
type Clause struct {
	Key    string
	Values []string
}

// maxOneOf is how many values a one_of may list (the Stackdriver adapter
// queries at most 100 pods at once for the same reason).
const maxOneOf = 100

// ParseFilter reads the part of the filter language the stack's queries
// use.
func ParseFilter(s string) (Filter, error) {
	var f Filter
	for _, part := range strings.Split(s, " AND ") {
		key, value, ok := strings.Cut(strings.TrimSpace(part), "=")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if !ok || key == "" || !(key == "metric.type" || key == "resource.type" || strings.HasPrefix(key, "resource.labels.") || strings.HasPrefix(key, "metric.labels.")) {
			return nil, fmt.Errorf("the filter clause %q is not of the form key = \"value\"", part)
		}
		var values []string
		if inner, ok := strings.CutPrefix(value, "one_of("); ok && strings.HasSuffix(inner, ")") {
			if n := len(splitQuoted(strings.TrimSuffix(inner, ")"))); n > maxOneOf {
				return nil, fmt.Errorf("one_of takes at most %d values, the filter gives %d", maxOneOf, n)
			}
			for _, v := range splitQuoted(strings.TrimSuffix(inner, ")")) {
				u, err := strconv.Unquote(strings.TrimSpace(v))
				if err != nil {
					return nil, fmt.Errorf("the filter clause %q has an unquoted value", part)
				}
				values = append(values, u)
			}
		} else {
			u, err := strconv.Unquote(value)
			if err != nil {
				return nil, fmt.Errorf("the filter clause %q has an unquoted value", part)
			}
			values = []string{u}
		}
		f = append(f, Clause{Key: key, Values: values})
	}
	return f, nil
}

// splitQuoted splits a list of quoted strings on the commas between them.
func splitQuoted(s string) []string {
	var out []string
	var cur strings.Builder
	quoted, escaped := false, false
	for _, r := range s {
		switch {
		case escaped:
			escaped = false
		case r == '\\':
			escaped = true
		case r == '"':
			quoted = !quoted
		case r == ',' && !quoted:
			out = append(out, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteRune(r)
	}
	return append(out, cur.String())
}

// value is the filter's single value of key ("" when absent).
func (f Filter) value(key string) string {
	for _, c := range f {
		if c.Key == key && len(c.Values) == 1 {
			return c.Values[0]
		}
	}
	return ""
}

func (f Filter) accepts(s *series) bool {
	for _, c := range f {
		var have string
		switch {
		case c.Key == "metric.type":
			have = s.metricType
		case c.Key == "resource.type":
			have = "prometheus_target"
		case strings.HasPrefix(c.Key, "resource.labels."):
			have = s.resource[strings.TrimPrefix(c.Key, "resource.labels.")]
		default:
			have = s.metric[strings.TrimPrefix(c.Key, "metric.labels.")]
		}
		match := false
		for _, v := range c.Values {
			match = match || v == have
		}
		if !match {
			return false
		}
	}
	return true
}

// labelKnown reports whether some series of metricType in project carries
// the label a filter key names.
func (m *Monitoring) labelKnown(project, metricType, key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.series {
		if s.project != project || s.metricType != metricType {
			continue
		}
		var ok bool
		switch {
		case strings.HasPrefix(key, "resource.labels."):
			_, ok = s.resource[strings.TrimPrefix(key, "resource.labels.")]
		case strings.HasPrefix(key, "metric.labels."):
			_, ok = s.metric[strings.TrimPrefix(key, "metric.labels.")]
		default:
			ok = true
		}
		if ok {
			return true
		}
	}
	return false
}

func (m *Monitoring) check(method, name string) (string, error) {
	project := projectOf(name)
	if e := m.g.gate("monitoring.googleapis.com", project); e != nil {
		return "", e.GRPC()
	}
	p, ok := m.g.Projects.byIDOrNumber(project)
	if !ok || m.Denied != nil && m.Denied(method, p.ID) {
		perm := map[string]string{"ListTimeSeries": "monitoring.timeSeries.list", "GetMetricDescriptor": "monitoring.metricDescriptors.get"}[method]
		return "", PermissionDenied("monitoring.googleapis.com", perm, name).GRPC()
	}
	return p.ID, nil
}

// notFound is what Cloud Monitoring answers a query of a metric (or a
// label) it does not know yet.
func notFound(f Filter, label string) error {
	what := fmt.Sprintf("type = %q", f.value("metric.type"))
	if label != "" {
		what += " label = " + label
	}
	return Plain(codes.NotFound, "Cannot find metric(s) that match %s. If a metric was created recently, it could take up to 10 minutes to become available. Please try again soon.", what).GRPC()
}

func (m *Monitoring) ListTimeSeries(ctx context.Context, req *monitoringpb.ListTimeSeriesRequest) (*monitoringpb.ListTimeSeriesResponse, error) {
	m.Counters.Reads.Add(1)
	project, err := m.check("ListTimeSeries", req.GetName())
	if err != nil {
		return nil, err
	}
	f, perr := ParseFilter(req.GetFilter())
	if perr != nil {
		return nil, Plain(codes.InvalidArgument, "Field filter had an invalid value of %q: %v.", req.GetFilter(), perr).GRPC()
	}
	metricType := f.value("metric.type")
	if metricType == "" {
		return nil, Plain(codes.InvalidArgument, "Field filter had an invalid value of %q: a filter must specify a metric type.", req.GetFilter()).GRPC()
	}
	if req.GetInterval().GetEndTime() == nil {
		return nil, Plain(codes.InvalidArgument, "Field interval.end_time had an invalid value: it is required.").GRPC()
	}
	if !m.Known(project, metricType) {
		return nil, notFound(f, "")
	}
	for _, c := range f {
		if strings.Contains(c.Key, ".labels.") && !m.labelKnown(project, metricType, c.Key) {
			return nil, notFound(f, strings.TrimPrefix(strings.TrimPrefix(c.Key, "metric.labels."), "resource.labels."))
		}
	}
	end := req.GetInterval().GetEndTime().AsTime()
	start := end
	if st := req.GetInterval().GetStartTime(); st != nil {
		start = st.AsTime()
	}
	aligned := req.GetAggregation().GetPerSeriesAligner() == monitoringpb.Aggregation_ALIGN_NEXT_OLDER
	if aligned {
		if p := req.GetAggregation().GetAlignmentPeriod(); p != nil {
			start = end.Add(-p.AsDuration())
		}
	}
	bySeries := map[string]*monitoringpb.TimeSeries{}
	var order []string
	for _, s := range m.query(project, metricType, f, start, end, aligned) {
		key := seriesKey(project, metricType, s.Resource, s.Metric)
		ts := bySeries[key]
		if ts == nil {
			ts = &monitoringpb.TimeSeries{
				Metric:     &metricpb.Metric{Type: metricType, Labels: s.Metric},
				Resource:   &monitoredres.MonitoredResource{Type: "prometheus_target", Labels: s.Resource},
				MetricKind: metricpb.MetricDescriptor_GAUGE, ValueType: metricpb.MetricDescriptor_DOUBLE,
			}
			bySeries[key] = ts
			order = append(order, key)
		}
		if req.GetView() == monitoringpb.ListTimeSeriesRequest_FULL {
			ts.Points = append(ts.Points, &monitoringpb.Point{
				Interval: &monitoringpb.TimeInterval{EndTime: timestamppb.New(s.At)},
				Value:    &monitoringpb.TypedValue{Value: &monitoringpb.TypedValue_DoubleValue{DoubleValue: s.Value}},
			})
		}
	}
	sort.Strings(order)
	resp := &monitoringpb.ListTimeSeriesResponse{}
	for _, k := range order {
		resp.TimeSeries = append(resp.TimeSeries, bySeries[k])
	}
	return resp, nil
}

func (m *Monitoring) GetMetricDescriptor(ctx context.Context, req *monitoringpb.GetMetricDescriptorRequest) (*metricpb.MetricDescriptor, error) {
	m.Counters.Reads.Add(1)
	project, err := m.check("GetMetricDescriptor", req.GetName())
	if err != nil {
		return nil, err
	}
	_, metricType, _ := strings.Cut(req.GetName(), "/metricDescriptors/")
	if !m.Known(project, metricType) {
		return nil, Plain(codes.NotFound, "Could not find descriptor for metric '%s'.", metricType).GRPC()
	}
	return &metricpb.MetricDescriptor{Name: req.GetName(), Type: metricType, MetricKind: metricpb.MetricDescriptor_GAUGE, ValueType: metricpb.MetricDescriptor_DOUBLE}, nil
}
