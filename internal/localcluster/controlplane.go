// Package localcluster runs a real Kubernetes control plane on this machine,
// for the tests and the local GKE emulator (scripts/emulator): etcd,
// kube-apiserver (with aggregation) and, when asked, kube-controller-manager,
// from the binaries scripts/build-k8s-cache.sh builds, with stand-ins for
// what a cluster's nodes and Managed Prometheus's operator do. Only
// loopback is used. The vllm-hpa binary never links it.
package localcluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/vllm-hpa/vllm-hpa/internal/gmp"
	"github.com/vllm-hpa/vllm-hpa/internal/nativemetrics"
)

// BinDirEnv names the directory holding etcd, kube-apiserver,
// kube-controller-manager and kubectl (set by `make test`).
const BinDirEnv = "VLLM_HPA_K8S_BIN"

// RequireEnv, when set, makes missing binaries a test failure, not a skip.
const RequireEnv = "VLLM_HPA_REQUIRE_K8S"

// Options select what runs.
type Options struct {
	// Controllers starts kube-controller-manager with the deployment,
	// replicaset, endpointslice, serviceaccount, garbage collector and HPA
	// controllers.
	Controllers bool
	// HPASyncPeriod is the HPA controller's sync period (default 15s, GKE's).
	HPASyncPeriod time.Duration
	// PodMonitoringCRD installs the PodMonitoring CRD.
	PodMonitoringCRD bool
	// ExtraAPIServerArgs are appended to kube-apiserver's command line.
	ExtraAPIServerArgs []string
	// Aggregation routes kube-apiserver's connections to Services through a
	// CONNECT proxy in this process (see ServeService).
	Aggregation bool
	// RunPods starts a PodRunner (see Pods) in place of scheduler and kubelet.
	RunPods bool
	// PodStartDelay is how long a pod takes to start (its image pull).
	PodStartDelay time.Duration
	// PodReady and PodProbePeriod are the PodRunner's readiness probe;
	// GPUNodes its cluster autoscaler.
	PodReady       func(*corev1.Pod) bool
	PodProbePeriod time.Duration
	GPUNodes       GPUNodes
	// PodStarted and PodStopped are the PodRunner's hooks; KubeletPort its
	// Node's kubelet port (see PodRunner).
	PodStarted func(*corev1.Pod) error
	// PodCrashBackoff is the kubelet's first restart back-off for a pod
	// whose PodStarted says it exits (*ExitError).
	PodCrashBackoff time.Duration
	PodStopped      func(*corev1.Pod)
	// PodDrain: the PodRunner runs a deleted pod's preStop sleep and grace
	// period (PodRunner.Drain).
	PodDrain bool
	// EndpointLag delays the EndpointSlice controller's processing of pod
	// changes (its --endpointslice-updates-batch-period): a terminating
	// pod stays an endpoint of its Services that long, as kube-proxy's
	// programming lags on a node (0: at once).
	EndpointLag time.Duration
	KubeletPort int32
	// StaticToken, if set, is a bearer token kube-apiserver accepts for an
	// administrator (as GKE accepts Google OAuth tokens).
	StaticToken string
	// Monitoring starts a stand-in for the Managed Prometheus operator that
	// sets every PodMonitoring's status (see Operator), and installs the
	// PodMonitoring and OperatorConfig CRDs and gmp-public/config, as GKE
	// does. Implies the CRD.
	Monitoring bool
	// TargetStatus enables target status in gmp-public/config (GKE's
	// default: off).
	TargetStatus bool
	// OperatorWritesTargets: the operator stand-in reports targets itself
	// (a collector of the caller's otherwise).
	OperatorWritesTargets bool
	// NativeMetrics, if set, makes the cluster one that serves GKE's native
	// custom metrics: the AutoscalingMetric CRD is installed, and the HPA
	// controller reads autoscaling.gke.io|... metrics from this handler (a
	// custom metrics API read) whatever APIService is registered, as GKE's
	// does (see startNativeFront).
	NativeMetrics http.Handler
	// OnlyUsedAPIs turns off the built-in APIs that neither vllm-hpa nor
	// the controllers here use (unusedAPIs). Every namespace's deletion
	// costs the namespace controller two LISTs and a DELETE of each
	// namespaced type; the CLI's tests delete about a hundred namespaces
	// (37,347 API requests in all, 33,174 with these off, and 14 % less
	// CPU).
	// vllm-hpa finds the types it scans by discovery, so it sees fewer
	// here; the emulator, which users run, serves them all.
	OnlyUsedAPIs bool
	// OneProc runs etcd, kube-apiserver and kube-controller-manager at
	// GOMAXPROCS=1: a test run starts many control planes beside each
	// other on few cores, where each Go runtime's spinning threads and
	// hand-offs cost CPU (and, in a VM, system time) for nothing. The
	// CLI's tests took 197 CPU-seconds with it against 209 without, in
	// the same wall time. Not for a cluster one measures a server through
	// (a user's emulator, whose port-forwards tune's knee search goes
	// through); the emulator's tests, which check that tune runs there
	// but not the knee it finds, take it (--lean).
	OneProc bool
}

