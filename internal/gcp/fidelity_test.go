package gcp_test

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	container "google.golang.org/api/container/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vllm-hpa/vllm-hpa/internal/exitcode"
	"github.com/vllm-hpa/vllm-hpa/internal/gcp"
	"github.com/vllm-hpa/vllm-hpa/internal/gcpfake"
)

// The errors IAM gives about a service account it does not see yet, told
// apart by code and by what the write added, never by message: a policy
// naming the new account as its one added member is refused
// INVALID_ARGUMENT; the account itself answers NOT_FOUND or
// PERMISSION_DENIED without another reason. What waiting does not cure
// is neither.
func TestNotYetVisible(t *testing.T) {
	cases := []struct {
		err             error
		member, account bool
	}{
		{gcpfake.Plain(codes.InvalidArgument, "Service account metrics-adapter-gsa@my-proj.iam.gserviceaccount.com does not exist.").GRPC(), true, false},
		{gcpfake.Plain(codes.NotFound, "Unknown service account").GRPC(), false, true},
		{gcpfake.PermissionDenied("iam.googleapis.com", "iam.serviceAccounts.getIamPolicy", "").GRPC(), false, true},
		{gcpfake.Plain(codes.Unavailable, "try again").GRPC(), false, false},
		// A disabled API is not cured by waiting for the account: it is
		// said as itself (exit 5), not retried as "not yet visible".
		{gcpfake.ServiceDisabled("iam.googleapis.com", "1").GRPC(), false, false},
	}
	for _, c := range cases {
		if got := gcp.MemberNotYetVisible(c.err); got != c.member {
			t.Errorf("MemberNotYetVisible(%v) = %v", c.err, got)
		}
		if got := gcp.AccountNotYetVisible(c.err); got != c.account {
			t.Errorf("AccountNotYetVisible(%v) = %v", c.err, got)
		}
	}
}

// WhileNew retries only what its predicate accepts, says why each time,
// and gives up when the window has passed.
func TestWhileNew(t *testing.T) {
	notYet := status.Error(codes.InvalidArgument, "Service account x@p.iam.gserviceaccount.com does not exist.")
	t.Run("until visible", func(t *testing.T) {
		calls, said := 0, 0
		err := gcp.WhileNew(context.Background(), func(msg string) {
			said++
			if !strings.Contains(msg, "IAM does not see service account x yet") || !strings.Contains(msg, "InvalidArgument") {
				t.Errorf("message %q", msg)
			}
		}, "service account x", gcp.MemberNotYetVisible, func(context.Context) error {
			if calls++; calls < 3 {
				return notYet
			}
			return nil
		})
		if err != nil || calls != 3 || said != 2 {
			t.Errorf("err %v after %d calls, %d messages", err, calls, said)
		}
	})
	t.Run("other errors at once", func(t *testing.T) {
		calls := 0
		denied := status.Error(codes.PermissionDenied, "denied")
		err := gcp.WhileNew(context.Background(), nil, "x", gcp.MemberNotYetVisible, func(context.Context) error { calls++; return denied })
		if err != denied || calls != 1 {
			t.Errorf("err %v after %d calls", err, calls)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		defer func(w time.Duration) { gcp.NewResourceWindow = w }(gcp.NewResourceWindow)
		gcp.NewResourceWindow = 600 * time.Millisecond
		calls := 0
		err := gcp.WhileNew(context.Background(), nil, "service account x", gcp.MemberNotYetVisible, func(context.Context) error { calls++; return notYet })
		if exitcode.Of(err) != exitcode.Timeout || !errors.Is(err, notYet) || calls < 2 || !strings.Contains(err.Error(), "IAM still does not see service account x after 600ms") {
			t.Errorf("err %v (exit %d) after %d calls, want a timeout wrapping the last refusal", err, exitcode.Of(err), calls)
		}
		// Classify keeps the timeout.
		if err := gcp.Classify(err, "grant"); exitcode.Of(err) != exitcode.Timeout {
			t.Errorf("classified as exit %d: %v", exitcode.Of(err), err)
		}
	})
	t.Run("interrupted", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		err := gcp.WhileNew(ctx, func(string) { cancel() }, "x", gcp.MemberNotYetVisible, func(context.Context) error { return notYet })
		if err != context.Canceled {
			t.Errorf("err %v", err)
		}
	})
}

