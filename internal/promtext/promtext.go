// Package promtext reads Prometheus text-format metrics with
// prometheus/common's parser (never regular expressions).
package promtext

import (
	"fmt"
	"io"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families parses a /metrics body.
func Families(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return fams, nil
}

// Gauge returns the sum of the series of gauge name whose labels include
// all of want, whatever other labels they carry (vLLM adds engine from
// 0.10, one series per engine with data parallelism), and whether there
// is one.
func Gauge(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok || f.GetType() != dto.MetricType_GAUGE {
		return 0, false
	}
	sum, found := 0.0, false
	for _, m := range f.GetMetric() {
		if matches(m, want) {
			sum, found = sum+m.GetGauge().GetValue(), true
		}
	}
	return sum, found
}

func matches(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}
