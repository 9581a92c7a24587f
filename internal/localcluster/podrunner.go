package localcluster

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/vllm-hpa/vllm-hpa/internal/kube"
)

// NodeName is the one Node the pod runner binds pods to.
const NodeName = "vllm-hpa-test-node"

// PodRunner plays the scheduler, the kubelet and (with GPUNodes) GKE's
// cluster autoscaler: it binds every pod to a node, then after StartDelay
// (the image pull) starts it, reports it Ready when its readiness probe
// passes, and finishes the deletion of pods being deleted. Pod IPs are
// never dialed.
type PodRunner struct {
	Client     kubernetes.Interface
	StartDelay time.Duration
	// Ready, if set, is the pod's readiness probe, run every ProbePeriod
	// once it has started (unset: Ready as soon as it starts).
	Ready       func(pod *corev1.Pod) bool
	ProbePeriod time.Duration
	// GPUNodes, when its Provisioning is set, gives NodeName only
	// GPUNodes.GPUs GPUs; a pod that asks for a GPU none has left is
	// unschedulable until a node made for it is Ready.
	GPUNodes GPUNodes
	// Hold, when it returns a non-empty reason for a pod, keeps it Pending
	// with that reason as its container's waiting reason (e.g. ImagePullBackOff).
	Hold func(pod *corev1.Pod) (reason, message string)
	// KubeletPort is put in the Node's daemon endpoints (port-forward).
	KubeletPort int32
	// Started, if set, runs when a pod starts, before it is reported
	// Ready (e.g. to start the process it stands for); an error keeps the
	// pod Pending with the error as its waiting reason, but an *ExitError
	// is its process exiting at start: the kubelet restarts it after its
	// back-off (CrashLoopBackOff), and Started runs again.
	Started func(pod *corev1.Pod) error
	// CrashBackoff is the kubelet's first restart back-off, doubled on
	// each restart up to 30 times it (the kubelet's: 10 s to 5 minutes).
	CrashBackoff time.Duration
	// Stopped, if set, runs when a pod's process is sent SIGTERM: at its
	// deletion, or with Drain after its preStop pause.
	Stopped func(pod *corev1.Pod)
	// Drain terminates a deleted pod as the kubelet does: its containers'
	// preStop sleep first (the process keeps serving; Stopped after it),
	// all within the pod's grace period, and only then is the deletion
	// confirmed. Without it a deleted pod stops at once, as with
	// --grace-period=0: the tests that never look at a drain stay fast.
	Drain bool

	nextIP atomic.Uint32
	mu     sync.Mutex
	timers map[string]*time.Timer
	// terminating are the pods whose termination (Drain) has begun.
	terminating map[types.UID]bool

	// The GPU nodes' bookkeeping (under mu): which node each bound pod's
	// GPUs are on, the pods waiting for a node, the nodes being made.
	gpuNodes     []string
	gpusOn       map[types.UID]placedPod
	unplaced     map[types.UID]*corev1.Pod
	provisioning int
}

// GPUNodes models GKE's cluster autoscaler adding GPU nodes, as it does
// on a Standard cluster's autoscaled pool (or with node auto-provisioning,
// or on Autopilot): the scheduler's FailedScheduling, the autoscaler's
// TriggeredScaleUp (NotTriggerScaleUp once Max nodes exist), and a node
// that registers after 80% of Provisioning and is Ready at Provisioning.
// Nodes are not removed: the autoscaler waits 10 minutes before it
// removes an unneeded node.
type GPUNodes struct {
	GPUs         int // per node
	Provisioning time.Duration
	Max          int // nodes with GPUs, the first included
}

// GPUResource is the extended resource of NVIDIA's device plugin.
const GPUResource corev1.ResourceName = "nvidia.com/gpu"

type placedPod struct {
	node string
	gpus int
}

