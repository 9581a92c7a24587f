// Package rollout judges a Deployment's rollout as `kubectl rollout status`
// does, and explains a slow one the way an operator reads `kubectl describe
// pod`: scheduling (GPU capacity or quota), image pulls, crash loops and
// warning events. The deploy and adapter steps wait with it. The judges
// are pure functions of the objects.
package rollout

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/step"
)

// diagnoseAfter is how long a rollout may take before its pods and their
// events are watched to explain the wait: a rollout done sooner needs no
// explanation and costs no extra watches.
const diagnoseAfter = 2 * time.Second

// Wait waits for a Deployment's rollout by watch, unless it is already
// done in seen (the Deployment as last returned by the server); once it is
// slow, a watch on its pods (and their warning events) explains what holds
// it up. A rollout past its progress deadline fails the check at once.
func Wait(ctx context.Context, k *kube.Client, report step.Reporter, stepName, ns, name, podSelector string, seen []*unstructured.Unstructured) error {
	return wait(ctx, k, report, stepName, ns, name, podSelector, seen, false)
}

// WaitUnlessCrashing is Wait that ends with a *Crashed error as soon as a
// pod of the Deployment has exited and is restarting: a process that
// cannot start, which waiting alone will not cure.
func WaitUnlessCrashing(ctx context.Context, k *kube.Client, report step.Reporter, stepName, ns, name, podSelector string, seen []*unstructured.Unstructured) error {
	return wait(ctx, k, report, stepName, ns, name, podSelector, seen, true)
}

// Crashed is a rollout whose pod exits at start and restarts.
type Crashed struct {
	Pod      string
	Restarts int32
	// Reason is how the container last ended: Error (it exited non-zero),
	// OOMKilled...
	Reason string
	// Message is the container's last termination message (its last log
	// lines where the container asks for them on error).
	Message string
}

func (c *Crashed) Error() string {
	msg := fmt.Sprintf("pod %s exits at start (restarted %d times)", c.Pod, c.Restarts)
	if c.Message != "" {
		msg += ": " + c.Message
	}
	return msg
}

// CrashLoop reports whether a pod's container is in CrashLoopBackOff
// (it exited and waits to be restarted), with how it last ended. A pod
// being deleted is on its way out, not crash-looping.
func CrashLoop(p *corev1.Pod) (*Crashed, bool) {
	if p.DeletionTimestamp != nil {
		return nil, false
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Ready || cs.State.Waiting == nil || cs.State.Waiting.Reason != "CrashLoopBackOff" {
			continue
		}
		c := &Crashed{Pod: p.Name, Restarts: cs.RestartCount}
		if t := cs.LastTerminationState.Terminated; t != nil {
			c.Reason, c.Message = t.Reason, lastWords(t.Message)
			if c.Message == "" {
				c.Message = fmt.Sprintf("exit code %d (%s)", t.ExitCode, t.Reason)
			}
		}
		return c, true
	}
	return nil, false
}

