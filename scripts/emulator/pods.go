package main

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/config"
	"github.com/vllm-hpa/vllm-hpa/internal/gcpfake"
	"github.com/vllm-hpa/vllm-hpa/internal/localcluster"
	"github.com/vllm-hpa/vllm-hpa/internal/vllmsim"
)

// simulators runs one vLLM simulator per vLLM pod, on a loopback port of
// its own: the pod's "container". Pods of other workloads (the adapter)
// just become Ready.
type simulators struct {
	cfg vllmsim.Config // Model is taken from each pod's MODEL_ID
	// weights add their stage to cfg.LoadTime by where they come from;
	// gcp is where a bucket's are read, as the pod's KSA, in project.
	weights Weights
	gcp     *gcpfake.GCP
	project string

	mu    sync.Mutex
	procs map[string]*vllmsim.Process // namespace/pod -> its server
}

func newSimulators(cfg vllmsim.Config, weights Weights, gcp *gcpfake.GCP, project string) *simulators {
	return &simulators{cfg: cfg, weights: weights, gcp: gcp, project: project, procs: map[string]*vllmsim.Process{}}
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
	weights, err := s.loadWeights(pod, c, &cfg)
	if err != nil {
		return err
	}
	cfg.LoadTime += weights
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

// loadWeights is how long the pod's server takes to get its weights, by
// where its --model says they are: a gs:// path is streamed by the Run:ai
// streamer as the pod's own Workload Identity, which must read the bucket
// (else vLLM exits at start, as it does when the streamer is refused);
// anything else is downloaded from Hugging Face. cfg.Root becomes the
// path, as vLLM's /v1/models reports it.
func (s *simulators) loadWeights(pod *corev1.Pod, c *corev1.Container, cfg *vllmsim.Config) (time.Duration, error) {
	args := expandArgs(c)
	model := flagValue(args, "--model")
	bucket, dir, ok := config.Workload{ModelSource: model}.ModelBucket()
	if !ok {
		return s.weights.download(), nil
	}
	if flagValue(args, "--load-format") != "runai_streamer" {
		return 0, &localcluster.ExitError{Code: 1, Message: "huggingface_hub.errors.HFValidationError: Repo id must be in the form 'repo_name' or 'namespace/repo_name': '" + model + "'"}
	}
	ksa := pod.Spec.ServiceAccountName
	if ksa == "" {
		ksa = "default"
	}
	now := time.Now()
	who, err := s.gcp.Authenticate(gcpfake.Workload{Project: s.project, Namespace: pod.Namespace, KSA: ksa}, now)
	if err != nil {
		return 0, &localcluster.ExitError{Code: 1, Message: "runai_model_streamer: " + err.Error()}
	}
	bytes, err := s.gcp.Storage.ReadWeights(bucket, dir+"/", who, now)
	if err != nil {
		return 0, &localcluster.ExitError{Code: 1, Message: "runai_model_streamer: " + err.Error()}
	}
	cfg.Root = model
	if served := flagValue(args, "--served-model-name"); served != "" {
		cfg.Model = served
	}
	return s.weights.stream(bytes), nil
}

// expandArgs are the container's command and arguments with $(VAR)
// references to its plain env values expanded, as the kubelet does.
func expandArgs(c *corev1.Container) []string {
	vars := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			vars[e.Name] = e.Value
		}
	}
	var out []string
	for _, a := range append(append([]string{}, c.Command...), c.Args...) {
		for k, v := range vars {
			a = strings.ReplaceAll(a, "$("+k+")", v)
		}
		out = append(out, a)
	}
	return out
}

// flagValue is --name=value's value in args ("" when absent).
func flagValue(args []string, name string) string {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}
