#!/usr/bin/env bash
# Benchmark: requests failed while the HPA scales the vLLM pods down from 3
# to 1 under a steady tail of load, without a drain (workload.drain 0s:
# SIGTERM at once, as the walkthrough's Deployment has it) and with one,
# on the emulator in the same run. The tail goes through the Service (the
# API server's service proxy), so every pod holds its share of requests
# when it is removed. The simulator answers in about 3 s (150 tokens at
# 20 ms), a deleted pod stays behind its Service 1 s (--endpoint-lag), and
# it aborts what it holds on SIGTERM as vLLM does.
#
# Usage: scripts/bench-drain.sh [rounds] [drain]   (default 3 rounds, 10s)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
drain=${2:-10s}
# shellcheck source=scripts/emulator-tools.sh
. scripts/emulator-tools.sh
emulator_tools drain
vllm-hpa-emulator --dir "$work" --k8s-bin "$bin_dir" --profile fast --hpa-sync-period 2s --image-pull 1s \
  --output-tokens 150 --endpoint-lag 1s > "$work/log" 2>&1 &
emu_pid=$!
for _ in $(seq 600); do [ -f "$work/env" ] && break; sleep 0.1; done
[ -f "$work/env" ] || { cat "$work/log" >&2; exit 1; }
# shellcheck disable=SC1091
. "$work/env"
export VLLM_HPA_MONITORING_INTERVAL=1s VLLM_HPA_HPA_SCALE_DOWN_STABILIZATION=5s
vllm-hpa up >/dev/null 2>&1

# round DRAIN: one scale-up to 3 and down to 1; prints "failed sent".
round() {
  VLLM_HPA_WORKLOAD_DRAIN=$1 vllm-hpa deploy >/dev/null 2>&1
  VLLM_HPA_WORKLOAD_DRAIN=$1 vllm-hpa verify --wait --timeout 2m >/dev/null 2>&1
  VLLM_HPA_WORKLOAD_DRAIN=$1 vllm-hpa verify -o json --load --rate 4 --expect-replicas 3 --scale-down --tail-rate 1 \
    --max-scale-down-failures 100000 --wait-timeout 3m > "$work/round.json" 2>/dev/null || true
  python3 - "$work/round.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])).get("scaleDown") or {}
print(sum((d.get("failed") or {}).values()), d.get("sent", 0))
PY
}
total() { awk '{f+=$1; s+=$2} END {printf "%d of %d", f, s}'; }
without=$(for _ in $(seq "$rounds"); do round 0s; done)
with=$(for _ in $(seq "$rounds"); do round "$drain"; done)
echo "machine: $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); emulator fast profile, 3 s answers, 1 s endpoint lag"
echo "requests failed during the scale-down 3 -> 1, tail of 1 request/s through the Service, $rounds rounds each:"
echo "  workload.drain 0s (SIGTERM at once):  $(echo "$without" | total)   per round: $(echo "$without" | awk '{printf "%s ", $1}')"
echo "  workload.drain $drain (preStop pause): $(echo "$with" | total)   per round: $(echo "$with" | awk '{printf "%s ", $1}')"
