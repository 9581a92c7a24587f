package verify

import (
	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"strings"
	"testing"
	"time"

	"github.com/vllm-hpa/vllm-hpa/internal/timeline"
)

func at(s float64) timeline.Seconds { return timeline.Seconds(time.Duration(s * float64(time.Second))) }

func samples(points ...[3]float64) []timeline.Sample { // at, metric, ready
	var out []timeline.Sample
	for _, p := range points {
		m := p[1]
		out = append(out, timeline.Sample{At: at(p[0]), Metric: &m, Ready: int32(p[2]), Replicas: int32(p[2]), Desired: int32(p[2])})
	}
	return out
}

// The README's first try: 1 request/s of 1 s answers keeps about 1
// running against a target of 4; 3 replicas need more than 8 in all.
func TestTooLight(t *testing.T) {
	settle := 2 * time.Minute
	flat := samples([3]float64{20, 0.9, 1}, [3]float64{35, 1.0, 1}, [3]float64{50, 1.0, 1}, [3]float64{65, 0.9, 1})
	cases := []struct {
		name    string
		samples []timeline.Sample
		now     float64
		light   bool
	}{
		{"too early to judge", flat, 100, false},
		{"flat and long enough", flat, 150, true},
		{"still rising", samples([3]float64{20, 1, 1}, [3]float64{35, 3, 1}, [3]float64{50, 5, 1}, [3]float64{130, 7, 1}), 150, false},
		{"enough in all", samples([3]float64{20, 9, 1}, [3]float64{35, 9, 1}, [3]float64{50, 9, 1}), 200, false},
		{"enough spread over two pods", samples([3]float64{20, 4.5, 2}, [3]float64{35, 4.5, 2}, [3]float64{50, 4.5, 2}), 200, false},
		{"too few readings", samples([3]float64{20, 1, 1}), 200, false},
		{"no reading", []timeline.Sample{{At: at(5), Ready: 1}}, 300, false},
	}
	for _, c := range cases {
		why, light := TooLight(c.samples, at(c.now), 4, 3, settle)
		if light != c.light {
			t.Errorf("%s: light=%v (%s)", c.name, light, why)
		}
		if light && (!strings.Contains(why, "peaked at 1.00 per pod") || !strings.Contains(why, "target 4") || !strings.Contains(why, "raise --rate")) {
			t.Errorf("%s: %q", c.name, why)
		}
	}
	// The HPA already asks for the replicas: never too light.
	asked := append(samples(), flat...)
	asked[3].Desired = 3
	if _, light := TooLight(asked, at(300), 4, 3, settle); light {
		t.Error("too light although the HPA desires 3")
	}
}

// A combined strategy is too light only when every metric is: the HPA
// takes the largest count, so a second metric above its need keeps the
// wait going.
func TestTooLightAll(t *testing.T) {
	settle := 2 * time.Minute
	kv := "prometheus.googleapis.com|vllm:kv_cache_usage_perc|gauge"
	metrics := []config.ScaledMetric{
		{Key: "running", Target: 4, HPAName: "prometheus.googleapis.com|vllm:num_requests_running|gauge"},
		{Key: "kv-cache", Target: 0.2, HPAName: kv},
	}
	withKV := func(v float64) []timeline.Sample {
		s := samples([3]float64{20, 0.9, 1}, [3]float64{35, 1.0, 1}, [3]float64{50, 1.0, 1}, [3]float64{65, 0.9, 1})
		for i := range s {
			s[i].OtherMetrics = map[string]float64{kv: v}
		}
		return s
	}
	if why, light := TooLightAll(withKV(0.57), at(150), metrics, 3, settle); light {
		t.Errorf("too light although kv-cache (0.57, target 0.2) asks for 3: %s", why)
	}
	why, light := TooLightAll(withKV(0.1), at(150), metrics, 3, settle)
	if !light || !strings.Contains(why, "running: ") || !strings.Contains(why, "kv-cache: ") || !strings.Contains(why, "holds its prompt and answer") {
		t.Errorf("both metrics light: light=%v %q", light, why)
	}
}