// Classify keeps what a wait already classified, and passes what is not
// a Google error through unchanged.
func TestClassifyKeepsClassified(t *testing.T) {
	timeout := exitcode.With(exitcode.Timeout, errors.New("IAM still does not see it"))
	if err := gcp.Classify(timeout, "grant"); exitcode.Of(err) != exitcode.Timeout || !errors.Is(err, timeout) {
		t.Errorf("classified timeout: exit %d %v", exitcode.Of(err), err)
	}
	plain := errors.New("dial tcp: refused")
	if err := gcp.Classify(plain, "grant"); exitcode.Of(err) != exitcode.Failure || !errors.Is(err, plain) {
		t.Errorf("plain error: exit %d %v", exitcode.Of(err), err)
	}
}

// RESTConfig reaches the endpoint --endpoint-type names: public and private
// pin the cluster's CA; the DNS endpoint has a publicly trusted certificate.
func TestRESTConfigEndpointTypes(t *testing.T) {
	ca := base64.StdEncoding.EncodeToString([]byte("CA PEM"))
	full := &container.Cluster{
		Name: "gpu-hpa", Endpoint: "34.1.2.3", MasterAuth: &container.MasterAuth{ClusterCaCertificate: ca},
		PrivateClusterConfig:        &container.PrivateClusterConfig{PrivateEndpoint: "10.0.0.2"},
		ControlPlaneEndpointsConfig: &container.ControlPlaneEndpointsConfig{DnsEndpointConfig: &container.DNSEndpointConfig{Endpoint: "gke-abc.us-central1.gke.goog"}},
	}
	ts := oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "t"})
	for _, c := range []struct {
		endpointType, host string
		pinned             bool
	}{
		{"public", "https://34.1.2.3", true},
		{"private", "https://10.0.0.2", true},
		{"dns", "https://gke-abc.us-central1.gke.goog", false},
	} {
		rc, err := gcp.RESTConfig(full, ts, c.endpointType)
		if err != nil {
			t.Fatalf("%s: %v", c.endpointType, err)
		}
		if rc.Host != c.host || (string(rc.CAData) == "CA PEM") != c.pinned || rc.WrapTransport == nil {
			t.Errorf("%s: host %s, CA %q, want %s pinned=%v", c.endpointType, rc.Host, rc.CAData, c.host, c.pinned)
		}
	}
	bare := &container.Cluster{Name: "gpu-hpa", MasterAuth: &container.MasterAuth{ClusterCaCertificate: ca}}
	for typ, want := range map[string]string{
		"public":  "use --endpoint-type private or dns",
		"private": "has no private endpoint",
		"dns":     "--enable-dns-access",
	} {
		if _, err := gcp.RESTConfig(bare, ts, typ); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s on a cluster without it: %v, want %q", typ, err, want)
		}
	}
}

// GPU nodes may come later: from node auto-provisioning with an
// accelerator limit or from a ComputeClass; Autopilot says what it checks.
func TestGPUNodes(t *testing.T) {
	wants := gcp.ClusterWants{Project: "my-proj", Location: "us-central1", Cluster: "gpu-hpa", Accelerator: "nvidia-l4"}
	gpu := gcp.GPUNodes
	standard := func() *container.Cluster {
		return &container.Cluster{NodePools: []*container.NodePool{{Name: "default", Config: &container.NodeConfig{}}}}
	}
	if p := gpu(standard(), wants); p.OK || !strings.Contains(p.Fix, "--enable-autoprovisioning --max-accelerator type=nvidia-l4") {
		t.Errorf("no GPU pool, no NAP: %+v", p)
	}
	nap := standard()
	nap.Autoscaling = &container.ClusterAutoscaling{EnableNodeAutoprovisioning: true, ResourceLimits: []*container.ResourceLimit{{ResourceType: "nvidia-l4", Maximum: 4}}}
	if p := gpu(nap, wants); !p.OK || !strings.Contains(p.Message, "node auto-provisioning creates them on demand (up to 4 GPUs)") {
		t.Errorf("NAP with an nvidia-l4 limit: %+v", p)
	}
	otherNAP := standard()
	otherNAP.Autoscaling = &container.ClusterAutoscaling{EnableNodeAutoprovisioning: true, ResourceLimits: []*container.ResourceLimit{{ResourceType: "nvidia-tesla-t4", Maximum: 4}}}
	if p := gpu(otherNAP, wants); p.OK {
		t.Errorf("NAP limited to another accelerator passes: %+v", p)
	}
	withClass := wants
	withClass.ComputeClasses = []string{"l4-class"}
	if p := gpu(standard(), withClass); !p.OK || !strings.Contains(p.Message, "ComputeClass l4-class") {
		t.Errorf("ComputeClass: %+v", p)
	}
	autopilot := &container.Cluster{Autopilot: &container.Autopilot{Enabled: true}}
	if p := gpu(autopilot, wants); !p.OK || !strings.Contains(p.Message, "not checked: the project's GPU quota") {
		t.Errorf("Autopilot: %+v", p)
	}
}