// Run creates the Node and runs until ctx ends.
func (r *PodRunner) Run(ctx context.Context) error {
	if err := r.ensureNode(ctx); err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactory(r.Client, 0)
	inf := factory.Core().V1().Pods().Informer()
	handle := func(obj any) {
		if pod, ok := obj.(*corev1.Pod); ok {
			r.sync(ctx, pod)
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    handle,
		UpdateFunc: func(_, obj any) { handle(obj) },
		// A pod deleted at once (--force --grace-period=0) is never seen
		// terminating: its process stops and its GPUs are freed here.
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				r.forget(ctx, pod)
				r.mu.Lock()
				delete(r.terminating, pod.UID) // a late update of it must not start another
				r.mu.Unlock()
			}
		},
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
	return nil
}

func (r *PodRunner) ensureNode(ctx context.Context) error {
	gpus := 8
	if r.GPUNodes.Provisioning > 0 {
		gpus = r.GPUNodes.GPUs
	}
	r.mu.Lock()
	r.gpuNodes = []string{NodeName}
	r.mu.Unlock()
	return r.createNode(ctx, NodeName, gpus, true)
}

// createNode registers a node with gpus GPUs, Ready or not yet.
func (r *PodRunner) createNode(ctx context.Context, name string, gpus int, ready bool) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			"kubernetes.io/hostname":                  name,
			"cloud.google.com/gke-accelerator":        "nvidia-l4",
			"cloud.google.com/gke-gpu-driver-version": "latest",
		}},
	}
	created, err := r.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = r.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("64"),
		corev1.ResourceMemory:           resource.MustParse("256Gi"),
		corev1.ResourceEphemeralStorage: resource.MustParse("1Ti"),
		corev1.ResourcePods:             resource.MustParse("110"),
		GPUResource:                     *resource.NewQuantity(int64(gpus), resource.DecimalSI),
	}
	readiness, reason := corev1.ConditionTrue, "KubeletReady"
	if !ready {
		// Registered, not Ready: tainted by the node lifecycle
		// controller, and no GPUs until the device plugin reports them.
		readiness, reason = corev1.ConditionFalse, "KubeletNotReady"
		capacity[GPUResource] = resource.MustParse("0")
		// (kube-apiserver's TaintNodesByCondition admission may have
		// added the taint already.)
		notReady := corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule}
		if !slices.ContainsFunc(created.Spec.Taints, func(t corev1.Taint) bool { return notReady.MatchTaint(&t) }) {
			created.Spec.Taints = append(created.Spec.Taints, notReady)
			if created, err = r.Client.CoreV1().Nodes().Update(ctx, created, metav1.UpdateOptions{}); err != nil {
				return err
			}
		}
	} else if len(created.Spec.Taints) > 0 {
		created.Spec.Taints = nil
		if created, err = r.Client.CoreV1().Nodes().Update(ctx, created, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	created.Status = corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		// Only an InternalIP: kube-apiserver tries a Hostname address first.
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: r.KubeletPort}},
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: readiness, Reason: reason,
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
		}},
	}
	_, err = r.Client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	return err
}

func (r *PodRunner) sync(ctx context.Context, pod *corev1.Pod) {
	switch {
	case pod.DeletionTimestamp != nil && r.Drain:
		r.terminate(ctx, pod)
	case pod.DeletionTimestamp != nil:
		r.forget(ctx, pod)
		r.confirmDeletion(ctx, pod)
	case pod.Spec.NodeName == "":
		node := r.place(ctx, pod)
		if node == "" {
			return
		}
		if err := r.Client.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: node},
		}, metav1.CreateOptions{}); err != nil {
			// Another sync of the same pod may have bound it: release its
			// GPUs only if it is still unbound.
			if live, gerr := r.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{}); gerr == nil && live.UID == pod.UID && live.Spec.NodeName == "" {
				r.mu.Lock()
				delete(r.gpusOn, pod.UID)
				r.mu.Unlock()
			}
			return
		}
		r.event(ctx, pod, "default-scheduler", "Scheduled", "Successfully assigned "+pod.Namespace+"/"+pod.Name+" to "+node)
	case pod.Status.Phase == "" || (pod.Status.Phase == corev1.PodPending && !r.held(pod)):
		r.schedule(ctx, pod)
	case pod.Status.Phase == corev1.PodRunning && !kube.PodReady(pod) && allRunning(pod):
		r.probe(ctx, pod)
	}
}