func wait(ctx context.Context, k *kube.Client, report step.Reporter, stepName, ns, name, podSelector string, seen []*unstructured.Unstructured, stopOnCrash bool) error {
	diag := &podDiagnoser{k: k, ns: ns, deployment: name, selector: podSelector, pods: map[string]string{}, events: map[string]string{}}
	var crashed *Crashed
	var crashMu sync.Mutex
	waitCtx, stopWait := context.WithCancel(ctx)
	defer stopWait()
	if stopOnCrash {
		diag.onCrash = func(c *Crashed) {
			crashMu.Lock()
			if crashed == nil {
				crashed = c
			}
			crashMu.Unlock()
			stopWait()
		}
	}
	dctx, stop := context.WithCancel(ctx)
	var deployReason string
	var mu sync.Mutex
	progress := func() {
		mu.Lock()
		defer mu.Unlock()
		parts := []string{}
		if deployReason != "" {
			parts = append(parts, deployReason)
		}
		if d := diag.summary(); d != "" {
			parts = append(parts, d)
		}
		if len(parts) > 0 {
			report.Waiting(stepName, "Deployment "+ns+"/"+name+": "+strings.Join(parts, "; "))
		}
	}
	watching := make(chan struct{}) // closed when the diagnosis starts
	diagDone := make(chan struct{})
	go func() {
		defer close(diagDone)
		select {
		case <-time.After(diagnoseAfter):
			close(watching)
			diag.run(dctx, false, progress)
		case <-dctx.Done():
		}
	}()
	// No progress line may follow the step's result.
	defer func() { stop(); <-diagDone }()
	err := kube.Until(waitCtx, "Deployment "+ns+"/"+name+" to be available",
		kube.Watch{Resource: k.Dynamic.Resource(kube.DeploymentsGVR).Namespace(ns), Name: name, Seen: seen},
		kube.Existing("Deployment "+ns+"/"+name, func(u *unstructured.Unstructured) (bool, string, error) {
			d, err := kube.Convert[appsv1.Deployment](u)
			if err != nil {
				return false, "", err
			}
			ok, reason, msg := Status(d)
			if reason == "ProgressDeadlineExceeded" {
				return false, "", &step.Failed{Results: []step.Result{{Step: stepName, Check: "deployment available", Reason: reason, Message: msg + diag.suffix()}}}
			}
			return ok, reason + ": " + msg, nil
		}),
		func(r string) {
			mu.Lock()
			deployReason = r
			mu.Unlock()
			progress()
		})
	crashMu.Lock()
	c := crashed
	crashMu.Unlock()
	if c != nil && err != nil && ctx.Err() == nil {
		return c
	}
	var te *kube.TimeoutError
	if errors.As(err, &te) {
		select {
		case <-watching:
		default:
			// Timed out before the diagnosis started: read the pods once,
			// so that a timeout always says why.
			c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			diag.run(c, true, func() {})
			cancel()
		}
		if d := diag.summary(); d != "" {
			te.LastReason += "; " + d
		}
	}
	return err
}

// podDiagnoser watches a Deployment's pods and their warning events and
// keeps one diagnosis per pod that is not Ready.
type podDiagnoser struct {
	k                        *kube.Client
	ns, deployment, selector string

	// onCrash, if set, hears of a pod that exits and restarts.
	onCrash func(*Crashed)

	mu     sync.Mutex
	pods   map[string]string // pod name -> "Reason: message" while not ready
	events map[string]string // pod name -> latest warning event
}

// run watches the pods and their events until ctx ends, calling changed on
// every change; with once it reads them once and returns.
func (p *podDiagnoser) run(ctx context.Context, once bool, changed func()) {
	prefix := p.deployment + "-"
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		kube.Until(ctx, "events", kube.Watch{Resource: p.k.Dynamic.Resource(kube.EventsGVR).Namespace(p.ns)},
			func(objs []*unstructured.Unstructured) (bool, string, error) {
				latest := map[string]string{}
				for _, o := range objs {
					ev, err := kube.Convert[corev1.Event](o)
					if err != nil || ev.Type != corev1.EventTypeWarning || ev.InvolvedObject.Kind != "Pod" || !strings.HasPrefix(ev.InvolvedObject.Name, prefix) {
						continue
					}
					latest[ev.InvolvedObject.Name] = ev.Reason + ": " + eventHint(ev.Reason, ev.Message)
				}
				p.mu.Lock()
				p.events = latest
				p.mu.Unlock()
				changed()
				return once, "", nil
			}, nil)
	}()
	kube.Until(ctx, "pods", kube.Watch{Resource: p.k.Dynamic.Resource(kube.PodsGVR).Namespace(p.ns), LabelSelector: p.selector},
		func(objs []*unstructured.Unstructured) (bool, string, error) {
			diag := map[string]string{}
			for _, o := range objs {
				pod, err := kube.Convert[corev1.Pod](o)
				if err != nil {
					continue
				}
				if c, ok := CrashLoop(pod); ok && p.onCrash != nil {
					p.onCrash(c)
				}
				if ready, reason, msg := Diagnose(pod); !ready {
					diag[pod.Name] = reason
					if hint := eventHint(reason, msg); hint != "" {
						diag[pod.Name] += ": " + hint
					}
				}
			}
			p.mu.Lock()
			p.pods = diag
			p.mu.Unlock()
			changed()
			return once, "", nil
		}, nil)
	wg.Wait()
}

