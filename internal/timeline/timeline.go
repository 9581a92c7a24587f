// Package timeline records how the HPA reacts to load: the metric's value,
// desired and ready replicas over time, and every SuccessfulRescale event,
// from watches on the HPA, the Deployment and the HPA's events.
package timeline

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/units"
)

// Sample is the state at one moment, At after the start.
type Sample struct {
	At     Seconds  `json:"atSeconds"`
	Metric *float64 `json:"metric,omitempty"` // the HPA's current average value of its first metric, once known
	// OtherMetrics are the current average values of a combined
	// strategy's further metrics, by the name the HPA reads them by.
	OtherMetrics map[string]float64 `json:"otherMetrics,omitempty"`
	Desired      int32              `json:"desiredReplicas"`
	Replicas     int32              `json:"replicas"`
	Ready        int32              `json:"readyReplicas"`
}

// Describe is the sample for a live line: the metric as the HPA reads it
// and the replicas.
func (s Sample) Describe() string {
	metric := "metric not read yet"
	if s.Metric != nil {
		metric = fmt.Sprintf("metric %.2f", *s.Metric)
	}
	return fmt.Sprintf("%s, replicas %d ready of %d (desired %d)", metric, s.Ready, s.Replicas, s.Desired)
}

// Rescale is one SuccessfulRescale event of the HPA.
type Rescale struct {
	At      Seconds `json:"atSeconds"`
	NewSize int32   `json:"newSize"`
	Message string  `json:"message"`
}

// Seconds is a duration that marshals as seconds.
type Seconds = units.Seconds

// Timeline is everything recorded.
type Timeline struct {
	Start    time.Time `json:"start"`
	Samples  []Sample  `json:"samples"`
	Rescales []Rescale `json:"rescales"`
	// FirstScaleUp is when the first rescale above the starting size
	// happened; ScaledUpReady when, after it, every replica the HPA asked
	// for (above the starting size) was Ready.
	FirstScaleUp  *Seconds `json:"firstScaleUpSeconds,omitempty"`
	ScaledUpReady *Seconds `json:"scaledUpReadySeconds,omitempty"`
	// FirstScaleDown is the first rescale below the peak.
	FirstScaleDown *Seconds `json:"firstScaleDownSeconds,omitempty"`
	// End is when the recording was read: the end of the run.
	End Seconds `json:"endSeconds"`
}

// Watcher watches and records.
type Watcher struct {
	mu      sync.Mutex
	tl      Timeline
	cur     Sample
	initial int32
	peak    int32
	seen    map[string]int32 // event uid -> count seen
	changed chan struct{}
	// OnSample, if set, is called with each new sample and rescale.
	OnSample func(Sample, *Rescale)
}

var (
	hpaGVR    = schema.GroupVersionResource{Group: "autoscaling", Version: "v2", Resource: "horizontalpodautoscalers"}
	deployGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	eventGVR  = schema.GroupVersionResource{Version: "v1", Resource: "events"}
)

// Start begins recording from start until ctx ends; metrics are the names
// the HPA reads its metrics by, the first first.
func Start(ctx context.Context, k *kube.Client, ns, hpa, deployment string, metrics []string, start time.Time, onSample func(Sample, *Rescale)) *Watcher {
	r := &Watcher{tl: Timeline{Start: start, Samples: []Sample{}, Rescales: []Rescale{}}, seen: map[string]int32{}, changed: make(chan struct{}), OnSample: onSample, initial: -1}
	watch := func(w kube.Watch, f func([]*unstructured.Unstructured)) {
		go kube.Until(ctx, "timeline", w, func(objs []*unstructured.Unstructured) (bool, string, error) {
			f(objs)
			return false, "", nil
		}, nil)
	}
	watch(kube.Watch{Resource: k.Dynamic.Resource(hpaGVR).Namespace(ns), Name: hpa}, func(objs []*unstructured.Unstructured) {
		for _, o := range objs {
			var h autoscalingv2.HorizontalPodAutoscaler
			if runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &h) != nil {
				continue
			}
			r.update(func(s *Sample) {
				s.Desired = h.Status.DesiredReplicas
				var others map[string]float64 // a new map: earlier samples keep theirs
				for _, m := range h.Status.CurrentMetrics {
					if m.Pods == nil || m.Pods.Current.AverageValue == nil {
						continue
					}
					v := m.Pods.Current.AverageValue.AsApproximateFloat64()
					switch i := slices.Index(metrics, m.Pods.Metric.Name); {
					case i == 0:
						s.Metric = &v
					case i > 0:
						if others == nil {
							others = map[string]float64{}
						}
						others[m.Pods.Metric.Name] = v
					}
				}
				if others != nil {
					s.OtherMetrics = others
				}
			}, nil)
		}
	})
	watch(kube.Watch{Resource: k.Dynamic.Resource(deployGVR).Namespace(ns), Name: deployment}, func(objs []*unstructured.Unstructured) {
		for _, o := range objs {
			var d appsv1.Deployment
			if runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d) != nil {
				continue
			}
			r.update(func(s *Sample) {
				s.Replicas, s.Ready = d.Status.Replicas, d.Status.ReadyReplicas
				if d.Spec.Replicas != nil && s.Desired == 0 {
					s.Desired = *d.Spec.Replicas
				}
			}, nil)
		}
	})
	watch(kube.Watch{Resource: k.Dynamic.Resource(eventGVR).Namespace(ns), FieldSelector: "involvedObject.name=" + hpa + ",reason=SuccessfulRescale"}, func(objs []*unstructured.Unstructured) {
		for _, o := range objs {
			var ev corev1.Event
			if runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &ev) != nil {
				continue
			}
			r.event(&ev)
		}
	})
	return r
}