// unusedAPIs are the APIs OnlyUsedAPIs turns off: groups and namespaced
// resources nothing here creates or reads. Not ingressclasses (the
// DefaultIngressClass admission plugin lists them: the server is never
// ready without), nor the core group's, coordination's (the API server's
// identity leases) or networking's Service IP addresses.
var unusedAPIs = strings.Join([]string{
	"batch/v1=false", "policy/v1=false", "resource.k8s.io/v1=false",
	"flowcontrol.apiserver.k8s.io/v1=false", "events.k8s.io/v1=false",
	"certificates.k8s.io/v1/podcertificaterequests=false",
	"apps/v1/daemonsets=false", "apps/v1/statefulsets=false", "apps/v1/controllerrevisions=false",
	"networking.k8s.io/v1/ingresses=false", "networking.k8s.io/v1/networkpolicies=false",
	"storage.k8s.io/v1/csistoragecapacities=false",
}, ",")

// ControlPlane is a running etcd + kube-apiserver (+ controller manager).
type ControlPlane struct {
	Dir        string       // temporary directory: certificates, data, logs
	Kubeconfig string       // admin kubeconfig file
	Config     *rest.Config // admin client configuration
	Client     kubernetes.Interface
	Dynamic    dynamic.Interface
	URL        string
	PKI        *PKIFiles

	// Pods is the running PodRunner (Options.RunPods); set Hold to keep pods
	// from becoming Ready.
	Pods *PodRunner
	// Operator is the Managed Prometheus stand-in (Options.Monitoring).
	Operator *MonitoringOperator
	// PodAddress, if set, gives the loopback address that serves a pod's
	// port, so that kube-apiserver can proxy to the pod (pods/proxy):
	// the pod's IP is never dialed.
	PodAddress func(namespace, name string, port int) (string, bool)

	procs   []*process
	oneProc bool // Options.OneProc
	egress  *egressProxy
	pki     *pki
	cancel  context.CancelFunc
	stops   []func() // in-process servers, stopped after the processes
}

// PKIFiles are the certificate files, for components that need them.
type PKIFiles struct {
	CA, FrontProxyCA, SAKey string
	CAPEM                   []byte
}

type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// BinDir returns the binaries' directory, or "" when not configured.
func BinDir() string { return os.Getenv(BinDirEnv) }

