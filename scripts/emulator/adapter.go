package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/metrics/pkg/apis/custom_metrics"
	"k8s.io/metrics/pkg/apis/external_metrics"
	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"
	"sigs.k8s.io/custom-metrics-apiserver/pkg/provider"

	"github.com/vllm-hpa/vllm-hpa/internal/gcpfake"
	"github.com/vllm-hpa/vllm-hpa/internal/localcluster"
)

// stackdriverProvider answers the custom metrics API the way the Custom
// Metrics Stackdriver Adapter (v0.16.9 and later) does for
// prometheus.googleapis.com|NAME|gauge, reading Cloud Monitoring (the
// fake, where the Managed Prometheus stand-in writes) as its pod's
// identity, as the real one authenticates:
//   - at start, the pod acts as its KSA's Workload Identity (the Google
//     service account its annotation names then, or its own principal)
//     and lists metric descriptors: any failure exits the process, its
//     last log line the error (the pod restarts in CrashLoopBackOff);
//   - on each query it reads the metric's descriptor as that identity:
//     any failure (no token, a grant missing or not propagated yet, the
//     API off) and a metric type Cloud Monitoring does not know yet alike
//     answer 404 "the server could not find the descriptor for metric";
//   - then the pods' newest samples within 5 minutes (series of one pod
//     added up), only the pods that have one: an empty list when none.
type stackdriverProvider struct {
	client kubernetes.Interface
	gcp    *gcpfake.GCP
	target monitoredCluster

	mu         sync.Mutex
	identities map[types.UID]gcpfake.Workload // adapter pods running, as they started
}

var podsResource = schema.GroupResource{Resource: "pods"}

// adapterPods select the adapter's pods (upstream's labels).
const adapterPods = "k8s-app=custom-metrics-stackdriver-adapter"

// isAdapter recognises an adapter pod.
func isAdapter(pod *corev1.Pod) bool {
	return pod.Labels["k8s-app"] == "custom-metrics-stackdriver-adapter"
}

// startPod is the adapter process starting in pod: it takes its identity
// from the GKE metadata server and lists metric descriptors, or exits.
func (p *stackdriverProvider) startPod(pod *corev1.Pod) error {
	w := gcpfake.Workload{Project: p.target.project, Namespace: pod.Namespace, KSA: pod.Spec.ServiceAccountName}
	if w.KSA == "" {
		w.KSA = "default"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if sa, err := p.client.CoreV1().ServiceAccounts(pod.Namespace).Get(ctx, w.KSA, metav1.GetOptions{}); err == nil {
		w.Annotation = sa.Annotations["iam.gke.io/gcp-service-account"]
	}
	if err := p.readable(w, "monitoring.metricDescriptors.list"); err != nil {
		url := fmt.Sprintf(`"https://monitoring.googleapis.com/v3/projects/%s/metricDescriptors?alt=json&filter=resource.labels.project_id+%%3D+%%22%s%%22+AND+resource.labels.cluster_name+%%3D+%%22%s%%22"`, p.target.project, p.target.project, p.target.cluster)
		exit := &localcluster.ExitError{Code: 255}
		if terminationFromLogs(pod) {
			exit.Message = time.Now().UTC().Format("F0102 15:04:05.000000") + "       1 adapter.go:152] Failed request to stackdriver api: Get " + url + ": " + err.Error()
		}
		return exit
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.identities == nil {
		p.identities = map[types.UID]gcpfake.Workload{}
	}
	p.identities[pod.UID] = w
	return nil
}

// terminationFromLogs reports whether the pod's container asks for its
// last log lines as its termination message (FallbackToLogsOnError);
// otherwise the kubelet has none to show.
func terminationFromLogs(pod *corev1.Pod) bool {
	return len(pod.Spec.Containers) > 0 && pod.Spec.Containers[0].TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError
}

// stopPod forgets a stopped adapter pod.
func (p *stackdriverProvider) stopPod(pod *corev1.Pod) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.identities, pod.UID)
}

// readable says why w cannot use permission on the project's Cloud
// Monitoring now (nil: it can).
func (p *stackdriverProvider) readable(w gcpfake.Workload, permission string) error {
	now := time.Now()
	member, err := p.gcp.Authenticate(w, now)
	if err != nil {
		return err
	}
	return p.gcp.Allowed(w.Project, member, permission, now)
}

// identity is the serving adapter's: a running adapter pod's, as it
// started.
func (p *stackdriverProvider) identity(ctx context.Context) (gcpfake.Workload, bool) {
	pods, err := p.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: adapterPods})
	if err != nil {
		return gcpfake.Workload{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pod := range pods.Items {
		if w, ok := p.identities[pod.UID]; ok && pod.DeletionTimestamp == nil {
			return w, true
		}
	}
	return gcpfake.Workload{}, false
}

// gauge maps the adapter's metric name to the Prometheus gauge.
func gauge(metric string) (string, bool) {
	parts := strings.Split(metric, "|")
	if len(parts) != 3 || parts[0] != "prometheus.googleapis.com" || parts[2] != "gauge" {
		return "", false
	}
	return parts[1], true
}

// noDescriptor is the real adapter's answer to any failure reading a
// metric's descriptor.
func noDescriptor(metricType string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusNotFound, Reason: metav1.StatusReasonNotFound,
		Message: fmt.Sprintf("the server could not find the descriptor for metric %q", metricType)}}
}