// confirmDeletion removes a pod whose containers have stopped, as the
// kubelet does once they exit (exactly this pod: a new one may have its
// name).
func (r *PodRunner) confirmDeletion(ctx context.Context, pod *corev1.Pod) {
	zero := int64(0)
	for attempt := 0; attempt < 5 && ctx.Err() == nil; attempt++ {
		err := r.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &pod.UID}})
		if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return // gone, or another pod has the name now
		}
		time.Sleep(time.Duration(attempt+1) * 200 * time.Millisecond)
	}
}

// terminate runs a deleted pod's termination once, as the kubelet does:
// the preStop sleep (the process still serves; the endpoint controllers
// take the pod out of its Services meanwhile), then SIGTERM (Stopped),
// the pause bounded by the grace period the deletion gave. The process
// then exits at once (what vLLM does with its requests is the process's
// stand-in's to model) and the deletion is confirmed.
func (r *PodRunner) terminate(ctx context.Context, pod *corev1.Pod) {
	r.mu.Lock()
	if r.terminating == nil {
		r.terminating = map[types.UID]bool{}
	}
	begun := r.terminating[pod.UID]
	r.terminating[pod.UID] = true
	r.mu.Unlock()
	if begun {
		return
	}
	pause := min(preStopSleep(pod), gracePeriod(pod))
	go func() {
		select {
		case <-time.After(pause):
		case <-ctx.Done():
			return
		}
		r.forget(ctx, pod)
		r.confirmDeletion(ctx, pod)
	}()
}

// preStopSleep is the longest preStop pause of pod's containers (the
// kubelet runs their hooks side by side): a sleep action, or an exec of
// sleep N. A container that never started runs no hook.
func preStopSleep(pod *corev1.Pod) time.Duration {
	if pod.Status.Phase != corev1.PodRunning {
		return 0
	}
	var d time.Duration
	for _, c := range pod.Spec.Containers {
		if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
			continue
		}
		switch hook := c.Lifecycle.PreStop; {
		case hook.Sleep != nil:
			d = max(d, time.Duration(hook.Sleep.Seconds)*time.Second)
		case hook.Exec != nil && len(hook.Exec.Command) == 2 && path.Base(hook.Exec.Command[0]) == "sleep":
			if n, err := strconv.Atoi(hook.Exec.Command[1]); err == nil && n > 0 {
				d = max(d, time.Duration(n)*time.Second)
			}
		}
	}
	return d
}