// StartForTests starts a control plane for t, stopped when t ends. When
// the binaries are not configured t is skipped (failed when RequireEnv is
// set); a control plane that fails to start fails t, what started of it
// stopped.
func StartForTests(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	if BinDir() == "" {
		Skip(t, nil, fmt.Errorf("%s is not set: run `make test`, or export %s=$(scripts/build-k8s-cache.sh)", BinDirEnv, BinDirEnv))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp, err := Start(ctx, opts)
	if err != nil {
		if cp != nil {
			cp.Stop()
		}
		t.Fatalf("control plane: %v", err)
	}
	t.Cleanup(cp.Stop)
	return cp
}

// Skip skips or fails t when cp is nil, per RequireEnv.
func Skip(t testing.TB, cp *ControlPlane, why error) {
	t.Helper()
	if cp != nil {
		return
	}
	if os.Getenv(RequireEnv) != "" {
		t.Fatalf("real control plane required but unavailable: %v", why)
	}
	t.Skipf("no real control plane: %v", why)
}

// Start starts the control plane. Stop it with Stop. A start whose port
// another process took between its choice and its bind is started again
// on other ports (twice at most).
func Start(ctx context.Context, opts Options) (*ControlPlane, error) {
	for attempt := 1; ; attempt++ {
		cp, portTaken, err := start(ctx, opts)
		if !portTaken || attempt == 3 || ctx.Err() != nil {
			return cp, err
		}
	}
}

// start is one attempt of Start's; portTaken says it failed because a
// port was taken.
func start(ctx context.Context, opts Options) (cp *ControlPlane, portTaken bool, err error) {
	bin := BinDir()
	dir, err := os.MkdirTemp("", "vllm-hpa-kube-")
	if err != nil {
		return nil, false, err
	}
	cp = &ControlPlane{Dir: dir, oneProc: opts.OneProc}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, cp.logTails())
			portTaken = cp.portTaken()
			cp.Stop()
			cp = nil
		}
	}()
	p, err := writePKI(dir)
	if err != nil {
		return cp, false, err
	}
	cp.pki = p
	cp.PKI = &PKIFiles{CA: p.caFile, FrontProxyCA: p.frontProxyCA, SAKey: p.saKey, CAPEM: p.caPEM}

	ports, err := FreePorts(3)
	if err != nil {
		return cp, false, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	if err := cp.spawn("etcd", filepath.Join(bin, "etcd"),
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL,
		"--unsafe-no-fsync", "--log-level", "warn",
	); err != nil {
		return cp, false, err
	}

	cp.URL = fmt.Sprintf("https://127.0.0.1:%d", ports[2])
	args := []string{
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
		"--secure-port", strconv.Itoa(ports[2]),
		"--cert-dir", filepath.Join(dir, "apiserver-certs"),
		"--tls-cert-file", p.servingCert, "--tls-private-key-file", p.servingKey,
		"--client-ca-file", p.caFile,
		"--service-account-key-file", p.saKey,
		"--service-account-signing-key-file", p.saKey,
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-cluster-ip-range", "10.0.0.0/24",
		"--authorization-mode", "RBAC",
		// Pods are created by controllers with no ServiceAccount token
		// controller running; the kubelet stand-in mounts nothing.
		"--disable-admission-plugins", "ServiceAccount",
		// Aggregation: the front-proxy identity the aggregator presents to
		// extension API servers such as the custom metrics adapter.
		"--requestheader-client-ca-file", p.frontProxyCA,
		"--requestheader-allowed-names", "front-proxy-client",
		"--requestheader-username-headers", "X-Remote-User",
		"--requestheader-group-headers", "X-Remote-Group",
		"--requestheader-extra-headers-prefix", "X-Remote-Extra-",
		"--proxy-client-cert-file", p.frontProxyCert,
		"--proxy-client-key-file", p.frontProxyKey,
		// The kubernetes Service endpoints may not be loopback.
		"--endpoint-reconciler-type", "none",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--v", "0",
	}
	tokens := p.adminToken + ",admin,admin,system:masters\n"
	if opts.StaticToken != "" {
		tokens += opts.StaticToken + ",token-admin,token-admin,system:masters\n"
	}
	tokenFile := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(tokens), 0o600); err != nil {
		return cp, false, err
	}
	args = append(args, "--token-auth-file", tokenFile)
	if opts.Aggregation {
		extra, err := cp.startEgress()
		if err != nil {
			return cp, false, err
		}
		args = append(args, extra...)
	}
	if opts.OnlyUsedAPIs {
		args = append(args, "--runtime-config="+unusedAPIs)
	}
	args = append(args, opts.ExtraAPIServerArgs...)
	if err := cp.spawn("kube-apiserver", filepath.Join(bin, "kube-apiserver"), args...); err != nil {
		return cp, false, err
	}

	cp.Config = &rest.Config{
		Host:            cp.URL,
		TLSClientConfig: rest.TLSClientConfig{CAData: p.caPEM},
		BearerToken:     p.adminToken,
		QPS:             200,
		Burst:           400,
		WarningHandler:  rest.NoWarnings{},
	}
	if cp.Client, err = kubernetes.NewForConfig(cp.Config); err != nil {
		return cp, false, err
	}
	if cp.Dynamic, err = dynamic.NewForConfig(cp.Config); err != nil {
		return cp, false, err
	}
	if err := cp.waitReady(ctx); err != nil {
		return cp, false, err
	}
	if cp.Kubeconfig, err = cp.writeKubeconfig(p); err != nil {
		return cp, false, err
	}

	if opts.NativeMetrics != nil {
		if err := cp.InstallCRD(ctx, nativemetrics.CRD); err != nil {
			return cp, false, err
		}
	}
	if opts.Controllers {
		sync := opts.HPASyncPeriod
		if sync == 0 {
			sync = 15 * time.Second
		}
		kcmConfig := cp.Kubeconfig
		if opts.NativeMetrics != nil {
			if kcmConfig, err = cp.startNativeFront(opts.NativeMetrics); err != nil {
				return cp, false, err
			}
		}
		if err := cp.spawn("kube-controller-manager", filepath.Join(bin, "kube-controller-manager"),
			"--kubeconfig", kcmConfig,
			"--controllers", "deployment,replicaset,endpointslice,serviceaccount,garbagecollector,namespace,horizontalpodautoscaling",
			"--leader-elect=false",
			"--use-service-account-credentials=false",
			"--secure-port=0",
			"--horizontal-pod-autoscaler-sync-period", sync.String(),
			"--concurrent-deployment-syncs", "5",
			"--endpointslice-updates-batch-period", opts.EndpointLag.String(),
			"--v", "0",
		); err != nil {
			return cp, false, err
		}
	}
	if opts.PodMonitoringCRD || opts.Monitoring {
		if err := cp.InstallCRD(ctx, gmp.CRD); err != nil {
			return cp, false, err
		}
	}
	if opts.Monitoring {
		if err := cp.InstallCRD(ctx, gmp.OperatorConfigCRD); err != nil {
			return cp, false, err
		}
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: gmp.OperatorConfigNamespace}}
		if _, err := cp.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return cp, false, err
		}
		if err := setTargetStatus(ctx, cp.Dynamic, opts.TargetStatus); err != nil {
			return cp, false, err
		}
	}
	bg, cancel := context.WithCancel(context.Background())
	cp.cancel = cancel
	if cp.egress != nil {
		cp.egress.watch(bg)
	}
	if opts.RunPods {
		cp.Pods = &PodRunner{Client: cp.Client, StartDelay: opts.PodStartDelay, Started: opts.PodStarted, Stopped: opts.PodStopped, Drain: opts.PodDrain, KubeletPort: opts.KubeletPort,
			Ready: opts.PodReady, ProbePeriod: opts.PodProbePeriod, GPUNodes: opts.GPUNodes, CrashBackoff: opts.PodCrashBackoff}
		if err := cp.Pods.ensureNode(ctx); err != nil {
			return cp, false, err
		}
		go cp.Pods.Run(bg)
	}
	if opts.Monitoring {
		cp.Operator = &MonitoringOperator{Dynamic: cp.Dynamic, Client: cp.Client, WriteTargets: opts.OperatorWritesTargets}
		go cp.Operator.Run(bg)
	}
	return cp, false, nil
}

