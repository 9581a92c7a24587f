package cmd

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/vllm-hpa/vllm-hpa/internal/environ"
	"github.com/vllm-hpa/vllm-hpa/internal/kube"
	"github.com/vllm-hpa/vllm-hpa/internal/localcluster"
	"github.com/vllm-hpa/vllm-hpa/internal/turns"
)

// testbed is one real control plane and what the tests add beside it:
// etcd, kube-apiserver (with aggregation through an in-process egress
// proxy, and watches closed by the server every few seconds),
// kube-controller-manager with the HPA loop at 1s, a pod runner in the
// kubelet's place, a Managed Prometheus operator stand-in, and a fake
// custom metrics backend behind the adapter's Service.
//
// A test holds one testbed for its whole run: tests on different testbeds
// run in parallel and never see each other's cluster-wide objects (the
// adapter, its identity) or knobs (the operator's verdicts, held pods, the
// metric values).
type testbed struct {
	cp      *localcluster.ControlPlane
	metrics *localcluster.FakeMetrics
	stop    func()
	// podServer, when set, is the loopback address that serves every
	// pod's port (kube-apiserver's pods/proxy); unset, pods serve nothing.
	podServer atomic.Pointer[string]

	adminOnce sync.Once
	admin     *kube.Client

	// ready is how long after the pool's start the testbed was ready,
	// logged by its first test (once: reported).
	ready    time.Duration
	reported atomic.Bool
}

// testbedsEnv sets how many testbeds run at once (default 5).
const testbedsEnv = "VLLM_HPA_TEST_CLUSTERS"

var beds struct {
	once sync.Once
	// done is closed when every start has ended; then all holds the
	// testbeds that started, and err says why none did.
	done chan struct{}
	all  []*testbed
	err  error

	// queue hands the testbeds out, the longest tests first.
	queue turns.Queue[*testbed]
}

// longestFirst are the tests that hold a testbed longest (alone, in the
// order of their longest hold, a subtest as its test): each gets a
// testbed before any test not listed, or listed after it. In go test's
// order, file by file, the longest ran last and alone: make test's CLI
// lane ended with TestTokenNeverShown, TestFaults and TestKilledUpRecovers
// on 3 of its 5 testbeds.
var longestFirst = []string{
	"TestTokenNeverShown", "TestConcurrentRuns", "TestFaults", "TestNativeBackend",
	"TestKilledUpRecovers", "TestVerifyLoadTimeline", "TestExitCodeForTimeoutDiffersFromFailure",
	"TestVerifyEachCheck", "TestSharedIdentityIsCounted", "TestUpAndCleanupWholeStack",
	"TestChangedGSANameIsReleased",
}

// startTestbeds starts the pool, all control planes at once, each handed
// out as soon as it is ready (in make test, where everything starts
// together, 13.6 to 34 s after the pool's start, against 3.2 s alone).
func startTestbeds() {
	n := 5
	if v, err := strconv.Atoi(os.Getenv(testbedsEnv)); err == nil && v > 0 {
		n = v
	}
	beds.done = make(chan struct{})
	if localcluster.BinDir() == "" {
		beds.err = fmt.Errorf("%s is not set: run `make test`", localcluster.BinDirEnv)
		close(beds.done)
		return
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs []string
	var started []*testbed
	begin := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tb, err := startTestbed()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err.Error())
				return
			}
			tb.ready = time.Since(begin)
			started = append(started, tb)
			beds.queue.Put(tb)
		}()
	}
	go func() {
		wg.Wait()
		beds.all = started
		if len(started) == 0 {
			beds.err = fmt.Errorf("no control plane started: %s", strings.Join(errs, "; "))
		}
		close(beds.done)
	}()
}