func (p *podDiagnoser) summary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	merged := map[string]string{}
	for pod, d := range p.pods {
		merged[pod] = d
		// A warning event usually says more than the pod's phase.
		if ev, ok := p.events[pod]; ok && (strings.HasPrefix(d, "Pending") || strings.HasPrefix(d, "NotReady")) {
			merged[pod] = ev
		}
	}
	return summarize(merged)
}

func (p *podDiagnoser) suffix() string {
	if s := p.summary(); s != "" {
		return "; " + s
	}
	return ""
}

// eventHint adds what an operator should do about well-known failures.
func eventHint(reason, message string) string {
	lower := strings.ToLower(message)
	switch {
	case strings.Contains(lower, "quota"):
		return message + " (GPU quota: request more quota for the accelerator in this region, or choose another accelerator or region)"
	case strings.Contains(lower, "insufficient nvidia.com/gpu"):
		return message + " (no node with a free GPU: on Standard clusters add a GPU node pool of the configured accelerator; Autopilot provisions one, which takes minutes)"
	case reason == "ImagePullBackOff" || reason == "ErrImagePull":
		return message + " (check workload.image and that the cluster can pull it)"
	case reason == "CrashLoopBackOff":
		return message + " (kubectl logs --previous says why; for the vLLM server a wrong model id, a missing Hugging Face token or too little GPU memory are common)"
	case reason == "CreateContainerConfigError":
		return message + " (a referenced Secret or key is missing)"
	}
	return message
}

// Status judges a Deployment like `kubectl rollout status`: the controller
// has observed the current generation, every replica is updated and
// available, and the Available condition is True.
func Status(d *appsv1.Deployment) (ok bool, reason, message string) {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	if want == 0 {
		return false, "ScaledToZero", "the Deployment is scaled to 0 replicas"
	}
	for _, c := range s.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "ProgressDeadlineExceeded" {
			return false, "ProgressDeadlineExceeded", c.Message
		}
	}
	switch {
	case s.ObservedGeneration < d.Generation:
		return false, "NotObserved", fmt.Sprintf("waiting for the controller to observe generation %d (observed %d)", d.Generation, s.ObservedGeneration)
	case s.UpdatedReplicas < want:
		return false, "Progressing", fmt.Sprintf("%d of %d updated replicas", s.UpdatedReplicas, want)
	case s.Replicas > s.UpdatedReplicas:
		return false, "Progressing", fmt.Sprintf("%d old replicas pending termination", s.Replicas-s.UpdatedReplicas)
	case s.AvailableReplicas < s.UpdatedReplicas:
		return false, "Progressing", fmt.Sprintf("%d of %d updated replicas available", s.AvailableReplicas, s.UpdatedReplicas)
	}
	for _, c := range s.Conditions {
		if c.Type == appsv1.DeploymentAvailable {
			if c.Status == corev1.ConditionTrue {
				return true, c.Reason, fmt.Sprintf("%d/%d replicas available", s.AvailableReplicas, want)
			}
			return false, c.Reason, c.Message
		}
	}
	return false, "NoAvailableCondition", "the Deployment has no Available condition yet"
}