func (cp *ControlPlane) spawn(name, path string, args ...string) error {
	logPath := filepath.Join(cp.Dir, name+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The control plane dials only loopback and its egress proxy: never
	// through an HTTP proxy the caller's environment names (tests send
	// anything not loopback to one that does not exist).
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		return strings.EqualFold(k, "HTTPS_PROXY") || strings.EqualFold(k, "HTTP_PROXY") || strings.EqualFold(k, "NO_PROXY")
	})
	if cp.oneProc {
		cmd.Env = append(cmd.Env, "GOMAXPROCS=1")
	}
	// Its own process group, and killed if the test binary dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	pr := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); logFile.Close(); close(pr.done) }()
	cp.procs = append(cp.procs, pr)
	return nil
}

// waitReady waits until kube-apiserver is ready, or one of the processes
// started so far (etcd too: the server would wait for it) has exited.
func (cp *ControlPlane) waitReady(ctx context.Context) error {
	for {
		var status int
		res := cp.Client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).StatusCode(&status)
		// Exits first: a server whose etcd lost its port to another
		// control plane's etcd would be ready on that one's store.
		for _, p := range cp.procs {
			select {
			case <-p.done:
				return fmt.Errorf("%s exited", p.name)
			default:
			}
		}
		if res.Error() == nil && status == 200 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-apiserver not ready: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (cp *ControlPlane) writeKubeconfig(p *pki) (string, error) {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cp.URL, CertificateAuthorityData: p.caPEM}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: p.adminToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "admin"}
	kc.CurrentContext = "test"
	path := filepath.Join(cp.Dir, "kubeconfig")
	return path, clientcmd.WriteToFile(*kc, path)
}