func (r *Watcher) event(ev *corev1.Event) {
	last := ev.LastTimestamp.Time
	if ev.Series != nil {
		last = ev.Series.LastObservedTime.Time
	} else if last.IsZero() {
		last = ev.EventTime.Time
	}
	r.mu.Lock()
	count := max(ev.Count, 1)
	if ev.Series != nil {
		count = ev.Series.Count
	}
	if r.seen[string(ev.UID)] == count || last.Before(r.tl.Start) {
		r.seen[string(ev.UID)] = count
		r.mu.Unlock()
		return
	}
	r.seen[string(ev.UID)] = count
	r.mu.Unlock()
	var size int32
	fmt.Sscanf(ev.Message, "New size: %d", &size)
	r.update(nil, &Rescale{NewSize: size, Message: ev.Message})
}

// update applies f to the current sample (and records a rescale) and
// appends the result.
func (r *Watcher) update(f func(*Sample), rs *Rescale) {
	r.mu.Lock()
	at := Seconds(time.Since(r.tl.Start))
	if f != nil {
		f(&r.cur)
	}
	r.cur.At = at
	s := r.cur
	if r.initial < 0 && s.Replicas > 0 {
		r.initial = s.Replicas
	}
	if rs != nil {
		rs.At = at
		r.tl.Rescales = append(r.tl.Rescales, *rs)
		if r.tl.FirstScaleUp == nil && r.initial >= 0 && rs.NewSize > r.initial {
			t := at
			r.tl.FirstScaleUp = &t
		}
		if r.tl.FirstScaleUp != nil && r.tl.FirstScaleDown == nil && rs.NewSize < r.peak {
			t := at
			r.tl.FirstScaleDown = &t
		}
		r.peak = max(r.peak, rs.NewSize)
	}
	// Scaled up and Ready: every replica the HPA asks for, above the
	// starting size, is Ready. Not "the peak": an HPA that asked for 4,
	// then settled on 3 before the fourth started, is served at 3.
	if r.tl.FirstScaleUp != nil && r.tl.ScaledUpReady == nil && s.Desired > r.initial && s.Ready >= s.Desired {
		t := at
		r.tl.ScaledUpReady = &t
	}
	r.tl.Samples = append(r.tl.Samples, s)
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	if r.OnSample != nil {
		r.OnSample(s, rs)
	}
}

// Current is the latest sample.
func (r *Watcher) Current() Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

// WaitFor blocks until cond holds for the current sample or ctx ends.
func (r *Watcher) WaitFor(ctx context.Context, cond func(Sample) bool) error {
	for {
		r.mu.Lock()
		s, ch := r.cur, r.changed
		r.mu.Unlock()
		if cond(s) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Timeline returns a copy of what was recorded.
func (r *Watcher) Timeline() Timeline {
	r.mu.Lock()
	defer r.mu.Unlock()
	tl := r.tl
	tl.End = Seconds(time.Since(tl.Start))
	tl.Samples = append([]Sample(nil), r.tl.Samples...)
	tl.Rescales = append([]Rescale(nil), r.tl.Rescales...)
	return tl
}

// Chart draws the timeline for a terminal: ready replicas and the metric
// as bars over width columns of time, and where each rescale happened.
func Chart(tl Timeline, width int) []string {
	if len(tl.Samples) == 0 || width < 10 {
		return nil
	}
	// The axis runs to the end of the run, not to the last change.
	end := time.Duration(max(tl.End, tl.Samples[len(tl.Samples)-1].At))
	if end <= 0 {
		end = time.Second
	}
	col := func(at Seconds) int {
		return min(width-1, int(float64(time.Duration(at))/float64(end)*float64(width-1)))
	}
	// Columns before the first sample are blank: nothing was known then
	// (a 0 there would draw a step that never happened).
	ready := make([]float64, width)
	metric := make([]float64, width)
	for i := range metric {
		ready[i], metric[i] = math.NaN(), math.NaN()
	}
	j := 0
	var last *Sample
	for c := 0; c < width; c++ {
		for j < len(tl.Samples) && col(tl.Samples[j].At) <= c {
			last = &tl.Samples[j]
			j++
		}
		if last == nil {
			continue
		}
		ready[c] = float64(last.Ready)
		if last.Metric != nil {
			metric[c] = *last.Metric
		}
	}
	marks := []rune(strings.Repeat(" ", width))
	for _, rs := range tl.Rescales {
		marks[col(rs.At)] = '^'
	}
	return []string{
		"ready   " + bars(ready) + fmt.Sprintf("  max %g", maxOf(ready)),
		"metric  " + bars(metric) + fmt.Sprintf("  max %g", maxOf(metric)),
		"rescale " + string(marks),
		fmt.Sprintf("        0s%s%s", strings.Repeat(" ", max(0, width-2-len(Seconds(end).String()))), Seconds(end)),
	}
}

func bars(v []float64) string {
	const levels = "▁▂▃▄▅▆▇█"
	top := maxOf(v)
	var b strings.Builder
	for _, x := range v {
		switch {
		case math.IsNaN(x):
			b.WriteRune(' ')
		case top <= 0:
			b.WriteRune('▁')
		default:
			i := int(x / top * 7)
			b.WriteRune([]rune(levels)[min(7, max(0, i))])
		}
	}
	return b.String()
}

func maxOf(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		if !math.IsNaN(x) && x > m {
			m = x
		}
	}
	return m
}