// values are the newest samples of the metric for pods of namespace, by
// pod, as the adapter reads them.
func (p *stackdriverProvider) values(ctx context.Context, namespace string, pods []string, info provider.CustomMetricInfo) (map[string]float64, error) {
	name, ok := gauge(info.Metric)
	if !ok || info.GroupResource != podsResource {
		return nil, provider.NewMetricNotFoundError(info.GroupResource, info.Metric)
	}
	metricType := "prometheus.googleapis.com/" + name + "/gauge"
	w, ok := p.identity(ctx)
	if !ok || p.readable(w, "monitoring.metricDescriptors.get") != nil || !p.gcp.Monitoring.Known(p.target.project, metricType) {
		return nil, noDescriptor(metricType)
	}
	filter := gcpfake.Filter{
		{Key: "resource.labels.project_id", Values: []string{p.target.project}},
		{Key: "resource.labels.location", Values: []string{p.target.location}},
		{Key: "resource.labels.cluster", Values: []string{p.target.cluster}},
		{Key: "resource.labels.namespace", Values: []string{namespace}},
		{Key: "metric.labels.pod", Values: pods},
	}
	out := map[string]float64{}
	for _, s := range p.gcp.Monitoring.Latest(p.target.project, metricType, filter, 5*time.Minute) {
		out[s.Metric["pod"]] += s.Value
	}
	return out, nil
}

func metricValue(namespace, pod string, info provider.CustomMetricInfo, v float64) custom_metrics.MetricValue {
	return custom_metrics.MetricValue{
		DescribedObject: custom_metrics.ObjectReference{Kind: "Pod", Namespace: namespace, Name: pod, APIVersion: "/v1"},
		Metric:          custom_metrics.MetricIdentifier{Name: info.Metric},
		// The adapter stamps its own clock, not the sample's.
		Timestamp: metav1.Now(),
		Value:     *resource.NewMilliQuantity(int64(v*1000), resource.DecimalSI),
	}
}

func (p *stackdriverProvider) GetMetricByName(ctx context.Context, name types.NamespacedName, info provider.CustomMetricInfo, _ labels.Selector) (*custom_metrics.MetricValue, error) {
	values, err := p.values(ctx, name.Namespace, []string{name.Name}, info)
	if err != nil {
		return nil, err
	}
	v, ok := values[name.Name]
	if !ok {
		return nil, provider.NewMetricNotFoundForError(info.GroupResource, info.Metric, name.Name)
	}
	mv := metricValue(name.Namespace, name.Name, info, v)
	return &mv, nil
}

func (p *stackdriverProvider) GetMetricBySelector(ctx context.Context, namespace string, selector labels.Selector, info provider.CustomMetricInfo, _ labels.Selector) (*custom_metrics.MetricValueList, error) {
	pods, err := p.client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, pod := range pods.Items {
		names = append(names, pod.Name)
	}
	values, err := p.values(ctx, namespace, names, info)
	if err != nil {
		return nil, err
	}
	list := &custom_metrics.MetricValueList{}
	for _, pod := range names {
		if v, ok := values[pod]; ok {
			list.Items = append(list.Items, metricValue(namespace, pod, info, v))
		}
	}
	return list, nil
}

func (p *stackdriverProvider) ListAllMetrics() []provider.CustomMetricInfo {
	var out []provider.CustomMetricInfo
	for _, g := range []string{"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"} {
		out = append(out, provider.CustomMetricInfo{GroupResource: podsResource, Namespaced: true, Metric: "prometheus.googleapis.com|" + g + "|gauge"})
	}
	return out
}

// startAdapter serves the custom metrics API on a loopback port with
// sigs.k8s.io/custom-metrics-apiserver, delegating authentication and
// authorization to kube-apiserver as the real adapter does.
func startAdapter(ctx context.Context, kubeconfig, certDir string, p *stackdriverProvider) (string, error) {
	// A port from below the ephemeral range: one the kernel chose for :0
	// may be any outgoing connection's source port before the adapter
	// binds it.
	ports, err := localcluster.FreePorts(1)
	if err != nil {
		return "", err
	}
	port := ports[0]
	b := &basecmd.AdapterBase{Name: "vllm-hpa-emulator-adapter", FlagSet: pflag.NewFlagSet("adapter", pflag.ContinueOnError)}
	b.InstallFlags()
	if err := b.Flags().Parse([]string{
		fmt.Sprintf("--secure-port=%d", port), "--bind-address=127.0.0.1", "--cert-dir=" + certDir,
		"--lister-kubeconfig=" + kubeconfig, "--authentication-kubeconfig=" + kubeconfig, "--authorization-kubeconfig=" + kubeconfig,
		"--discovery-interval=30s",
	}); err != nil {
		return "", err
	}
	b.WithCustomMetrics(p)
	b.WithExternalMetrics(p)
	errc := make(chan error, 1)
	go func() { errc <- b.Run(ctx) }()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		select {
		case err := <-errc:
			return "", fmt.Errorf("metrics adapter: %w", err)
		default:
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "", fmt.Errorf("metrics adapter did not listen on %s", addr)
}

// GetExternalMetric: the emulated project has no Cloud Monitoring metrics
// beyond the scraped pods, so every external metric is unknown, as the
// Stackdriver adapter answers for a metric type that does not exist.
func (p *stackdriverProvider) GetExternalMetric(ctx context.Context, namespace string, _ labels.Selector, info provider.ExternalMetricInfo) (*external_metrics.ExternalMetricValueList, error) {
	return nil, provider.NewMetricNotFoundError(schema.GroupResource{Group: "external.metrics.k8s.io"}, info.Metric)
}

func (p *stackdriverProvider) ListAllExternalMetrics() []provider.ExternalMetricInfo { return nil }
