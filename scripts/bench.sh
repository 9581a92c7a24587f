#!/usr/bin/env bash
# Benchmarks, measured in one run on this machine; writes docs/benchmarks.md.
#  1. CLI start-up (--help, render) and binary size, against kubectl built
#     from the same cache.
#  2. The Kubernetes steps on the emulator (pod start delay 0): vllm-hpa's
#     deploy, monitor, adapter, hpa against the walkthrough done with kubectl
#     (the same manifests, kubectl apply -f as the walkthrough has it and
#     kubectl apply --server-side, kubectl wait for the same conditions, one
#     process per command): wall time and API requests, counted by a proxy
#     at kube-apiserver's door, on a first run and on a re-run.
#  3. A scale-up stage by stage on the emulator's gke profile at Google's
#     published timings (--compress 1): load start -> metric above target ->
#     HPA decision -> the new pod's first answer, on the adapter and on the
#     native backend with vllm-hpa's defaults, beside Google's published
#     figures; and the fast profile's reaction (2 s scrape, 2 s HPA sync).
#  4. The load generator's peak rate (scripts/bench-load.sh).
#  5. tune on the simulator with a known knee: time per run and the knee
#     found, three runs.
#  6. Requests failed during a scale-down 3 -> 1 under a tail of load,
#     without a drain and with one (scripts/bench-drain.sh).
#  7. A scale-up's cold start with the image pulled whole, from a
#     secondary boot disk, and with the weights streamed from Cloud Storage
#     as well (scripts/bench-coldstart.sh, at --compress 10).
set -euo pipefail
cd "$(dirname "$0")/.."
bin_dir=$(scripts/build-k8s-cache.sh)
make -s build emulator
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
  vllm-hpa-emulator --dir "$1" --k8s-bin "$bin_dir" --profile fast --hpa-sync-period "$2" --image-pull "$3" --count-requests > "$1/log" 2>&1 &
  emu_pid=$!
  for _ in $(seq 600); do [ -f "$1/env" ] && return; sleep 0.1; done
  echo "emulator did not start" >&2; cat "$1/log" >&2; exit 1
}
counts() { curl -s "http://$(cat "$emu_dir/counter")/counts"; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])['$2'])" "$1"; }

echo "2. vllm-hpa against the kubectl walkthrough" >&2
# HPA sync and scrape every 1 s, so that neither tool's wall time depends on
# where in a 15 s cycle its HPA happened to be created.
emu_dir=$work/emu-steps
start_emu "$emu_dir" 1s 0s
# shellcheck disable=SC1091
. "$emu_dir/env"
export VLLM_HPA_KUBE_KUBECONFIG=$emu_dir/kubeconfig-counted
export KUBECONFIG=$emu_dir/kubeconfig-counted
export VLLM_HPA_MONITORING_INTERVAL=1s
# The steps with objects, from the binary (the walkthrough's order).
mapfile -t rendered < <(vllm-hpa render --list-steps)
for s in "${rendered[@]}"; do vllm-hpa render "$s" > "$work/$s.yaml"; done
k() { "$kubectl" "$@" >/dev/null; }
# Each tool in two parts: deploy, monitor and adapter; then hpa. Between
# them, untimed, the wait for the first scrape of the new pod to reach the
# custom metrics API: like the pod start delay it is the monitoring
# pipeline's, not the tool's, and the faster tool would otherwise wait longer
# for it.
ours() {
  case $1 in
  1) for s in "${rendered[@]}"; do [ "$s" = hpa ] || vllm-hpa "$s" >/dev/null 2>&1; done ;;
  2) vllm-hpa hpa >/dev/null 2>&1 ;;
  esac
}
walkthrough() { # part, kubectl apply flags
  local part=$1; shift
  if [ "$part" = 1 ]; then
    k apply "$@" -f "$work/deploy.yaml"
    k wait --for=condition=Available deployment/vllm-gemma-deployment --timeout=5m
    k apply "$@" -f "$work/monitor.yaml"
    k wait --for=jsonpath='{.status.conditions[0].status}'=True podmonitoring/gemma-pod-monitoring --timeout=5m
    k apply "$@" -f "$work/adapter.yaml"
    k wait -n custom-metrics --for=condition=Available deployment/custom-metrics-stackdriver-adapter --timeout=5m
    k wait --for=condition=Available apiservice/v1beta1.custom.metrics.k8s.io apiservice/v1beta2.custom.metrics.k8s.io apiservice/v1beta1.external.metrics.k8s.io --timeout=5m
  else
    k apply "$@" -f "$work/hpa.yaml"
    k wait --for=jsonpath='{.status.conditions[?(@.type=="ScalingActive")].reason}'=ValidMetricFound hpa/gemma-server-hpa --timeout=5m
  fi
}
csa() { walkthrough "$1"; }
ssa() { walkthrough "$1" --server-side --field-manager=walkthrough; }
# metric_served: waits until the custom metrics API has the metric for a
# pod (through the uncounted kubeconfig).
metric_served() {
  local path="/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/pods/*/prometheus.googleapis.com%7Cvllm:num_requests_running%7Cgauge"
  for _ in $(seq 600); do
    "$kubectl" --kubeconfig "$emu_dir/kubeconfig" get --raw "$path" 2>/dev/null | grep -q '"describedObject"' && return
    sleep 0.1
  done
  echo "the metric never reached the custom metrics API" >&2; exit 1
}
remove_all() { k delete -f "$work/hpa.yaml" -f "$work/adapter.yaml" -f "$work/monitor.yaml" -f "$work/deploy.yaml" --ignore-not-found --wait=true 2>/dev/null || true; }
# measure NAME TOOL: runs both parts of TOOL; appends their wall seconds to
# NAME_s and the API requests the counting proxy saw to NAME_req.
measure() {
  local name=$1 tool=$2 t0 t1 t2 t3 s_var=${1}_s req_var=${1}_req
  counts >/dev/null
  t0=$(date +%s.%N); "$tool" 1; t1=$(date +%s.%N)
  metric_served
  t2=$(date +%s.%N); "$tool" 2; t3=$(date +%s.%N)
  printf -v "$s_var" '%s %s' "${!s_var:-}" "$(python3 -c "print(f'{$t1-$t0+$t3-$t2:.2f}')")"
  printf -v "$req_var" '%s %s' "${!req_var:-}" "$(field "$(counts)" requests)"
}
median() { # FORMAT VALUES
  python3 -c "import statistics,sys; print(format(statistics.median(float(x) for x in sys.argv[2:]), sys.argv[1]))" "$1" $2
}
# Three trials of each, alternating tools. In each trial the tool starts with
# an empty discovery cache of its own (first run), then runs again with
# everything in place (re-run); then the stack is removed.
trials=5
for i in $(seq "$trials"); do
  for tool in csa ssa ours; do
    export KUBECACHEDIR=$work/cache-$tool-$i
    measure "$tool" "$tool"
    measure "${tool}2" "$tool"
    if [ "$tool" = ours ]; then vllm-hpa cleanup hpa adapter monitor deploy >/dev/null 2>&1; else remove_all; fi
  done
done
for v in csa ssa ours csa2 ssa2 ours2; do
  s_var=${v}_s req_var=${v}_req
  echo "  $v: wall ${!s_var} s; requests ${!req_var}" >&2
  printf -v "${v}_s" '%s' "$(median .2f "${!s_var}")"
  printf -v "${v}_req" '%s' "$(median g "${!req_var}")"
done
stop_emu
unset VLLM_HPA_MONITORING_INTERVAL
export KUBECACHEDIR=$work/cache-reaction

# The gke profile at the published timings: every lag real-time.
start_gke() { # dir
  mkdir -p "$1"
  vllm-hpa-emulator --dir "$1" --k8s-bin "$bin_dir" --profile gke --compress 1 > "$1/log" 2>&1 &
  emu_pid=$!
  for _ in $(seq 600); do [ -f "$1/env" ] && return; sleep 0.1; done
  echo "emulator did not start" >&2; cat "$1/log" >&2; exit 1
}
gke_run() { # backend report
  export VLLM_HPA_HPA_BACKEND=$1
  vllm-hpa up >"$work/up-$1.log" 2>&1 || { cat "$work/up-$1.log" >&2; exit 1; }
  vllm-hpa verify --load --rate 10 --expect-replicas 3 --wait-timeout 15m --report "$2" >"$work/verify-$1.log" 2>&1 || { cat "$work/verify-$1.log" >&2; exit 1; }
  unset VLLM_HPA_HPA_BACKEND
}
echo "3. scale-up on the gke profile at published timings, adapter (about 11 minutes)" >&2
emu_dir=$work/emu-gke
start_gke "$emu_dir"
gke_profile=$(grep '^profile ' "$emu_dir/log")
. "$emu_dir/env"
gke_run adapter "$work/gke-adapter.json"
stop_emu
echo "3. scale-up on the gke profile at published timings, native (about 9 minutes)" >&2
emu_dir=$work/emu-gke-native
start_gke "$emu_dir"
. "$emu_dir/env"
gke_run native "$work/gke-native.json"
stop_emu
echo "3. reaction time, fast profile" >&2
emu_dir=$work/emu-fast
start_emu "$emu_dir" 2s 1s
. "$emu_dir/env"
export VLLM_HPA_MONITORING_INTERVAL=2s
vllm-hpa up >/dev/null 2>&1
vllm-hpa verify --load --rate 10 --expect-replicas 3 --wait-timeout 5m --report "$work/fast.json" >/dev/null 2>&1
unset VLLM_HPA_MONITORING_INTERVAL
stop_emu
react() { python3 -c "import json; t=json.load(open('$1'))['timeline']; print(f\"{t['firstScaleUpSeconds']:.1f} s to the first scale-up, {t['scaledUpReadySeconds']:.1f} s to its pods Ready\")"; }
fast=$(react "$work/fast.json")
# One row per figure: adapter, native.
stage_rows=$(python3 - "$work/gke-adapter.json" "$work/gke-native.json" <<'PY'
import json, sys
a, n = (json.load(open(p))["stages"] for p in sys.argv[1:3])
def first_answer(r):
    v = [p["firstAnswerSeconds"] for p in r["pods"] if p.get("firstAnswerSeconds") is not None]
    return max(v) if v else None
def fmt(v):
    if v is None: return "not seen"
    return f"{v:.0f} s" if v < 120 else f"{v:.0f} s ({v/60:.1f} min)"
rows = [
    ("load -> metric above target, as the HPA reads it", a.get("metricAboveTargetSeconds"), n.get("metricAboveTargetSeconds"), "48-54 s (the adapter saw it)"),
    ("load -> HPA decision (SuccessfulRescale)", a.get("decisionSeconds"), n.get("decisionSeconds"), "78-88 s"),
    ("load -> first answer of the slowest new pod", first_answer(a), first_answer(n), "4.3-7.4 min"),
]
for name, x, y, g in rows:
    print(f"| {name} | {fmt(x)} | {fmt(y)} | {g} |")
print(f"| biggest stage | {a['biggest']['stage']} ({a['biggest']['seconds']:.0f} s) | {n['biggest']['stage']} ({n['biggest']['seconds']:.0f} s) | node, pull, load (1-3 min each) |")
rbw = lambda r: ", ".join(r.get("readyBeforeWarm") or []) and f"{len(r['readyBeforeWarm'])} pods" or "none"
print(f"| pods flagged Ready before warm | {rbw(a)} | {rbw(n)} | Ready about 22 s before serving |")
PY
)
goal=$(python3 - "$work/gke-adapter.json" "$work/gke-native.json" <<'PY'
import json, sys
out = []
for name, p in (("adapter", sys.argv[1]), ("native", sys.argv[2])):
    d = json.load(open(p))["stages"].get("decisionSeconds")
    verdict = "not seen" if d is None else (f"{d:.0f} s, within it" if d <= 39 else f"{d:.0f} s, not within it")
    out.append(f"{name} {verdict}")
print("; ".join(out))
PY
)
stage_table=$(python3 - "$work/gke-adapter.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["stages"]
for s in r["stages"]:
    print(f"| {s['stage']} | {s['atSeconds']:.1f} s | +{s['seconds']:.1f} s |")
PY
)

echo "4. load generator" >&2
load=$(scripts/bench-load.sh 5 2>/dev/null | tail -3)

echo "5. tune" >&2
vllm-hpa sim --listen 127.0.0.1:18090 --token-latency 40ms --batch-latency 10ms --output-tokens 6 >/dev/null 2>&1 &
sim_pid=$!
sleep 1
tune_runs=""
for i in 1 2 3; do
  t0=$(date +%s.%N)
  vllm-hpa tune --endpoint http://127.0.0.1:18090 --slo-tpot 240ms --step-duration 2s --warmup 500ms -o json > "$work/tune.json" 2>/dev/null
  t1=$(date +%s.%N)
  tune_runs+=$(python3 -c "import json; d=json.load(open('$work/tune.json')); print(f\"| $i | {$t1-$t0:.1f} s | {len(d['levels'])} | {d['knee']['concurrency']} | {d['recommendation']['target']:g} |\")")$'\n'
done
kill $sim_pid 2>/dev/null; wait $sim_pid 2>/dev/null || true

echo "6. drain" >&2
drain=$(scripts/bench-drain.sh 3 10s 2>/dev/null | tail -4)
drain_text=$(cat <<'SECTION'
## Requests failed during a scale-down (scripts/bench-drain.sh)

The emulator's fast profile with 3 s answers (150 tokens at 20 ms) and a deleted pod still an endpoint for 1 s; the
HPA scales 3 -> 1 after `verify --load --rate 4 --expect-replicas 3` while a tail of 1 request/s goes through the
Service (the API server's service proxy, which spreads it over the Ready pods), until the removed pods have stopped.
The simulator takes SIGTERM as vLLM does (every request in flight cut). Without a drain (`workload.drain 0s`, the
walkthrough's Deployment) the removed pods are stopped with requests in hand; with one, their preStop pause lets them
finish first. These are the model's counts; on a cluster the same manifests, the same kubelet sequence (preStop,
then SIGTERM within the grace period) and vLLM's own SIGTERM handling hold, the endpoint's removal lag is the
cluster's.
SECTION
)
drain_section=$(printf '%s\n\n```text\n%s\n```' "$drain_text" "$drain")

echo "7. cold start with the image cache and the weights from Cloud Storage" >&2
coldstart=$(scripts/bench-coldstart.sh 10 2>/dev/null | tail -6)
coldstart_text=$(cat <<'SECTION'
## A scale-up's cold start with the image on a secondary boot disk and the weights from Cloud Storage (scripts/bench-coldstart.sh)

The emulator's gke profile at --compress 10 (every lag a tenth of Google's published one), the walkthrough's model and
load: the Autopilot cluster pulling the vLLM image whole (45 s published) and each pod downloading the weights from
Hugging Face (0.26 GB/s), against a Standard cluster whose L4 pool holds the image on a secondary boot disk (Google:
"up to 29x faster" for a 16 GB image), then that and `--model-source gs://...` (the Run:ai streamer, 1.22 GiB/s as
Google measured). The figures are the model's; on a cluster the manifests, the bucket's IAM, the preconditions and the
stage timeline (read from the real events) are the same code.
SECTION
)
coldstart_section=$(printf '%s\n\n```text\n%s\n```' "$coldstart_text" "$coldstart")

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

## The Kubernetes steps on the emulator (pod start delay 0, HPA sync and scrape every 1 s)

vllm-hpa \`deploy\`, \`monitor\`, \`adapter\`, \`hpa\` (one process each) against the walkthrough done with kubectl: the same
rendered manifests with \`kubectl apply -f\` (as the walkthrough has it; client-side apply) or \`kubectl apply --server-side\`,
and \`kubectl wait\` for the same conditions, one process per command. Requests counted by a proxy in front of
kube-apiserver. First run: nothing exists and each tool's discovery cache is empty. Re-run: everything is in place.
Median of ${trials} trials, the tools taking turns. Wall time leaves out, as it does the pod start delay, the wait
before \`hpa\` for the new pod's first scrape to reach the custom metrics API (the monitoring pipeline's, not the
tool's: the faster tool would wait longer for it).

| | vllm-hpa | \`kubectl apply -f\` | ratio | \`kubectl apply --server-side\` | ratio |
|---|---|---|---|---|---|
| wall time, first run | ${ours_s} s | ${csa_s} s | $(ratio "$ours_s" "$csa_s") | ${ssa_s} s | $(ratio "$ours_s" "$ssa_s") |
| API requests, first run | ${ours_req} | ${csa_req} | $(ratio "$ours_req" "$csa_req") | ${ssa_req} | $(ratio "$ours_req" "$ssa_req") |
| wall time, re-run | ${ours2_s} s | ${csa2_s} s | $(ratio "$ours2_s" "$csa2_s") | ${ssa2_s} s | $(ratio "$ours2_s" "$ssa2_s") |
| API requests, re-run | ${ours2_req} | ${csa2_req} | $(ratio "$ours2_req" "$csa2_req") | ${ssa2_req} | $(ratio "$ours2_req" "$ssa2_req") |

vllm-hpa also does more than the kubectl commands in those requests: it reads every object before writing it, to prove it is vllm-hpa's (ownership), and proves the scrape (a Ready pod's /metrics through the API server, since target status is off) where kubectl waits only for the PodMonitoring's condition.

## A scale-up stage by stage, GKE's published timings (emulator profile gke, --compress 1)

The walkthrough's load (10 requests/s of 1 s answers, target 4 running per pod) on the emulator's gke profile with
nothing compressed, and vllm-hpa's defaults: 15 s scrape (\`monitoring.interval\`), the HPA on GKE's 15 s sync with
no scale-up stabilization and up to 4 pods or 100% per 15 s (\`hpa.scale-up-*\`). The emulator said:
${gke_profile}.
Google's figures are from its vLLM reference architecture (GoogleCloudPlatform/accelerated-platforms,
online-inference-gpu), on real GPUs.

| | adapter (default) | native (\`hpa.backend native\`, or \`auto\` on a cluster that serves it) | Google, published |
|---|---|---|---|
${stage_rows}

The adapter run's slowest new pod, stage by stage (seconds after the load started; each stage's own time):

| stage | at | took |
|---|---|---|
${stage_table}

What each default contributes to the decision, in this model: the scrape comes 0-15 s after the load (15 s
interval); on the adapter route the sample then takes the modelled 40 s of Cloud Monitoring ingestion and adapter
query (the figure that reproduces Google's 48-54 s with a 15 s scrape; Google publishes no breakdown); the HPA
reads it at its next sync, 0-15 s later; with no stabilization and a policy of 4 pods or 100% per 15 s, that sync
asks for 3 replicas at once. On the native route GKE reads the pods itself (every 5 s in the emulator: Google
documents no interval) and nothing goes through Cloud Monitoring, so the decision is the scrape plus one sync.
Half of Google's 78-88 s is 39-44 s; the decision, at most 39 s to be within it on any reading: ${goal}. On the
adapter route the modelled ingestion alone is 40 s. These are the model's figures, not a cluster's: the ingestion lag is
calibrated on one published run, and the node, pull and load times are Google's published ones.

## Reaction time, fast profile (2 s scrape, 2 s HPA sync; bound 4 s plus a pod start of 1 s)

${fast}.

## Load generator peak rate (5 s each against the simulator on loopback)

\`\`\`text
${load}
\`\`\`

## tune on the simulator (a decode step of 40 ms + 10 ms per running request, objective 240 ms per token)

The analytic knee is (240 - 40) / 10 = 20 requests in flight; each level is held 0.5 s, then measured for 2 s.

| run | wall time | levels measured | knee found | recommended target (running) |
|---|---|---|---|---|
${tune_runs}
${drain_section}

${coldstart_section}
MD
echo "wrote docs/benchmarks.md" >&2
