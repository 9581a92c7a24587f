package localcluster_test

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vllm-hpa/vllm-hpa/internal/localcluster"
)

func TestControlPlaneStarts(t *testing.T) {
	cp := localcluster.StartForTests(t, localcluster.Options{PodMonitoringCRD: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := cp.Client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.Major != "1" {
		t.Errorf("server version %+v", v)
	}
	if _, err := cp.Client.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Dynamic.Resource(gmpResource).Namespace("default").List(ctx, metav1.ListOptions{}); err != nil {
		t.Fatalf("PodMonitoring CRD not served: %v", err)
	}
}
