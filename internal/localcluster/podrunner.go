package localcluster

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// NodeName is the one Node the pod runner binds pods to.
const NodeName = "vllm-hpa-test-node"

// PodRunner plays the scheduler and kubelet: it binds every pod to NodeName,
// then after StartDelay reports it Running and Ready, and finishes the
// deletion of pods being deleted. Pod IPs are never dialed.
type PodRunner struct {
	Client     kubernetes.Interface
	StartDelay time.Duration
	// Hold, when it returns a non-empty reason for a pod, keeps it Pending
	// with that reason as its container's waiting reason (e.g. ImagePullBackOff).
	Hold func(pod *corev1.Pod) (reason, message string)
	// KubeletPort is put in the Node's daemon endpoints (port-forward).
	KubeletPort int32
	// Started, if set, runs when a pod starts, before it is reported
	// Ready (e.g. to start the process it stands for); an error keeps the
	// pod Pending with the error as its waiting reason.
	Started func(pod *corev1.Pod) error
	// Stopped, if set, runs when a pod is deleted.
	Stopped func(pod *corev1.Pod)

	nextIP atomic.Uint32
	mu     sync.Mutex
	timers map[string]*time.Timer
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
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
	return nil
}

func (r *PodRunner) ensureNode(ctx context.Context) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: NodeName, Labels: map[string]string{
			"kubernetes.io/hostname":                  NodeName,
			"cloud.google.com/gke-accelerator":        "nvidia-l4",
			"cloud.google.com/gke-gpu-driver-version": "latest",
		}},
	}
	created, err := r.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = r.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              resource.MustParse("64"),
		corev1.ResourceMemory:           resource.MustParse("256Gi"),
		corev1.ResourceEphemeralStorage: resource.MustParse("1Ti"),
		corev1.ResourcePods:             resource.MustParse("110"),
		"nvidia.com/gpu":                resource.MustParse("8"),
	}
	created.Status = corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		// Only an InternalIP: kube-apiserver tries a Hostname address first.
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: r.KubeletPort}},
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(),
		}},
	}
	_, err = r.Client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{})
	return err
}

func (r *PodRunner) sync(ctx context.Context, pod *corev1.Pod) {
	switch {
	case pod.DeletionTimestamp != nil:
		if r.Stopped != nil {
			r.Stopped(pod)
		}
		// No kubelet will confirm the deletion: finish it.
		zero := int64(0)
		_ = r.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	case pod.Spec.NodeName == "":
		if r.Client.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: NodeName},
		}, metav1.CreateOptions{}) == nil {
			r.event(ctx, pod, "default-scheduler", "Scheduled", "Successfully assigned "+pod.Namespace+"/"+pod.Name+" to "+NodeName)
		}
	case pod.Status.Phase == "" || (pod.Status.Phase == corev1.PodPending && !r.held(pod)):
		r.schedule(ctx, pod)
	}
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
		r.setStatus(ctx, pod.Namespace, pod.Name, false, "ContainerCreating", "")
	}
}

func (r *PodRunner) start(ctx context.Context, namespace, name string) {
	pod, err := r.Client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil || pod.DeletionTimestamp != nil {
		return
	}
	if r.Hold != nil {
		if reason, msg := r.Hold(pod); reason != "" {
			r.setStatus(ctx, namespace, name, false, reason, msg)
			return
		}
	}
	if r.Started != nil {
		if err := r.Started(pod); err != nil {
			r.setStatus(ctx, namespace, name, false, "StartError", err.Error())
			return
		}
	}
	for _, c := range pod.Spec.Containers {
		r.event(ctx, pod, "kubelet", "Pulled", "Successfully pulled image \""+c.Image+"\"")
		r.event(ctx, pod, "kubelet", "Created", "Created container "+c.Name)
		r.event(ctx, pod, "kubelet", "Started", "Started container "+c.Name)
	}
	r.setStatus(ctx, namespace, name, true, "", "")
}

// event records what the scheduler or the kubelet would say of the pod.
func (r *PodRunner) event(ctx context.Context, pod *corev1.Pod, component, reason, message string) {
	now := metav1.Now()
	_, _ = r.Client.CoreV1().Events(pod.Namespace).Create(ctx, &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{GenerateName: pod.Name + ".", Namespace: pod.Namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, APIVersion: "v1"},
		Reason:         reason, Message: message, Type: corev1.EventTypeNormal,
		Source:         corev1.EventSource{Component: component, Host: NodeName},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}, metav1.CreateOptions{})
}

func (r *PodRunner) setStatus(ctx context.Context, namespace, name string, ready bool, waitReason, waitMessage string) {
	_ = retryOnConflict(func() error {
		pod, err := r.Client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		if pod.Status.PodIP == "" {
			n := r.nextIP.Add(1)
			pod.Status.PodIP = fmt.Sprintf("10.244.%d.%d", n/250, n%250+2)
			pod.Status.PodIPs = []corev1.PodIP{{IP: pod.Status.PodIP}}
			pod.Status.HostIP = "127.0.0.1"
			pod.Status.StartTime = &now
		}
		status := corev1.ConditionFalse
		pod.Status.Phase = corev1.PodPending
		if ready {
			status = corev1.ConditionTrue
			pod.Status.Phase = corev1.PodRunning
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
		pod.Status.ContainerStatuses = nil
		for _, c := range pod.Spec.Containers {
			cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: ready, Started: &ready}
			if ready {
				cs.State.Running = &corev1.ContainerStateRunning{StartedAt: now}
			} else {
				cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: waitReason, Message: waitMessage}
			}
			pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, cs)
		}
		_, err = r.Client.CoreV1().Pods(namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
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
