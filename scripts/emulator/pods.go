package main

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/vllmsim"
)

// simulators runs one vLLM simulator per vLLM pod, on a loopback port of
// its own: the pod's "container". Pods of other workloads (the adapter)
// just become Ready.
type simulators struct {
	cfg vllmsim.Config // Model is taken from each pod's MODEL_ID

	mu    sync.Mutex
	procs map[string]*vllmsim.Process // namespace/pod -> its server
}

func newSimulators(cfg vllmsim.Config) *simulators {
	return &simulators{cfg: cfg, procs: map[string]*vllmsim.Process{}}
}

// isVLLM recognises the vLLM server container by its command.
func isVLLM(pod *corev1.Pod) (*corev1.Container, bool) {
	for i, c := range pod.Spec.Containers {
		if strings.Contains(strings.Join(append(append([]string{}, c.Command...), c.Args...), " "), "vllm.entrypoints.openai.api_server") {
			return &pod.Spec.Containers[i], true
		}
	}
	return nil, false
}

func (s *simulators) start(pod *corev1.Pod) error {
	c, ok := isVLLM(pod)
	if !ok {
		return nil
	}
	key := pod.Namespace + "/" + pod.Name
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.procs[key]; ok {
		return nil
	}
	cfg := s.cfg
	for _, e := range c.Env {
		if e.Name == "MODEL_ID" && e.Value != "" {
			cfg.Model = e.Value
		}
	}
	p, err := vllmsim.Listen("127.0.0.1:0", cfg)
	if err != nil {
		return err
	}
	s.procs[key] = p
	return nil
}

// stop is SIGTERM to the pod's server (vllmsim.Process.Terminate: as vLLM,
// it cuts every request in flight).
func (s *simulators) stop(pod *corev1.Pod) {
	key := pod.Namespace + "/" + pod.Name
	s.mu.Lock()
	p := s.procs[key]
	delete(s.procs, key)
	s.mu.Unlock()
	if p != nil {
		p.Terminate()
	}
}

// healthy is the vLLM pod's readiness probe (GET /health, as the
// deployment's); a pod of another workload is always ready.
func (s *simulators) healthy(pod *corev1.Pod) bool {
	if _, ok := isVLLM(pod); !ok {
		return true
	}
	addr, err := s.addr(pod.Namespace, pod.Name)
	if err != nil {
		return false
	}
	client := http.Client{Timeout: 5 * time.Second} // the probe's timeoutSeconds
	resp, err := client.Get("http://" + addr + "/health")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// addr is where pod's server listens.
func (s *simulators) addr(namespace, pod string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.procs[namespace+"/"+pod]
	if !ok {
		return "", errors.New("no server runs in pod " + namespace + "/" + pod)
	}
	return p.Addr(), nil
}

func (s *simulators) stopAll() {
	s.mu.Lock()
	procs := s.procs
	s.procs = map[string]*vllmsim.Process{}
	s.mu.Unlock()
	for _, p := range procs {
		p.Terminate()
	}
}
