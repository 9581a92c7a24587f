#!/usr/bin/env bash
# Benchmark: a scale-up's cold start on the emulator's gke profile, with
# each cutter of vllm-hpa in turn, in the same run:
#   1. the walkthrough's stack: the Autopilot cluster pulls the Docker Hub
#      image whole, each vLLM pod downloads the weights from Hugging Face;
#   2. a Standard cluster whose L4 pool holds the image on a secondary
#      boot disk (Google: "up to 29x faster" for a 16 GB image);
#   3. that, and the weights streamed from Cloud Storage by vLLM's Run:ai
#      streamer (up --model-source gs://...).
# Each: up, then verify --load --rate R --expect-replicas N; the figures
# are the slowest new pod's image pull, its load (container started ->
# Ready) and load start -> its first answer. The figures are the model's
# (docs/benchmarks.md says where each lag comes from).
#
# Usage: scripts/bench-coldstart.sh [compress] [model-bytes] [replicas]
#   compress     1 (default): the published timings, about 6 minutes per
#                arm; above 1 the metric path is compressed with the pod's
#   model-bytes  the weights (default 2000000000, the walkthrough's
#                google/gemma-3-1b-it; Google's fast-start architecture
#                streamed 58.99 GiB: 63340000000)
#   replicas     the scale-up's target (default 3; the fast-start
#                architecture measured 5)
set -euo pipefail
cd "$(dirname "$0")/.."
compress=${1:-1}
model_bytes=${2:-2000000000}
replicas=${3:-3}
# shellcheck source=scripts/emulator-tools.sh
. scripts/emulator-tools.sh
emulator_tools coldstart
metric_path=
if [ "$compress" != 1 ]; then metric_path=--compress-metric-path; fi
# Enough load per pod for the HPA to ask for every replica at once.
rate=$((replicas * 5))

# run NAME CACHE SOURCE: prints "pull load firstAnswer" in seconds.
run() {
  local dir=$work/emu-$1
  mkdir -p "$dir"
  # shellcheck disable=SC2086 # metric_path is one flag or none
  vllm-hpa-emulator --dir "$dir" --k8s-bin "$bin_dir" --profile gke --compress "$compress" $metric_path \
    --image-cache "$2" --model-bytes "$model_bytes" --max-nodes "$((replicas + 1))" > "$dir/log" 2>&1 &
  emu_pid=$!
  for _ in $(seq 600); do [ -f "$dir/env" ] && break; sleep 0.1; done
  [ -f "$dir/env" ] || { cat "$dir/log" >&2; exit 1; }
  (
    # shellcheck disable=SC1091
    . "$dir/env"
    export VLLM_HPA_WORKLOAD_MODEL_SOURCE=$3 VLLM_HPA_HPA_MAX_REPLICAS=$replicas
    vllm-hpa up >/dev/null 2>&1
    vllm-hpa verify -o json --load --rate "$rate" --expect-replicas "$replicas" --wait-timeout 30m > "$dir/verify.json" 2>/dev/null || true
  )
  stop_emu
  python3 - "$dir/verify.json" <<'PY'
import json, sys
s = (json.load(open(sys.argv[1])).get("stages") or {}).get("stages") or []
by = {x["stage"]: x for x in s}
nan = float("nan")
pull = by.get("image pulled", {}).get("seconds", nan)
load = by.get("ready", {}).get("seconds", nan)
first = s[-1]["atSeconds"] if s and s[-1]["stage"] == "first answer" else nan
print(f"{pull:.1f} {load:.1f} {first:.1f}")
PY
}
read -r pull_a load_a first_a < <(run default "" "")
read -r pull_b load_b first_b < <(run disk boot-disk "")
read -r pull_c load_c first_c < <(run both boot-disk gs://my-models/google/gemma-3-1b-it)
ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }
echo "machine: $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); emulator gke profile, --compress $compress, weights $model_bytes bytes"
echo "the slowest new pod of a scale-up 1 -> $replicas (verify --load --rate $rate), seconds (the model's figures):"
echo "                                           image pull   load (started -> Ready)   load start -> first answer"
printf '  %-40s %-12s %-25s %s\n' "Autopilot, Docker Hub, Hugging Face:" "$pull_a" "$load_a" "$first_a"
printf '  %-40s %-12s %-25s %s\n' "L4 pool, secondary boot disk:" "$pull_b" "$load_b" "$first_b ($(ratio "$first_b" "$first_a"))"
printf '  %-40s %-12s %-25s %s\n' "boot disk + Run:ai streamer from GCS:" "$pull_c" "$load_c" "$first_c ($(ratio "$first_c" "$first_a"))"