func startTestbed() (*testbed, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// GKE's native custom metrics, served from the testbed's fake values
	// (bound once the testbed exists).
	var native atomic.Pointer[http.Handler]
	cp, err := localcluster.Start(ctx, localcluster.Options{
		NativeMetrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if h := native.Load(); h != nil {
				(*h).ServeHTTP(w, r)
				return
			}
			http.Error(w, "native metrics not started", http.StatusServiceUnavailable)
		}),
		Controllers:   true,
		HPASyncPeriod: time.Second,
		Aggregation:   true,
		RunPods:       true,
		PodStartDelay: 300 * time.Millisecond,
		Monitoring:    true,
		// Target status on, reported by the operator stand-in: the pods
		// of these tests serve no /metrics (the emulator covers target
		// status off).
		TargetStatus:          true,
		OperatorWritesTargets: true,
		// The server closes every watch after 5-10s, so every wait in
		// these tests also survives watches closed by the server.
		ExtraAPIServerArgs: []string{"--min-request-timeout=5"},
		StaticToken:        gkeToken,
		OnlyUsedAPIs:       true,
		OneProc:            true,
	})
	if err != nil {
		return nil, err
	}
	tb := &testbed{cp: cp, metrics: &localcluster.FakeMetrics{Client: cp.Client}}
	h := localcluster.NativeMetricsFromFake(tb.metrics, cp.Dynamic)
	native.Store(&h)
	cp.PodAddress = func(namespace, name string, port int) (string, bool) {
		if addr := tb.podServer.Load(); addr != nil {
			return *addr, true
		}
		return "", false
	}
	tb.metrics.Set(runningMetric, "0")
	srv := tb.metrics.Server()
	cp.ServeService("custom-metrics", "custom-metrics-stackdriver-adapter", 443, strings.TrimPrefix(srv.URL, "https://"))
	tb.stop = func() { srv.Close(); cp.Stop() }
	return tb, nil
}

// acquire gives t a testbed of its own until t ends; it skips (or, with
// VLLM_HPA_REQUIRE_K8S, fails) the test when no control plane can run.
func acquire(t *testing.T) *testbed {
	t.Helper()
	beds.once.Do(startTestbeds)
	waited := time.Now()
	got := beds.queue.Take(turns.Rank(longestFirst, t.Name()))
	var tb *testbed
	select {
	case tb = <-got:
	case <-beds.done:
		if beds.err != nil {
			localcluster.Skip(t, nil, beds.err)
		}
		tb = <-got
	}
	held := time.Now()
	if !tb.reported.Swap(true) {
		t.Logf("testbed: ready %s after the pool's start", tb.ready.Round(time.Millisecond))
	}
	t.Cleanup(func() {
		tb.settle(t)
		t.Logf("testbed: waited %s, held %s", held.Sub(waited).Round(time.Millisecond), time.Since(held).Round(time.Millisecond))
		beds.queue.Put(tb)
	})
	return tb
}

// sharedNamespace is the namespace of a name every test's adapter uses.
const sharedNamespace = "custom-metrics"

// settle waits, before the next test gets the testbed, until the adapter's
// namespace is not being deleted: tests tidy up with cleanup --wait=false
// (tidyKube), and the next one may create that namespace itself, or check
// that it does not exist. The workload namespaces, each test's own, go in
// the background.
func (tb *testbed) settle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		ns, err := tb.cp.Client.CoreV1().Namespaces().Get(ctx, sharedNamespace, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return err == nil && ns.DeletionTimestamp == nil, nil
	})
	if err != nil {
		t.Errorf("testbed: namespace %s still being deleted after the test: %v", sharedNamespace, err)
	}
}

// stopTestbeds stops every control plane (TestMain), all at once: each
// takes a second or more (the API server's graceful shutdown).
func stopTestbeds() {
	if beds.done == nil {
		return // no test asked for one
	}
	<-beds.done
	var wg sync.WaitGroup
	for _, tb := range beds.all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tb.stop()
		}()
	}
	wg.Wait()
}

// env is the environment the CLI gets on this testbed: its kubeconfig, and
// a discovery cache kept with its control plane.
func (tb *testbed) env() map[string]string {
	return map[string]string{
		"VLLM_HPA_KUBE_KUBECONFIG": tb.cp.Kubeconfig,
		"KUBECACHEDIR":             filepath.Join(tb.cp.Dir, "kubecache"),
	}
}

// kube is a client for the test itself.
func (tb *testbed) kube(t *testing.T) *kube.Client {
	t.Helper()
	tb.adminOnce.Do(func() {
		var err error
		if tb.admin, err = kube.New(tb.cp.Config, environ.New(tb.env(), "")); err != nil {
			panic(err)
		}
	})
	return tb.admin
}

// instance is one stack of vllm-hpa on a testbed: its instance name and
// workload namespace.
type instance struct {
	name, namespace string
	tb              *testbed
}

// newInstance runs the test in parallel with the others, on a testbed of
// its own.
func newInstance(t *testing.T, name, namespace string) instance {
	t.Helper()
	t.Parallel()
	return instance{name: name, namespace: namespace, tb: acquire(t)}
}

// another is a second instance on the same testbed.
func (i instance) another(name, namespace string) instance {
	return instance{name: name, namespace: namespace, tb: i.tb}
}
