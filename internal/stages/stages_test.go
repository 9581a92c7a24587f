package stages

import (
	"strings"
	"testing"
	"time"
)

func sec(s float64) *Seconds { v := Seconds(time.Duration(s * float64(time.Second))); return &v }

// TestStagesOfASlowScaleUp: Google's reference figures in the shape the
// report reads them (metric at 50 s, decision at 80 s, a node provisioned
// for 150 s, a 60 s pull, a 90 s load, Ready 22 s before the first
// answer): each stage takes the time since the one before, the biggest is
// the node, with its advice.
func TestStagesOfASlowScaleUp(t *testing.T) {
	r := &Report{MetricAbove: sec(50), Decision: sec(80)}
	p := Pod{Name: "vllm-2", Created: *sec(81), NodeCreated: sec(120), NodeReady: sec(231), Scheduled: sec(232),
		Pulled: sec(292), Started: sec(293), Ready: sec(383), FirstAnswer: sec(405)}
	r.Pods = []Pod{{Name: "vllm-1", Created: *sec(81), Scheduled: sec(82), Ready: sec(90), FirstAnswer: sec(91)}, p}
	r.Stages = stagesOf(r, slowest(r.Pods))
	var got []string
	for _, s := range r.Stages {
		got = append(got, s.Name+"="+s.Seconds.String())
	}
	want := "metric above target=50s hpa decision=30s pod created=1s node ready=2m30s scheduled=1s image pulled=1m0s container started=1s ready=1m30s first answer=22s"
	if strings.Join(got, " ") != want {
		t.Errorf("stages\n got %s\nwant %s", strings.Join(got, " "), want)
	}
	for i := range r.Stages {
		if r.Biggest == nil || r.Stages[i].Seconds > r.Biggest.Seconds {
			r.Biggest = &r.Stages[i]
		}
	}
	r.Advice = Advice[r.Biggest.Name]
	r.ReadyBeforeWarm = []string{"vllm-2: Ready at 6m23s, first answer at 6m45s"}
	text := strings.Join(r.Lines(), "\n")
	for _, w := range []string{"the slowest of 2 new pods", "biggest stage: node ready (2m30s)", "safe-to-evict", "Ready before warm: vllm-2", "readiness probe on a real completion"} {
		if !strings.Contains(text, w) {
			t.Errorf("report does not say %q:\n%s", w, text)
		}
	}
}

// TestStagesNotSeen: stages the cluster does not report are left out of
// the way and named as not seen, never invented.
func TestStagesNotSeen(t *testing.T) {
	r := &Report{Decision: sec(10)}
	r.Pods = []Pod{{Name: "p", Created: *sec(11), Scheduled: sec(11), Ready: sec(14)}}
	r.Stages = stagesOf(r, slowest(r.Pods))
	if len(r.Stages) != 4 {
		t.Errorf("stages %+v", r.Stages)
	}
	text := strings.Join(r.Lines(), "\n")
	if !strings.Contains(text, "not seen: metric above target, image pulled, container started, first answer") {
		t.Errorf("%s", text)
	}
}