// InstallCRD creates a CRD from YAML and waits until it is Established.
func (cp *ControlPlane) InstallCRD(ctx context.Context, crdYAML []byte) error {
	var obj map[string]any
	if err := yaml.Unmarshal(crdYAML, &obj); err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: obj}
	crds := cp.Dynamic.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	if _, err := crds.Create(ctx, u, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	for {
		got, err := crds.Get(ctx, u.GetName(), metav1.GetOptions{})
		if err == nil {
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("custom resource definition %s not established: %w", u.GetName(), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop stops the processes in reverse order (kube-apiserver before etcd) and
// removes the directory.
func (cp *ControlPlane) Stop() {
	if cp == nil {
		return
	}
	if cp.cancel != nil {
		cp.cancel()
	}
	if cp.egress != nil {
		cp.egress.listener.Close()
	}
	for i := len(cp.procs) - 1; i >= 0; i-- {
		p := cp.procs[i]
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	for _, stop := range cp.stops {
		stop()
	}
	os.RemoveAll(cp.Dir)
}

// logTails returns the end of each component's log, for failures.
func (cp *ControlPlane) logTails() string {
	var b strings.Builder
	for _, p := range cp.procs {
		data, _ := os.ReadFile(p.log)
		s := string(data)
		if len(s) > 3000 {
			s = s[len(s)-3000:]
		}
		fmt.Fprintf(&b, "--- %s log (tail) ---\n%s\n", p.name, s)
	}
	return b.String()
}

// FreePorts returns n loopback ports free now, below the kernel's
// ephemeral range when there is room: a port the kernel handed out for
// :0 comes from that range, from which it also takes the source port of
// every outgoing connection, and one of the many a test run opens took
// an API server's port between its choice and its bind ("bind: address
// already in use"). Ports below the range are taken only by a listener's
// bind; Start retries if one was (portTaken).
func FreePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	lo, hi := 10000, ephemeralStart()
	for tries := 0; len(ports) < n && tries < 100 && hi-lo >= 1000; tries++ {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", lo+rand.IntN(hi-lo)))
		if err != nil {
			continue // taken: another
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for len(ports) < n { // no room below the range: the kernel's choice
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// ephemeralStart is the first port of the kernel's ephemeral range (Linux;
// IANA's 49152 elsewhere).
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 49152
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 49152
	}
	v, err := strconv.Atoi(f[0])
	if err != nil {
		return 49152
	}
	return v
}

// portTaken reports whether a process of the control plane exited because
// its port was taken after FreePorts chose it.
func (cp *ControlPlane) portTaken() bool {
	for _, p := range cp.procs {
		select {
		case <-p.done:
			if data, _ := os.ReadFile(p.log); strings.Contains(string(data), "address already in use") {
				return true
			}
		default:
		}
	}
	return false
}