// gracePeriod is what the deletion gave the pod (its spec's
// terminationGracePeriodSeconds unless the delete said otherwise).
func gracePeriod(pod *corev1.Pod) time.Duration {
	switch {
	case pod.DeletionGracePeriodSeconds != nil:
		return time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	case pod.Spec.TerminationGracePeriodSeconds != nil:
		return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}

// forget stops a deleted pod and frees its GPUs; the pods waiting for a
// GPU are scheduled again.
func (r *PodRunner) forget(ctx context.Context, pod *corev1.Pod) {
	if r.Stopped != nil {
		r.Stopped(pod)
	}
	r.mu.Lock()
	_, held := r.gpusOn[pod.UID]
	delete(r.gpusOn, pod.UID)
	delete(r.unplaced, pod.UID)
	var waiting []*corev1.Pod
	if held {
		for _, p := range r.unplaced {
			waiting = append(waiting, p)
		}
	}
	r.mu.Unlock()
	r.retry(ctx, waiting)
}

// retry schedules the waiting pods again, oldest first, as the
// scheduler's queue takes them (by priority, then creation time).
func (r *PodRunner) retry(ctx context.Context, waiting []*corev1.Pod) {
	slices.SortFunc(waiting, func(a, b *corev1.Pod) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, p := range waiting {
		r.sync(ctx, p)
	}
}

// gpusOf is what the pod asks of GPUs.
func gpusOf(pod *corev1.Pod) int {
	n := 0
	for _, c := range pod.Spec.Containers {
		if q, ok := c.Resources.Limits[GPUResource]; ok {
			n += int(q.Value())
		} else if q, ok := c.Resources.Requests[GPUResource]; ok {
			n += int(q.Value())
		}
	}
	return n
}

// place chooses the pod's node and reserves its GPUs there; "" when none
// has room, after the scheduler's and the cluster autoscaler's events.
func (r *PodRunner) place(ctx context.Context, pod *corev1.Pod) string {
	need := gpusOf(pod)
	if r.GPUNodes.Provisioning <= 0 || need == 0 {
		return NodeName
	}
	r.mu.Lock()
	if r.gpusOn == nil {
		r.gpusOn, r.unplaced = map[types.UID]placedPod{}, map[types.UID]*corev1.Pod{}
	}
	if p, ok := r.gpusOn[pod.UID]; ok {
		r.mu.Unlock()
		return p.node // a bind in flight
	}
	used := map[string]int{}
	for _, p := range r.gpusOn {
		used[p.node] += p.gpus
	}
	for _, n := range r.gpuNodes {
		if used[n]+need <= r.GPUNodes.GPUs {
			r.gpusOn[pod.UID] = placedPod{node: n, gpus: need}
			delete(r.unplaced, pod.UID)
			r.mu.Unlock()
			return n
		}
	}
	_, known := r.unplaced[pod.UID]
	r.unplaced[pod.UID] = pod
	if known {
		r.mu.Unlock()
		return ""
	}
	// A pod newly unschedulable: the scheduler says why; the autoscaler
	// adds nodes for every GPU asked for beyond the nodes being made.
	nodes := len(r.gpuNodes)
	waiting := 0
	for _, p := range r.unplaced {
		waiting += gpusOf(p)
	}
	perNode := max(r.GPUNodes.GPUs, 1)
	wanted := (waiting+perNode-1)/perNode - r.provisioning
	room := r.GPUNodes.Max - nodes - r.provisioning
	add := max(min(wanted, room), 0)
	from := nodes + r.provisioning
	r.provisioning += add
	r.mu.Unlock()

	why := fmt.Sprintf("0/%d nodes are available: %d Insufficient %s. preemption: 0/%d nodes are available: %d No preemption victims found for incoming pod.", nodes, nodes, GPUResource, nodes, nodes)
	r.warn(ctx, pod, "default-scheduler", "FailedScheduling", why)
	switch {
	case add > 0:
		r.event(ctx, pod, "cluster-autoscaler", "TriggeredScaleUp", fmt.Sprintf("pod triggered scale-up: [{gpu-pool %d->%d (max: %d)}]", from, from+add, r.GPUNodes.Max))
		for i := 0; i < add; i++ {
			go r.provision(ctx, fmt.Sprintf("gpu-pool-node-%d", from+i+1))
		}
	case wanted > 0:
		r.event(ctx, pod, "cluster-autoscaler", "NotTriggerScaleUp", "pod didn't trigger scale-up: 1 max node group size reached")
	}
	// (A pod that nodes already being added will take gets no event of
	// the autoscaler's, as with the real one.)
	r.setUnschedulable(ctx, pod, why)
	return ""
}

// provision makes a GPU node: it registers NotReady, turns Ready, then the
// pods waiting for room are scheduled again.
func (r *PodRunner) provision(ctx context.Context, name string) {
	wait := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	p := r.GPUNodes.Provisioning
	made := wait(p*4/5) && r.createNode(ctx, name, r.GPUNodes.GPUs, false) == nil && wait(p-p*4/5) && r.createNode(ctx, name, r.GPUNodes.GPUs, true) == nil
	r.mu.Lock()
	r.provisioning--
	if !made {
		r.mu.Unlock()
		return
	}
	r.gpuNodes = append(r.gpuNodes, name)
	var waiting []*corev1.Pod
	for _, pod := range r.unplaced {
		waiting = append(waiting, pod)
	}
	r.mu.Unlock()
	r.retry(ctx, waiting)
}

// setUnschedulable records what the scheduler writes on a pod it cannot
// place.
func (r *PodRunner) setUnschedulable(ctx context.Context, pod *corev1.Pod, why string) {
	_ = retryOnConflict(func() error {
		live, err := r.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil || live.Spec.NodeName != "" {
			return err
		}
		live.Status.Phase = corev1.PodPending
		live.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
			Message: why, LastTransitionTime: metav1.Now()}}
		_, err = r.Client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, live, metav1.UpdateOptions{})
		return err
	})
}

