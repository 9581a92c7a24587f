// Package stages explains a scale-up stage by stage, from what the API
// server and the pods show: the metric above target as the HPA reads it,
// the HPA's decision, then for each new pod its creation, scheduling (and,
// when a node had to be made for it, the node), image pull, container
// start, Ready, and its first answer to a real request. The first answer is
// probed directly (a one-token chat completion through the API server's pod
// proxy, every quarter second from the pod's start), because a pod can be Ready
// well before it serves.
package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/units"
)

// Seconds are after the load started.
type Seconds = units.Seconds

// Pod is one new pod's stages (nil: not seen).
type Pod struct {
	Name        string   `json:"pod"`
	Created     Seconds  `json:"createdSeconds"`
	NodeCreated *Seconds `json:"nodeCreatedSeconds,omitempty"` // a node made for it
	NodeReady   *Seconds `json:"nodeReadySeconds,omitempty"`
	Scheduled   *Seconds `json:"scheduledSeconds,omitempty"`
	Pulled      *Seconds `json:"imagePulledSeconds,omitempty"`
	Started     *Seconds `json:"startedSeconds,omitempty"`
	Ready       *Seconds `json:"readySeconds,omitempty"`
	FirstAnswer *Seconds `json:"firstAnswerSeconds,omitempty"`
	// FailedScheduling and TriggeredScaleUp: the scheduler found no node,
	// and the cluster autoscaler asked for one.
	FailedScheduling bool `json:"failedScheduling,omitempty"`
	TriggeredScaleUp bool `json:"triggeredScaleUp,omitempty"`
}

// Stage is one step of the slowest new pod's way, with how long it took.
type Stage struct {
	Name    string  `json:"stage"`
	At      Seconds `json:"atSeconds"` // when it ended
	Seconds Seconds `json:"seconds"`   // how long it took
}

// Report is the first scale-up, stage by stage.
type Report struct {
	MetricAbove *Seconds `json:"metricAboveTargetSeconds,omitempty"`
	Decision    *Seconds `json:"decisionSeconds,omitempty"`
	Pods        []Pod    `json:"pods"`
	// Stages are the slowest new pod's (the one whose first answer came
	// last), in order.
	Stages []Stage `json:"stages"`
	// Biggest is the longest stage and what cuts it.
	Biggest *Stage `json:"biggest,omitempty"`
	Advice  string `json:"advice,omitempty"`
	// ReadyBeforeWarm names pods that were Ready more than WarmGap before
	// they first answered.
	ReadyBeforeWarm []string `json:"readyBeforeWarm,omitempty"`
}

// WarmGap is how long Ready may come before the first answer without a flag.
const WarmGap = 5 * time.Second

// Advice says what cuts each stage, from Google's reference architecture
// for vLLM on GKE (docs/benchmarks.md has its figures).
var Advice = map[string]string{
	"metric above target": "the load reached the metric slowly: a shorter scrape interval (monitoring.interval), or the native backend, which skips Cloud Monitoring's ingestion",
	"hpa decision":        "the HPA saw the metric late: the native backend (no Cloud Monitoring ingestion or adapter query lag), a shorter scrape interval, and no scale-up stabilization",
	"pod created":         "the Deployment controller was slow to create the pod: check the control plane's load",
	"node ready":          "a GPU node had to be provisioned: keep warm capacity (hpa.min-replicas sized from this cold start, or a low-priority placeholder pod), a ComputeClass with fallbacks, and a PodDisruptionBudget or cluster-autoscaler.kubernetes.io/safe-to-evict=false so the cluster autoscaler does not drain vLLM nodes",
	"scheduled":           "the pod waited for a node: keep warm GPU capacity (hpa.min-replicas, a placeholder pod), and a PodDisruptionBudget so vLLM nodes are not drained",
	"image pulled":        "the image pull: image streaming (gcloud container clusters update --enable-image-streaming) or a secondary boot disk with the image preloaded",
	"container started":   "the container took long to start after its pull: check the node's disk and the runtime's events",
	"ready":               "vLLM's start and model load: a model streamer (vLLM --load-format runai_streamer) or a model cache (Hyperdisk ML, Cloud Storage FUSE with caching), and compile and CUDA graph caches",
	"first answer":        "the pod was Ready before it could serve (Ready before warm): a readiness probe on a real completion (POST /v1/chat/completions with max_tokens 1) rather than /health",
}

// Prober probes new pods' first answers until stopped.
type Prober struct {
	k        *kube.Client
	ns, sel  string
	port     int
	model    string
	start    time.Time
	mu       sync.Mutex
	answered map[string]time.Time
	known    map[string]bool // pods there before the load: not new
	probing  map[string]bool // pods with a probe in flight
}

// probeEvery is how often a new pod that has not answered is probed: a
// pod the HPA removes soon after it starts must still be caught.
const probeEvery = 250 * time.Millisecond

