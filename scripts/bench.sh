#!/usr/bin/env bash
# Benchmarks, measured in one run on this machine; writes docs/benchmarks.md.
#  1. CLI start-up (--help, render) and binary size, against kubectl built
#     from the same cache.
#  2. The Kubernetes steps on the emulator (pod start delay 0): vllm-hpa's
#     deploy, monitor, adapter, hpa against the walkthrough done with kubectl
#     (the same manifests, kubectl apply and kubectl wait for the same
#     conditions, one process per command): wall time and API requests,
#     counted by a proxy at kube-apiserver's door.
#  3. Reaction time (load start -> first SuccessfulRescale -> pods Ready)
#     with GKE's intervals (15 s scrape, 15 s HPA sync) and a fast profile
#     (2 s, 2 s), each against the bound those intervals set.
#  4. The load generator's peak rate (scripts/bench-load.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bin_dir=$(scripts/build-k8s-cache.sh)
make -s build
(cd scripts/emulator && CGO_ENABLED=0 go build -o ../../bin/vllm-hpa-emulator .)
export PATH="$PWD/bin:$PATH"
kubectl="$bin_dir/kubectl"
work=$(mktemp -d -t vllm-hpa-bench-XXXXXX)
emu_pid=
stop_emu() { if [ -n "$emu_pid" ]; then kill -TERM "$emu_pid" 2>/dev/null || true; wait "$emu_pid" 2>/dev/null || true; emu_pid=; fi; }
trap 'stop_emu; rm -rf "$work"' EXIT

# median wall time in ms of N runs of a command
median_ms() {
  local n=$1; shift
  python3 - "$n" "$@" <<'PY'
import subprocess, sys, time, statistics
n = int(sys.argv[1]); cmd = sys.argv[2:]
ts = []
for _ in range(n):
    t = time.perf_counter(); subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); ts.append((time.perf_counter() - t) * 1000)
print(f"{statistics.median(ts):.1f}")
PY
}
ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }

echo "1. start-up and size" >&2
help_ours=$(median_ms 30 vllm-hpa --help)
help_kubectl=$(median_ms 30 "$kubectl" --help)
render_ours=$(median_ms 30 vllm-hpa render --project bench-project)
size_ours=$(stat -c %s bin/vllm-hpa)
size_kubectl=$(stat -c %s "$kubectl")

start_emu() { # dir hpa-sync
  mkdir -p "$1"
  vllm-hpa-emulator --dir "$1" --k8s-bin "$bin_dir" --hpa-sync-period "$2" --pod-start-delay "$3" --count-requests > "$1/log" 2>&1 &
  emu_pid=$!
  for _ in $(seq 600); do [ -f "$1/env" ] && return; sleep 0.1; done
  echo "emulator did not start" >&2; cat "$1/log" >&2; exit 1
}
counts() { curl -s "http://$(cat "$emu_dir/counter")/counts"; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])['$2'])" "$1"; }

echo "2. vllm-hpa against the kubectl walkthrough" >&2
emu_dir=$work/emu
start_emu "$emu_dir" 15s 0s
# shellcheck disable=SC1091
. "$emu_dir/env"
export VLLM_HPA_KUBE_KUBECONFIG=$emu_dir/kubeconfig-counted
export KUBECONFIG=$emu_dir/kubeconfig-counted
counts >/dev/null
t0=$(date +%s.%N)
for s in deploy monitor adapter hpa; do vllm-hpa "$s" >/dev/null 2>&1; done
t1=$(date +%s.%N)
ours=$(counts)
vllm-hpa cleanup hpa adapter monitor deploy >/dev/null 2>&1
for s in deploy monitor adapter hpa; do vllm-hpa render "$s" > "$work/$s.yaml"; done
counts >/dev/null
t2=$(date +%s.%N)
k() { "$kubectl" "$@" >/dev/null; }
k apply --server-side --field-manager=walkthrough -f "$work/deploy.yaml"
k wait --for=condition=Available deployment/vllm-gemma-deployment --timeout=5m
k apply --server-side --field-manager=walkthrough -f "$work/monitor.yaml"
k wait --for=jsonpath='{.status.conditions[0].status}'=True podmonitoring/gemma-pod-monitoring --timeout=5m
k apply --server-side --field-manager=walkthrough -f "$work/adapter.yaml"
k wait -n custom-metrics --for=condition=Available deployment/custom-metrics-stackdriver-adapter --timeout=5m
k wait --for=condition=Available apiservice/v1beta1.custom.metrics.k8s.io apiservice/v1beta2.custom.metrics.k8s.io apiservice/v1beta1.external.metrics.k8s.io --timeout=5m
k apply --server-side --field-manager=walkthrough -f "$work/hpa.yaml"
k wait --for=jsonpath='{.status.conditions[?(@.type=="ScalingActive")].reason}'=ValidMetricFound hpa/gemma-server-hpa --timeout=5m
t3=$(date +%s.%N)
theirs=$(counts)
ours_s=$(python3 -c "print(f'{$t1-$t0:.1f}')"); theirs_s=$(python3 -c "print(f'{$t3-$t2:.1f}')")
ours_req=$(field "$ours" requests); theirs_req=$(field "$theirs" requests)
k delete -f "$work/hpa.yaml" -f "$work/adapter.yaml" -f "$work/monitor.yaml" -f "$work/deploy.yaml" --ignore-not-found --wait=true || true

echo "3. reaction time, GKE intervals" >&2
vllm-hpa up >/dev/null 2>&1
vllm-hpa verify --load --rate 10 --expect-replicas 3 --wait-timeout 5m --report "$work/gke.json" >/dev/null 2>&1
stop_emu
echo "3. reaction time, fast profile" >&2
emu_dir=$work/emu-fast
start_emu "$emu_dir" 2s 1s
. "$emu_dir/env"
export VLLM_HPA_MONITORING_INTERVAL=2s
vllm-hpa up >/dev/null 2>&1
vllm-hpa verify --load --rate 10 --expect-replicas 3 --wait-timeout 5m --report "$work/fast.json" >/dev/null 2>&1
stop_emu
react() { python3 -c "import json; t=json.load(open('$1'))['timeline']; print(f\"{t['firstScaleUp']:.1f} s to the first scale-up, {t['scaledUpReady']:.1f} s to its pods Ready\")"; }
gke=$(react "$work/gke.json"); fast=$(react "$work/fast.json")

echo "4. load generator" >&2
load=$(scripts/bench-load.sh 5 2>/dev/null | tail -3)

cat > docs/benchmarks.md <<MD
# Benchmarks

Written by \`scripts/bench.sh\` on $(date -u +%Y-%m-%d) on $(nproc) cores ($(uname -sr), $(go version | awk '{print $3}')); every figure
below was measured in that one run. Ratios are vllm-hpa against the baseline measured beside it.

## Start-up and size (median of 30 runs)

| | vllm-hpa | kubectl (same cache) | ratio |
|---|---|---|---|
| \`--help\` | ${help_ours} ms | ${help_kubectl} ms | $(ratio "$help_ours" "$help_kubectl") |
| \`render\` (whole stack) | ${render_ours} ms | | $(ratio "$render_ours" "$help_kubectl") of kubectl --help |
| binary size | $((size_ours / 1024 / 1024)) MiB | $((size_kubectl / 1024 / 1024)) MiB | $(ratio "$size_ours" "$size_kubectl") |

## The Kubernetes steps on the emulator (pod start delay 0)

vllm-hpa \`deploy\`, \`monitor\`, \`adapter\`, \`hpa\` (one process each) against the walkthrough done with kubectl: the same
rendered manifests with \`kubectl apply --server-side\` and \`kubectl wait\` for the same conditions, one process per
command. Requests counted by a proxy in front of kube-apiserver.

| | vllm-hpa | kubectl walkthrough | ratio |
|---|---|---|---|
| wall time | ${ours_s} s | ${theirs_s} s | $(ratio "$ours_s" "$theirs_s") |
| API requests | ${ours_req} | ${theirs_req} | $(ratio "$ours_req" "$theirs_req") |

vllm-hpa also checks more than the kubectl waits (pods Ready, Service endpoints, the conflict preflight).

## Reaction time (walkthrough load: 10 requests/s of 1 s answers, target 4)

- GKE's intervals (15 s scrape, 15 s HPA sync; bound for the first scale-up: 30 s plus a pod start of 0 s): ${gke}.
- Fast profile (2 s scrape, 2 s HPA sync; bound 4 s plus a pod start of 1 s): ${fast}.

## Load generator peak rate (5 s each against the simulator on loopback)

\`\`\`
${load}
\`\`\`
MD
echo "wrote docs/benchmarks.md" >&2
