#!/usr/bin/env bash
# Benchmark: the peak request rate of `vllm-hpa load` against the simulator
# on loopback, in the same run as the walkthrough's shell loop (curl in the
# background, without its one-second sleep) and vegeta's CLI. Each gets the
# same time against a fresh simulator that answers at once; the figures are
# requests completed per second and ratios against the shell loop.
#
# Usage: scripts/bench-load.sh [seconds]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
conc=64
cache=${VLLM_HPA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vllm-hpa}
make -s build >/dev/null
bin=bin/vllm-hpa
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
body='{"model":"google/gemma-3-1b-it","messages":[{"role":"user","content":"Explain Quantum Computing in simple terms."}]}'

sim_pid=
start_sim() {
  "$bin" sim --listen 127.0.0.1:$port --token-latency 0s --batch-latency 0s --prefill-latency 0s --kv-cache-tokens 0 --output-tokens 1 --max-num-seqs 100000 2>/dev/null &
  sim_pid=$!
  for _ in $(seq 50); do curl -sf "$url/health" >/dev/null && return; sleep 0.1; done
  echo "simulator did not start" >&2; exit 1
}
stop_sim() { kill "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; }
# completed reads the simulator's own count of successful requests.
completed() { curl -s "$url/metrics" | awk '/^vllm:request_success_total/ {n+=$2} END {print n+0}'; }
trap stop_sim EXIT

# 1. vllm-hpa load, closed loop with $conc in flight.
start_sim
"$bin" load --endpoint "$url" --concurrency $conc --duration ${secs}s -o json > /tmp/bench-load.json
ours=$(completed); stop_sim

# 2. The walkthrough's loop: curl in the background, as fast as bash starts it.
start_sim
end=$((SECONDS + secs))
while [ $SECONDS -lt $end ]; do
  curl -s -o /dev/null -X POST "$url/v1/chat/completions" -H 'Content-Type: application/json' -d "$body" &
done
wait $(jobs -p | grep -v "^$sim_pid$") 2>/dev/null || true
loop=$(completed); stop_sim

# 3. vegeta's CLI, same shape as 1 (installed into the cache if missing).
vegeta=$cache/bin/tools/vegeta
if [ ! -x "$vegeta" ]; then GOBIN=$cache/bin/tools go install github.com/tsenart/vegeta/v12@v12.13.0 >/dev/null 2>&1 || true; fi
veg=
if [ -x "$vegeta" ]; then
  start_sim
  printf 'POST %s/v1/chat/completions\nContent-Type: application/json\n@/tmp/bench-body.json\n' "$url" > /tmp/bench-targets.txt
  printf '%s' "$body" > /tmp/bench-body.json
  "$vegeta" attack -targets /tmp/bench-targets.txt -rate 0 -max-workers $conc -workers $conc -duration ${secs}s > /dev/null
  veg=$(completed); stop_sim
fi

rate() { python3 -c "print(f'{$1/$secs:.0f}')"; }
ratio() { python3 -c "print(f'{$1/max($2,1):.1f}x')"; }
echo "machine: $(nproc) cores, $(uname -sr); go: $(go version | awk '{print $3}'); $(date -u +%Y-%m-%dT%H:%MZ)"
echo "requests completed per second against the simulator on loopback, ${secs}s each:"
echo "  shell loop (curl &):              $(rate "$loop")/s  (1.0x)"
echo "  vllm-hpa load --concurrency $conc:  $(rate "$ours")/s  ($(ratio "$ours" "$loop") the shell loop)"
if [ -n "$veg" ]; then
  echo "  vegeta attack -max-workers $conc:   $(rate "$veg")/s  ($(ratio "$veg" "$loop") the shell loop; vllm-hpa is $(ratio "$ours" "$veg") vegeta's CLI)"
fi