// StartProber records the pods there now, then probes every pod created
// since, each on its own (a slow pod delays no other), every probeEvery
// until it answers or ctx ends.
func StartProber(ctx context.Context, k *kube.Client, namespace, selector string, port int, model string, start time.Time) *Prober {
	p := &Prober{k: k, ns: namespace, sel: selector, port: port, model: model, start: start, answered: map[string]time.Time{}, known: map[string]bool{}, probing: map[string]bool{}}
	if pods, err := k.Typed.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector}); err == nil {
		for _, pod := range pods.Items {
			p.known[pod.Name] = true
		}
	}
	go p.run(ctx)
	return p
}

func (p *Prober) run(ctx context.Context) {
	t := time.NewTicker(probeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pods, err := p.k.Typed.CoreV1().Pods(p.ns).List(ctx, metav1.ListOptions{LabelSelector: p.sel})
		if err != nil {
			continue
		}
		for _, pod := range pods.Items {
			if pod.Status.Phase != corev1.PodRunning || pod.DeletionTimestamp != nil {
				continue
			}
			p.mu.Lock()
			skip := p.known[pod.Name] || !p.answered[pod.Name].IsZero() || p.probing[pod.Name]
			if !skip {
				p.probing[pod.Name] = true
			}
			p.mu.Unlock()
			if skip {
				continue
			}
			go func(name string) {
				ok := p.probe(ctx, name)
				p.mu.Lock()
				defer p.mu.Unlock()
				delete(p.probing, name)
				if ok {
					p.answered[name] = time.Now()
				}
			}(pod.Name)
		}
	}
}

// probe sends one one-token chat completion to the pod through the API
// server's proxy; true when it answered.
func (p *Prober) probe(ctx context.Context, pod string) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	body, _ := json.Marshal(map[string]any{"model": p.model, "max_tokens": 1, "messages": []any{map[string]any{"role": "user", "content": "ping"}}})
	path := fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:%d/proxy/v1/chat/completions", p.ns, pod, p.port)
	var status int
	p.k.Typed.CoreV1().RESTClient().Post().AbsPath(path).SetHeader("Content-Type", "application/json").Body(bytes.NewReader(body)).Do(ctx).StatusCode(&status)
	return status == 200
}