func (r *PodRunner) held(pod *corev1.Pod) bool {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.State.Waiting != nil && cs.State.Waiting.Reason != "ContainerCreating" {
			return true
		}
	}
	return false
}

// schedule marks the pod Pending now and Running and Ready after StartDelay.
func (r *PodRunner) schedule(ctx context.Context, pod *corev1.Pod) {
	key := string(pod.UID)
	r.mu.Lock()
	if r.timers == nil {
		r.timers = map[string]*time.Timer{}
	}
	if _, ok := r.timers[key]; ok {
		r.mu.Unlock()
		return
	}
	r.timers[key] = time.AfterFunc(r.StartDelay, func() { r.start(ctx, pod.Namespace, pod.Name) })
	r.mu.Unlock()
	for _, c := range pod.Spec.Containers {
		r.event(ctx, pod, "kubelet", "Pulling", "Pulling image \""+c.Image+"\"")
	}
	if r.StartDelay > 0 {
		r.setStatus(ctx, pod.Namespace, pod.Name, waiting, "ContainerCreating", "")
	}
}

func (r *PodRunner) start(ctx context.Context, namespace, name string) {
	pod, err := r.Client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil || pod.DeletionTimestamp != nil {
		return
	}
	if r.Hold != nil {
		if reason, msg := r.Hold(pod); reason != "" {
			r.setStatus(ctx, namespace, name, waiting, reason, msg)
			return
		}
	}
	if r.Started != nil {
		if err := r.Started(pod); err != nil {
			var exit *ExitError
			if errors.As(err, &exit) {
				r.crash(ctx, pod, exit)
				return
			}
			r.setStatus(ctx, namespace, name, waiting, "StartError", err.Error())
			return
		}
	}
	for _, c := range pod.Spec.Containers {
		r.event(ctx, pod, "kubelet", "Pulled", "Successfully pulled image \""+c.Image+"\"")
		r.event(ctx, pod, "kubelet", "Created", "Created container "+c.Name)
		r.event(ctx, pod, "kubelet", "Started", "Started container "+c.Name)
	}
	if r.Ready == nil || r.Ready(pod) {
		r.setStatus(ctx, namespace, name, running, "", "")
		return
	}
	r.setStatus(ctx, namespace, name, runningNotReady, "", "")
}

// ExitError is a pod's process exiting as it starts.
type ExitError struct {
	Code int32
	// Message is what the kubelet keeps as the container's termination
	// message (its last log lines, with FallbackToLogsOnError).
	Message string
}

func (e *ExitError) Error() string { return fmt.Sprintf("exit code %d: %s", e.Code, e.Message) }