// How the GPU nodes get the vLLM image: the pools that pull it whole are
// named with the lines that cut the pull; image streaming counts for an
// image in Artifact Registry or public on Docker Hub, on Container-Optimized
// OS; a secondary boot disk's image cache needs image streaming on; a
// pool's own setting wins over the cluster's default. Never a failure.
func TestImageStart(t *testing.T) {
	wants := gcp.ClusterWants{Project: "my-proj", Location: "us-central1", Cluster: "gpu-hpa", Accelerator: "nvidia-l4"}
	const hub, registry, ghcr = "vllm/vllm-openai:v0.11.0", "us-docker.pkg.dev/my-proj/vllm/vllm-openai:v0.11.0", "ghcr.io/acme/vllm:1"
	l4 := []*container.AcceleratorConfig{{AcceleratorType: "nvidia-l4", AcceleratorCount: 1}}
	pool := func(name string, streaming *bool, disks ...*container.SecondaryBootDisk) *container.NodePool {
		np := &container.NodePool{Name: name, Config: &container.NodeConfig{Accelerators: l4, MachineType: "g2-standard-8", Spot: true, SecondaryBootDisks: disks},
			Autoscaling: &container.NodePoolAutoscaling{Enabled: true, MinNodeCount: 0, MaxNodeCount: 4}}
		if streaming != nil {
			np.Config.GcfsConfig = &container.GcfsConfig{Enabled: *streaming}
		}
		return np
	}
	on, off := true, false
	cache := &container.SecondaryBootDisk{DiskImage: "global/images/vllm", Mode: "CONTAINER_IMAGE_CACHE"}
	cpuPool := &container.NodePool{Name: "cpu", Config: &container.NodeConfig{}}
	withDefault := func(streaming bool, pools ...*container.NodePool) *container.Cluster {
		return &container.Cluster{NodePools: pools, NodePoolDefaults: &container.NodePoolDefaults{NodeConfigDefaults: &container.NodeConfigDefaults{GcfsConfig: &container.GcfsConfig{Enabled: streaming}}}}
	}
	ubuntu := pool("ubuntu", &on)
	ubuntu.Config.ImageType = "UBUNTU_CONTAINERD"
	for _, tc := range []struct {
		name    string
		cluster *container.Cluster
		image   string
		slow    bool
		want    []string
		not     []string
	}{
		{"whole pull, no streaming", &container.Cluster{NodePools: []*container.NodePool{cpuPool, pool("l4", nil)}}, hub, true,
			[]string{"a whole pull before vLLM starts on l4", "gcloud container node-pools update l4 --cluster gpu-hpa --location us-central1 --project my-proj --enable-image-streaming",
				"node-pools create l4-cached --cluster gpu-hpa --location us-central1 --project my-proj --machine-type g2-standard-8 --accelerator type=nvidia-l4,count=1",
				"--secondary-boot-disk=disk-image=global/images/IMAGE,mode=CONTAINER_IMAGE_CACHE --spot --enable-autoscaling --num-nodes 0 --min-nodes 0 --max-nodes 4"},
			[]string{"cpu", "Artifact Registry repository"}},
		{"streaming, Docker Hub", &container.Cluster{NodePools: []*container.NodePool{pool("l4", &on)}}, hub, false, []string{"image streaming on l4"}, []string{"whole pull", "gcloud"}},
		{"streaming, Artifact Registry", &container.Cluster{NodePools: []*container.NodePool{pool("l4", &on)}}, registry, false, []string{"image streaming on l4"}, []string{"whole pull"}},
		{"streaming, a registry it does not serve", &container.Cluster{NodePools: []*container.NodePool{pool("l4", &on)}}, ghcr, true,
			[]string{"a whole pull before vLLM starts on l4", "copy it into an Artifact Registry repository"}, nil},
		{"streaming as the cluster's default", withDefault(true, pool("l4", nil)), hub, false, []string{"image streaming on l4"}, []string{"whole pull"}},
		{"a pool that turned the default off", withDefault(true, pool("l4", &off)), hub, true, []string{"a whole pull before vLLM starts on l4"}, nil},
		{"a pool that turned streaming on", withDefault(false, pool("l4", &on)), hub, false, []string{"image streaming on l4"}, nil},
		{"streaming on Ubuntu nodes", &container.Cluster{NodePools: []*container.NodePool{ubuntu}}, hub, true,
			[]string{"a whole pull before vLLM starts on ubuntu", "--image-type COS_CONTAINERD"}, []string{"node-pools update ubuntu"}},
		{"boot disk cache with streaming", &container.Cluster{NodePools: []*container.NodePool{pool("l4", &on, cache)}}, ghcr, false,
			[]string{"the image cache of a secondary boot disk on l4"}, []string{"whole pull"}},
		{"boot disk cache without streaming", &container.Cluster{NodePools: []*container.NodePool{pool("l4", &off, cache)}}, registry, true,
			[]string{"a whole pull before vLLM starts on l4"}, nil},
		{"one fast pool, one slow", &container.Cluster{NodePools: []*container.NodePool{pool("fast", &on, cache), pool("slow", nil)}}, registry, true,
			[]string{"secondary boot disk on fast", "a whole pull before vLLM starts on slow", "node-pools update slow"}, []string{"update fast"}},
		{"no GPU pool yet", &container.Cluster{NodePools: []*container.NodePool{cpuPool}}, hub, false, []string{"no node pool of nvidia-l4 to judge"}, nil},
		{"Autopilot, Docker Hub", &container.Cluster{Autopilot: &container.Autopilot{Enabled: true}}, hub, false, []string{"Autopilot streams vllm/vllm-openai:v0.11.0"}, []string{"whole"}},
		{"Autopilot, a registry it does not serve", &container.Cluster{Autopilot: &container.Autopilot{Enabled: true}}, ghcr, true, []string{"pulled whole", "Artifact Registry"}, nil},
	} {
		p, slow := gcp.ImageStart(tc.cluster, wants, tc.image)
		if !p.OK || p.Check != "image start" || slow != tc.slow {
			t.Errorf("%s: %+v slow %v, want an OK image start check, slow %v", tc.name, p, slow, tc.slow)
		}
		for _, w := range tc.want {
			if !strings.Contains(p.Message, w) {
				t.Errorf("%s: %q lacks %q", tc.name, p.Message, w)
			}
		}
		for _, n := range tc.not {
			if strings.Contains(p.Message, n) {
				t.Errorf("%s: %q has %q", tc.name, p.Message, n)
			}
		}
	}
	for image, want := range map[string]bool{hub: true, "ubuntu": true, "docker.io/vllm/vllm-openai:v0.11.0": true, registry: true, "gcr.io/p/vllm:1": true, "eu.gcr.io/p/vllm:1": true,
		ghcr: false, "quay.io/x/vllm:1": false, "localhost:5000/vllm:1": false, "mirror.gcr.io/vllm:1": false, "docker.pkg.dev.evil.com/x:1": false} {
		if got := gcp.Streamable(image); got != want {
			t.Errorf("Streamable(%q) = %v", image, got)
		}
	}
}