// Pending reports whether a pod of r that was Ready has not answered yet
// and still exists.
func (p *Prober) Pending(ctx context.Context, r *Report) bool {
	pods, err := p.k.Typed.CoreV1().Pods(p.ns).List(ctx, metav1.ListOptions{LabelSelector: p.sel})
	if err != nil {
		return false
	}
	exists := map[string]bool{}
	for _, pod := range pods.Items {
		exists[pod.Name] = pod.DeletionTimestamp == nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, np := range r.Pods {
		if np.Ready != nil && exists[np.Name] && p.answered[np.Name].IsZero() {
			return true
		}
	}
	return false
}

// Read builds the report while the new pods exist: the pods created since
// the load started, their events and nodes, and the answers probed so far
// (Finish adds the later ones). metricAbove and decision are from the
// HPA's timeline (nil when not seen).
func (p *Prober) Read(ctx context.Context, metricAbove, decision *Seconds) (*Report, error) {
	r := &Report{MetricAbove: metricAbove, Decision: decision, Pods: []Pod{}, Stages: []Stage{}}
	pods, err := p.k.Typed.CoreV1().Pods(p.ns).List(ctx, metav1.ListOptions{LabelSelector: p.sel})
	if err != nil {
		return nil, err
	}
	events, err := p.k.Typed.CoreV1().Events(p.ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=Pod"})
	if err != nil {
		return nil, err
	}
	at := func(t time.Time) *Seconds {
		if t.IsZero() || t.Before(p.start) {
			return nil
		}
		s := Seconds(t.Sub(p.start))
		return &s
	}
	p.mu.Lock()
	known := p.known
	p.mu.Unlock()
	for _, pod := range pods.Items {
		if known[pod.Name] || pod.CreationTimestamp.Time.Before(p.start) {
			continue
		}
		np := Pod{Name: pod.Name, Created: Seconds(pod.CreationTimestamp.Sub(p.start))}
		for _, c := range pod.Status.Conditions {
			switch {
			case c.Type == corev1.PodScheduled && c.Status == corev1.ConditionTrue:
				np.Scheduled = at(c.LastTransitionTime.Time)
			case c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue:
				np.Ready = at(c.LastTransitionTime.Time)
			}
		}
		for _, cs := range pod.Status.ContainerStatuses {
			if cs.State.Running != nil {
				np.Started = at(cs.State.Running.StartedAt.Time)
			}
		}
		for _, e := range events.Items {
			if e.InvolvedObject.Name != pod.Name {
				continue
			}
			switch e.Reason {
			case "Pulled":
				np.Pulled = at(eventTime(e))
			case "FailedScheduling":
				np.FailedScheduling = true
			case "TriggeredScaleUp":
				np.TriggeredScaleUp = true
			}
		}
		if pod.Spec.NodeName != "" {
			if node, err := p.k.Typed.CoreV1().Nodes().Get(ctx, pod.Spec.NodeName, metav1.GetOptions{}); err == nil && !node.CreationTimestamp.Time.Before(p.start) {
				np.NodeCreated = at(node.CreationTimestamp.Time)
				for _, c := range node.Status.Conditions {
					if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
						np.NodeReady = at(c.LastTransitionTime.Time)
					}
				}
			}
		}
		r.Pods = append(r.Pods, np)
	}
	sort.Slice(r.Pods, func(i, j int) bool { return r.Pods[i].Created < r.Pods[j].Created })
	p.Finish(r)
	return r, nil
}

// Finish adds the first answers probed since Read, flags the pods Ready
// well before they answered, and lays out the slowest pod's way.
func (p *Prober) Finish(r *Report) {
	p.mu.Lock()
	for i := range r.Pods {
		if t, ok := p.answered[r.Pods[i].Name]; ok && !t.IsZero() {
			s := Seconds(t.Sub(p.start))
			r.Pods[i].FirstAnswer = &s
		}
	}
	p.mu.Unlock()
	r.ReadyBeforeWarm = nil
	for _, np := range r.Pods {
		if np.Ready != nil && np.FirstAnswer != nil && time.Duration(*np.FirstAnswer-*np.Ready) > WarmGap {
			r.ReadyBeforeWarm = append(r.ReadyBeforeWarm, fmt.Sprintf("%s: Ready at %s, first answer at %s", np.Name, *np.Ready, *np.FirstAnswer))
		}
	}
	r.Biggest, r.Advice = nil, ""
	r.Stages = stagesOf(r, slowest(r.Pods))
	for i := range r.Stages {
		if r.Biggest == nil || r.Stages[i].Seconds > r.Biggest.Seconds {
			r.Biggest = &r.Stages[i]
		}
	}
	if r.Biggest != nil {
		r.Advice = Advice[r.Biggest.Name]
	}
}

func eventTime(e corev1.Event) time.Time {
	switch {
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	}
	return e.FirstTimestamp.Time
}

// slowest is the new pod whose way ended last (its first answer, else its
// last stage seen).
func slowest(pods []Pod) *Pod {
	var out *Pod
	end := func(p *Pod) Seconds {
		for _, s := range []*Seconds{p.FirstAnswer, p.Ready, p.Started, p.Pulled, p.Scheduled} {
			if s != nil {
				return *s
			}
		}
		return p.Created
	}
	for i := range pods {
		if out == nil || end(&pods[i]) > end(out) {
			out = &pods[i]
		}
	}
	return out
}

// stagesOf lays the way out in order: each stage ends at its time and took
// the time since the previous one seen.
func stagesOf(r *Report, p *Pod) []Stage {
	type point struct {
		name string
		at   *Seconds
	}
	points := []point{{"metric above target", r.MetricAbove}, {"hpa decision", r.Decision}}
	if p != nil {
		created := p.Created
		points = append(points, point{"pod created", &created})
		if p.NodeReady != nil {
			points = append(points, point{"node ready", p.NodeReady})
		}
		points = append(points, point{"scheduled", p.Scheduled}, point{"image pulled", p.Pulled},
			point{"container started", p.Started}, point{"ready", p.Ready}, point{"first answer", p.FirstAnswer})
	}
	out := []Stage{}
	prev := Seconds(0)
	for _, pt := range points {
		if pt.at == nil {
			continue
		}
		at := max(*pt.at, prev) // clocks of a second's precision
		out = append(out, Stage{Name: pt.name, At: at, Seconds: at - prev})
		prev = at
	}
	return out
}

// Lines are the report as text: the slowest new pod's stages as a table
// with a bar each, the biggest, and the Ready-before-warm flags.
func (r *Report) Lines() []string {
	if len(r.Stages) == 0 {
		return nil
	}
	total := r.Stages[len(r.Stages)-1].At
	var out []string
	out = append(out, fmt.Sprintf("scale-up, stage by stage (the slowest of %d new pods; seconds after the load started):", len(r.Pods)))
	for _, s := range r.Stages {
		bar := 0
		if total > 0 {
			bar = int(float64(s.Seconds) / float64(total) * 30)
		}
		out = append(out, fmt.Sprintf("  %-20s %8s  +%-8s %s", s.Name, s.At, s.Seconds, strings.Repeat("█", bar)))
	}
	missing := []string{}
	have := map[string]bool{}
	for _, s := range r.Stages {
		have[s.Name] = true
	}
	for _, n := range []string{"metric above target", "hpa decision", "scheduled", "image pulled", "container started", "ready", "first answer"} {
		if !have[n] {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		out = append(out, "  not seen: "+strings.Join(missing, ", "))
	}
	if r.Biggest != nil {
		out = append(out, fmt.Sprintf("biggest stage: %s (%s): %s", r.Biggest.Name, r.Biggest.Seconds, r.Advice))
	}
	for _, w := range r.ReadyBeforeWarm {
		out = append(out, "Ready before warm: "+w+" ("+Advice["first answer"]+")")
	}
	return slices.Clip(out)
}