// crash records the pod's container exiting, as the kubelet does (its
// last state Terminated with the exit code and message, one more restart,
// waiting in CrashLoopBackOff), and starts it again after the back-off.
func (r *PodRunner) crash(ctx context.Context, pod *corev1.Pod, exit *ExitError) {
	var restarts int32
	var backoff time.Duration
	_ = retryOnConflict(func() error {
		live, err := r.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil || live.UID != pod.UID {
			return err
		}
		now := metav1.Now()
		if live.Status.PodIP == "" {
			r.assignIP(live, now)
		}
		live.Status.Phase = corev1.PodRunning
		live.Status.Conditions = []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.ContainersReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady", LastTransitionTime: now},
			{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady", LastTransitionTime: now},
		}
		previous := map[string]corev1.ContainerStatus{}
		for _, cs := range live.Status.ContainerStatuses {
			previous[cs.Name] = cs
		}
		live.Status.ContainerStatuses = nil
		for _, c := range live.Spec.Containers {
			restarts = previous[c.Name].RestartCount + 1
			backoff = r.crashBackoff(restarts)
			started := false
			live.Status.ContainerStatuses = append(live.Status.ContainerStatuses, corev1.ContainerStatus{
				Name: c.Name, Image: c.Image, ImageID: c.Image, Started: &started, RestartCount: restarts,
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff",
					Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", backoff, c.Name, live.Name, live.Namespace, live.UID)}},
				LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: exit.Code, Reason: "Error", Message: exit.Message, StartedAt: now, FinishedAt: now}},
			})
		}
		_, err = r.Client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, live, metav1.UpdateOptions{})
		return err
	})
	if restarts == 0 {
		return
	}
	for _, c := range pod.Spec.Containers {
		r.warn(ctx, pod, "kubelet", "BackOff", "Back-off restarting failed container "+c.Name+" in pod "+pod.Name+"_"+pod.Namespace+"("+string(pod.UID)+")")
	}
	key := "restart/" + string(pod.UID)
	r.mu.Lock()
	if r.timers == nil {
		r.timers = map[string]*time.Timer{}
	}
	r.timers[key] = time.AfterFunc(backoff, func() { r.start(ctx, pod.Namespace, pod.Name) })
	r.mu.Unlock()
}

// crashBackoff is the kubelet's back-off before restart n (1-based).
func (r *PodRunner) crashBackoff(n int32) time.Duration {
	first := r.CrashBackoff
	if first <= 0 {
		first = 10 * time.Second
	}
	d := first
	for i := int32(1); i < n && d < 30*first; i++ {
		d *= 2
	}
	return min(d, 30*first)
}

// allRunning reports whether every container of the pod runs (not waiting
// in a back-off).
func allRunning(pod *corev1.Pod) bool {
	for _, cs := range pod.Status.ContainerStatuses {
		if cs.State.Running == nil {
			return false
		}
	}
	return len(pod.Status.ContainerStatuses) > 0
}

// probe runs the pod's readiness probe every ProbePeriod, once per pod,
// until it passes (then the pod is Ready) or the pod is gone.
func (r *PodRunner) probe(ctx context.Context, pod *corev1.Pod) {
	key := "probe/" + string(pod.UID)
	r.mu.Lock()
	if _, ok := r.timers[key]; ok || r.Ready == nil {
		r.mu.Unlock()
		return
	}
	period := r.ProbePeriod
	if period <= 0 {
		period = 10 * time.Second
	}
	var tick func()
	tick = func() {
		live, err := r.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil || live.UID != pod.UID || live.DeletionTimestamp != nil || ctx.Err() != nil {
			return
		}
		if r.Ready(live) {
			r.setStatus(ctx, pod.Namespace, pod.Name, running, "", "")
			return
		}
		r.mu.Lock()
		r.timers[key] = time.AfterFunc(period, tick)
		r.mu.Unlock()
	}
	r.timers[key] = time.AfterFunc(period, tick)
	r.mu.Unlock()
}

// event records what the scheduler, the kubelet or the cluster autoscaler
// would say of the pod; warn, a warning.
func (r *PodRunner) event(ctx context.Context, pod *corev1.Pod, component, reason, message string) {
	r.record(ctx, pod, component, corev1.EventTypeNormal, reason, message)
}

// host is the node an event's component runs on: the pod's, for the
// kubelet; none for the control plane's components.
func host(pod *corev1.Pod, component string) string {
	if component == "kubelet" {
		return pod.Spec.NodeName
	}
	return ""
}

