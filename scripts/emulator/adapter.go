package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spf13/pflag"
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
)

// stackdriverProvider answers the custom metrics API the way the Custom
// Metrics Stackdriver Adapter does for prometheus.googleapis.com|NAME|gauge:
// per-pod values of the gauge from the scraped samples (the latest within
// five minutes), and 404 "Cannot find metric(s)" when there are none.
type stackdriverProvider struct {
	prom   *prometheus
	client kubernetes.Interface
}

var podsResource = schema.GroupResource{Resource: "pods"}

// gauge maps the adapter's metric name to the Prometheus gauge.
func gauge(metric string) (string, bool) {
	parts := strings.Split(metric, "|")
	if len(parts) != 3 || parts[0] != "prometheus.googleapis.com" || parts[2] != "gauge" {
		return "", false
	}
	return parts[1], true
}

func (p *stackdriverProvider) value(namespace, pod string, info provider.CustomMetricInfo) (*custom_metrics.MetricValue, bool) {
	name, ok := gauge(info.Metric)
	if !ok || info.GroupResource != podsResource {
		return nil, false
	}
	s, ok := p.prom.value(name, namespace, pod)
	if !ok {
		return nil, false
	}
	return &custom_metrics.MetricValue{
		DescribedObject: custom_metrics.ObjectReference{Kind: "Pod", Namespace: namespace, Name: pod, APIVersion: "/v1"},
		Metric:          custom_metrics.MetricIdentifier{Name: info.Metric},
		Timestamp:       metav1.NewTime(s.at),
		Value:           *resource.NewMilliQuantity(int64(s.value*1000), resource.DecimalSI),
	}, true
}

func (p *stackdriverProvider) GetMetricByName(ctx context.Context, name types.NamespacedName, info provider.CustomMetricInfo, _ labels.Selector) (*custom_metrics.MetricValue, error) {
	if v, ok := p.value(name.Namespace, name.Name, info); ok {
		return v, nil
	}
	return nil, provider.NewMetricNotFoundForError(info.GroupResource, info.Metric, name.Name)
}

func (p *stackdriverProvider) GetMetricBySelector(ctx context.Context, namespace string, selector labels.Selector, info provider.CustomMetricInfo, _ labels.Selector) (*custom_metrics.MetricValueList, error) {
	pods, err := p.client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
	if err != nil {
		return nil, err
	}
	list := &custom_metrics.MetricValueList{}
	for _, pod := range pods.Items {
		if v, ok := p.value(namespace, pod.Name, info); ok {
			list.Items = append(list.Items, *v)
		}
	}
	if len(list.Items) == 0 {
		return nil, provider.NewMetricNotFoundError(info.GroupResource, info.Metric)
	}
	return list, nil
}

func (p *stackdriverProvider) ListAllMetrics() []provider.CustomMetricInfo {
	var out []provider.CustomMetricInfo
	for _, g := range []string{"vllm:num_requests_running", "vllm:num_requests_waiting"} {
		out = append(out, provider.CustomMetricInfo{GroupResource: podsResource, Namespaced: true, Metric: "prometheus.googleapis.com|" + g + "|gauge"})
	}
	return out
}

// startAdapter serves the custom metrics API on a loopback port with
// sigs.k8s.io/custom-metrics-apiserver, delegating authentication and
// authorization to kube-apiserver as the real adapter does.
func startAdapter(ctx context.Context, kubeconfig, certDir string, p *stackdriverProvider) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
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
