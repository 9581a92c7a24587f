package verify

import (
	"strings"
	"testing"
	"time"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/load"
	"github.com/vllm-hpa/vllm-hpa/internal/timeline"
	"github.com/vllm-hpa/vllm-hpa/internal/units"
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

func TestDrainAdvice(t *testing.T) {
	for _, tc := range []struct {
		drain, longest time.Duration
		short          bool
		want           string
	}{
		{drain: 30 * time.Second, longest: 2 * time.Second},
		{drain: 30 * time.Second, longest: 25 * time.Second},
		{drain: 30 * time.Second, longest: 25*time.Second + time.Millisecond, short: true, want: "set workload.drain (--drain of up and deploy) to 31s or more"},
		{drain: 0, longest: time.Second, short: true, want: "workload.drain 0s is shorter than the endpoint's removal (5s) plus the longest answer (1s)"},
		{drain: 5 * time.Second, longest: 0},
	} {
		got, short := DrainAdvice(tc.drain, tc.longest)
		if short != tc.short || !strings.Contains(got, tc.want) {
			t.Errorf("DrainAdvice(%s, %s) = %q, %v; want %v containing %q", tc.drain, tc.longest, got, short, tc.short, tc.want)
		}
	}
}

func TestScaleDownVerdict(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sent   *uint64
		failed map[string]int
		max    int
		drain  time.Duration
		exit   int
		want   string // "" passes
	}{
		{name: "none failed", failed: map[string]int{}},
		{name: "within the allowance", failed: map[string]int{"HTTP 502": 2}, max: 2},
		{name: "no drain", failed: map[string]int{"HTTP 502": 2, "EOF": 1}, want: "3 of 40 requests failed during the scale-down (EOF x1, HTTP 502 x2), more than 0: pods were stopped with requests in hand (vLLM aborts them on SIGTERM); set workload.drain"},
		{name: "drain too short", failed: map[string]int{"HTTP 503": 1}, drain: 2 * time.Second, want: "workload.drain (2s) must cover the endpoint's removal from the Service and the longest request (3s here)"},
		{name: "the API server refused the caller", failed: map[string]int{"HTTP 403": 40}, drain: 30 * time.Second, exit: exitcode.Denied, want: "the caller needs create on services/proxy"},
		{name: "nothing sent", sent: ptrTo(uint64(0)), failed: map[string]int{}, want: "no request was sent during the scale-down"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sum := &load.Summary{Sent: 40, Failed: tc.failed, MaxSeconds: units.Seconds(3 * time.Second)}
			if tc.sent != nil {
				sum.Sent = *tc.sent
			}
			if tc.exit == 0 {
				tc.exit = exitcode.CheckFailed
			}
			err := ScaleDownVerdict(sum, tc.max, tc.drain)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("failed: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || exitcode.Of(err) != tc.exit):
				t.Errorf("got %v (exit %d), want exit %d with %q", err, exitcode.Of(err), tc.exit, tc.want)
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }
