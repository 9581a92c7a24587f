package localcluster

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkControlPlane measures what one control plane costs the
// machine: the wall time to a ready API server (and controllers), and the
// CPU its processes (etcd, kube-apiserver, kube-controller-manager) use
// starting, then idling, as a testbed or an emulator does between a
// test's requests; the emulator's (default) server and the CLI testbeds'
// (watches closed by the server every 5-10 s, unused APIs off), and the
// testbeds' with every API, side by side. make test
// runs 5 testbeds and up to 4 emulators at once, on 2 cores: what they
// spend idle is what the tests cannot. Measured here (2026-12-04, each
// process at GOMAXPROCS=1, OneProc): the emulator's 3.1 CPU-s to start, 1.0 CPU-s
// a minute idle; a testbed's 2.3 and 0.96, and 3.1 and 1.5 with every
// API on (the watches closed every few seconds re-watch every type);
// 1.2 s to stop (SIGTERM, the API server's graceful shutdown). Their
// minutes are what costs: a test that waits longer on a busy machine keeps
// its control plane's idle work going.
//
//	go test ./internal/localcluster -run '^$' -bench ControlPlane -benchtime 3x
//
// VLLM_HPA_BENCH_IDLE sets the idle time (default 20s).
func BenchmarkControlPlane(b *testing.B) {
	if BinDir() == "" {
		b.Skipf("%s is not set", BinDirEnv)
	}
	idle := 20 * time.Second
	if v, err := time.ParseDuration(os.Getenv("VLLM_HPA_BENCH_IDLE")); err == nil {
		idle = v
	}
	for _, variant := range []struct {
		name     string
		extra    []string
		onlyUsed bool
	}{
		{"emulator", nil, false},
		{"testbed", []string{"--min-request-timeout=5"}, true},
		{"testbed-all-apis", []string{"--min-request-timeout=5"}, false},
	} {
		b.Run(variant.name, func(b *testing.B) {
			var startCPU, idleCPU, ready, stop time.Duration
			for i := 0; i < b.N; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
				began := time.Now()
				cp, err := Start(ctx, Options{
					Controllers: true, HPASyncPeriod: time.Second, Aggregation: true,
					RunPods: true, Monitoring: true, TargetStatus: true, OperatorWritesTargets: true,
					ExtraAPIServerArgs: variant.extra, OnlyUsedAPIs: variant.onlyUsed, OneProc: true,
				})
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				ready += time.Since(began)
				atReady := cp.cpu(b)
				time.Sleep(idle)
				startCPU += atReady
				idleCPU += cp.cpu(b) - atReady
				stopping := time.Now()
				cp.Stop()
				stop += time.Since(stopping)
			}
			n := float64(b.N)
			b.ReportMetric(ready.Seconds()/n, "ready-s")
			b.ReportMetric(startCPU.Seconds()/n, "start-cpu-s")
			b.ReportMetric(idleCPU.Seconds()/n/idle.Minutes(), "idle-cpu-s/min")
			b.ReportMetric(stop.Seconds()/n, "stop-s")
		})
	}
}

// cpu is the CPU time (user and system) the control plane's processes have
// used so far, from /proc.
func (cp *ControlPlane) cpu(b *testing.B) time.Duration {
	var total time.Duration
	for _, p := range cp.procs {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/stat")
		if err != nil {
			b.Fatal(err)
		}
		// Fields after the command's closing parenthesis: utime and stime
		// are the 12th and 13th, in clock ticks (100 per second here).
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
		for _, s := range f[11:13] {
			ticks, _ := strconv.Atoi(s)
			total += time.Duration(ticks) * 10 * time.Millisecond
		}
	}
	return total
}