// Diagnose explains why a pod is not Ready, the way an operator would
// read it from `kubectl describe pod`: scheduling failures (GPU capacity or
// quota), image pulls, crash loops, failing readiness.
func Diagnose(p *corev1.Pod) (ready bool, reason, message string) {
	if p.DeletionTimestamp != nil {
		return false, "Terminating", ""
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return false, orDefault(c.Reason, "Unschedulable"), c.Message
		}
	}
	for _, cs := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if w := cs.State.Waiting; w != nil && w.Reason == "CrashLoopBackOff" {
			// The kubelet's back-off message says nothing of why: the
			// container's last words do (its termination message).
			msg := fmt.Sprintf("container %s exits at start (restarted %d times)", cs.Name, cs.RestartCount)
			if t := cs.LastTerminationState.Terminated; t != nil {
				if last := lastWords(t.Message); last != "" {
					msg += ": " + last
				} else {
					msg += fmt.Sprintf(", last exit %d (%s)", t.ExitCode, t.Reason)
				}
			}
			return false, w.Reason, msg
		}
		if w := cs.State.Waiting; w != nil && w.Reason != "" && w.Reason != "ContainerCreating" && w.Reason != "PodInitializing" {
			return false, w.Reason, w.Message
		}
		if t := cs.LastTerminationState.Terminated; t != nil && !cs.Ready && cs.RestartCount > 0 {
			return false, "Restarting", fmt.Sprintf("container %s restarted %d times, last exit %d (%s)", cs.Name, cs.RestartCount, t.ExitCode, t.Reason)
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			if c.Status == corev1.ConditionTrue {
				return true, "Ready", ""
			}
			if p.Status.Phase == corev1.PodRunning {
				return false, "NotReady", orDefault(c.Message, "readiness probe not passing yet (the model may still be loading)")
			}
		}
	}
	return false, string(orDefault(string(p.Status.Phase), "Pending")), "waiting for the pod to be scheduled and started"
}

// lastWords is the error a process exited with, from its termination
// message (its last log lines): the last klog entry (a line such as
// "F1203 04:07:55.725130 1 adapter.go:152] ...", with the lines it goes
// on over), else the last line; at most 300 characters.
func lastWords(message string) string {
	lines := strings.Split(strings.TrimSpace(message), "\n")
	from := len(lines) - 1
	for i := len(lines) - 1; i >= 0; i-- {
		if klogHeader.MatchString(lines[i]) {
			from = i
			break
		}
	}
	last := strings.Join(strings.Fields(strings.Join(lines[from:], " ")), " ")
	if len(last) > 300 {
		// Cut at a character boundary: a log line is any UTF-8.
		cut := 300
		for cut > 0 && !utf8.RuneStart(last[cut]) {
			cut--
		}
		last = last[:cut] + "..."
	}
	return last
}

// klogHeader starts a klog entry: severity, date, time.
var klogHeader = regexp.MustCompile(`^[IWEF][0-9]{4} [0-9:.]+ `)

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// summarize joins distinct pod diagnoses, most frequent first:
// "2 pods Unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu".
func summarize(diag map[string]string) string {
	count := map[string]int{}
	for _, d := range diag {
		count[d]++
	}
	var keys []string
	for k := range count {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if count[keys[i]] != count[keys[j]] {
			return count[keys[i]] > count[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var parts []string
	for _, k := range keys {
		if count[k] == 1 {
			parts = append(parts, "1 pod "+k)
		} else {
			parts = append(parts, fmt.Sprintf("%d pods %s", count[k], k))
		}
	}
	return strings.Join(parts, "; ")
}

// Check reads Deployment ns/name and judges its rollout as the step's check
// named check; fix says what to run when it does not exist.
func Check(ctx context.Context, k *kube.Client, stepName, check, ns, name, fix string) (step.Result, error) {
	r := step.Result{Step: stepName, Check: check}
	d, err := kube.GetTyped[appsv1.Deployment](ctx, k, kube.DeploymentsGVR, ns, name)
	switch {
	case err != nil:
		return r, err
	case d == nil:
		r.Reason, r.Message = "NotFound", "Deployment "+ns+"/"+name+" does not exist: run "+fix
	default:
		r.OK, r.Reason, r.Message = Status(d)
	}
	return r, nil
}
