package localcluster_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/localcluster"
	"github.com/vllm-hpa/vllm-hpa/internal/vllmsim"
)

// vllmProcesses stands in for the pods' vLLM processes: a simulator per
// pod, which takes SIGTERM as vLLM does (vllmsim.Process.Terminate).
type vllmProcesses struct {
	mu    sync.Mutex
	procs map[string]*vllmsim.Process
}

func (p *vllmProcesses) start(pod *corev1.Pod) error {
	cfg := vllmsim.DefaultConfig()
	cfg.TokenLatency, cfg.OutputTokens = 20*time.Millisecond, 100 // a 2 s answer
	proc, err := vllmsim.Listen("127.0.0.1:0", cfg)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.procs[pod.Name] = proc
	return nil
}

func (p *vllmProcesses) sigterm(pod *corev1.Pod) {
	p.mu.Lock()
	proc := p.procs[pod.Name]
	p.mu.Unlock()
	if proc != nil {
		proc.Terminate()
	}
}

func (p *vllmProcesses) addr(name string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if proc := p.procs[name]; proc != nil {
		return proc.Addr()
	}
	return ""
}

// A pod deleted with a streamed answer in flight: with a preStop pause
// the process keeps serving and the answer completes before SIGTERM;
// without one SIGTERM comes at once and cuts it; and the grace period
// the deletion gives bounds the pause, as the kubelet's does.
func TestPodRunnerDrain(t *testing.T) {
	procs := &vllmProcesses{procs: map[string]*vllmsim.Process{}}
	cp := localcluster.StartForTests(t, localcluster.Options{
		RunPods: true, PodDrain: true,
		PodStarted: procs.start, PodStopped: procs.sigterm,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := cp.Client.CoreV1().Pods("default")

	for _, tc := range []struct {
		name     string
		preStop  int64 // seconds; 0: no hook
		exec     bool  // the hook is an exec of sleep, not the sleep action
		grace    int64 // the pod's terminationGracePeriodSeconds
		deleteIn *int64
		complete bool          // the streamed answer completes
		goneIn   time.Duration // at least this long from the deletion to the pod's end
	}{
		{name: "drained", preStop: 4, grace: 20, complete: true, goneIn: 4 * time.Second},
		{name: "drained-by-exec", preStop: 4, exec: true, grace: 20, complete: true, goneIn: 4 * time.Second},
		{name: "no-prestop", grace: 20, complete: false},
		{name: "grace-bounds-prestop", preStop: 30, grace: 30, deleteIn: ptr(int64(1)), complete: false, goneIn: time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: tc.name, Namespace: "default"},
				Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &tc.grace,
					Containers: []corev1.Container{{Name: "inference-server", Image: "vllm/vllm-openai:v0.11.0"}}},
			}
			switch {
			case tc.preStop > 0 && tc.exec:
				pod.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sleep", fmt.Sprint(tc.preStop)}}}}
			case tc.preStop > 0:
				pod.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: tc.preStop}}}
			}
			if _, err := c.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, ctx, tc.name+" Running", func() bool {
				p, err := c.Get(ctx, tc.name, metav1.GetOptions{})
				return err == nil && p.Status.Phase == corev1.PodRunning && procs.addr(tc.name) != ""
			})
			answer := make(chan string, 1)
			go func() { answer <- streamAnswer(ctx, procs.addr(tc.name)) }()
			time.Sleep(300 * time.Millisecond) // the answer is under way
			deleted := time.Now()
			if err := c.Delete(ctx, tc.name, metav1.DeleteOptions{GracePeriodSeconds: tc.deleteIn}); err != nil {
				t.Fatal(err)
			}
			got := <-answer
			if done := strings.HasSuffix(got, "[DONE]"); done != tc.complete {
				t.Errorf("answer completed %v, want %v (ended: %q)", done, tc.complete, got)
			}
			waitFor(t, ctx, tc.name+" gone", func() bool {
				_, err := c.Get(ctx, tc.name, metav1.GetOptions{})
				return apierrors.IsNotFound(err)
			})
			if took := time.Since(deleted); took < tc.goneIn || (tc.deleteIn != nil && took > time.Duration(*tc.deleteIn+5)*time.Second) {
				t.Errorf("pod gone %s after its deletion, want at least %s (and within the deletion's grace period)", took.Round(time.Millisecond), tc.goneIn)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// streamAnswer asks for a streamed answer and returns its last data line
// ("[DONE]" when it completed) or the error that cut it.
func streamAnswer(ctx context.Context, addr string) string {
	body := `{"model":"google/gemma-3-1b-it","stream":true,"messages":[{"role":"user","content":"Explain Quantum Computing in simple terms."}]}`
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "error: " + err.Error()
	}
	defer resp.Body.Close()
	last := ""
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			last = line
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Sprintf("cut after %q: %v", last, err)
	}
	return last
}