func (r *PodRunner) warn(ctx context.Context, pod *corev1.Pod, component, reason, message string) {
	r.record(ctx, pod, component, corev1.EventTypeWarning, reason, message)
}

func (r *PodRunner) record(ctx context.Context, pod *corev1.Pod, component, kind, reason, message string) {
	now := metav1.Now()
	_, _ = r.Client.CoreV1().Events(pod.Namespace).Create(ctx, &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: pod.Name + ".", Namespace: pod.Namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, APIVersion: "v1"},
		Reason:         reason, Message: message, Type: kind,
		Source:         corev1.EventSource{Component: component, Host: host(pod, component)},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}, metav1.CreateOptions{})
}

// containerState is what setStatus reports of a pod's containers.
type containerState int

const (
	waiting         containerState = iota // not started: Pending
	runningNotReady                       // started, its readiness probe not passed yet
	running                               // started and Ready
)

func (r *PodRunner) setStatus(ctx context.Context, namespace, name string, state containerState, waitReason, waitMessage string) {
	ready := state == running
	_ = retryOnConflict(func() error {
		pod, err := r.Client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		if pod.Status.PodIP == "" {
			r.assignIP(pod, now)
		}
		status := corev1.ConditionFalse
		pod.Status.Phase = corev1.PodPending
		if state != waiting {
			pod.Status.Phase = corev1.PodRunning
		}
		if ready {
			status = corev1.ConditionTrue
		}
		// A condition keeps its transition time while its status stays,
		// as the kubelet keeps it (the stages of a scale-up are read from
		// these times).
		old := map[corev1.PodConditionType]corev1.PodCondition{}
		for _, c := range pod.Status.Conditions {
			old[c.Type] = c
		}
		cond := func(t corev1.PodConditionType, st corev1.ConditionStatus) corev1.PodCondition {
			if c, ok := old[t]; ok && c.Status == st {
				return c
			}
			return corev1.PodCondition{Type: t, Status: st, LastTransitionTime: now}
		}
		pod.Status.Conditions = []corev1.PodCondition{
			cond(corev1.PodScheduled, corev1.ConditionTrue),
			cond(corev1.PodInitialized, corev1.ConditionTrue),
			cond(corev1.ContainersReady, status),
			cond(corev1.PodReady, status),
		}
		previous := pod.Status.ContainerStatuses
		pod.Status.ContainerStatuses = nil
		for _, c := range pod.Spec.Containers {
			started := state != waiting
			cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: ready, Started: &started}
			for _, old := range previous {
				if old.Name == c.Name {
					// The kubelet keeps a container's restarts and how it
					// last ended.
					cs.RestartCount, cs.LastTerminationState = old.RestartCount, old.LastTerminationState
				}
			}
			if started {
				at := now
				for _, old := range previous {
					if old.Name == c.Name && old.State.Running != nil {
						at = old.State.Running.StartedAt // kept, as the kubelet keeps it
					}
				}
				cs.State.Running = &corev1.ContainerStateRunning{StartedAt: at}
			} else {
				cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: waitReason, Message: waitMessage}
			}
			pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, cs)
		}
		_, err = r.Client.CoreV1().Pods(namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
}

// assignIP gives a pod its IP and start time, once.
func (r *PodRunner) assignIP(pod *corev1.Pod, now metav1.Time) {
	n := r.nextIP.Add(1)
	pod.Status.PodIP = fmt.Sprintf("10.244.%d.%d", n/250, n%250+2)
	pod.Status.PodIPs = []corev1.PodIP{{IP: pod.Status.PodIP}}
	pod.Status.HostIP = "127.0.0.1"
	pod.Status.StartTime = &now
}

func retryOnConflict(f func() error) error {
	var err error
	for i := 0; i < 5; i++ {
		if err = f(); !apierrors.IsConflict(err) {
			return err
		}
	}
	return err
}
