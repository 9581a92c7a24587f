#!/usr/bin/env bash
# Benchmark: a scale-up's cold start on the emulator's gke profile, the
# Autopilot cluster pulling the Docker Hub image whole against a Standard
# cluster whose L4 pool holds the image on a secondary boot disk (Google:
# "up to 29x faster" for a 16 GB image), in the same run. Each: up, then
# verify --load --rate 10 --expect-replicas 3; the figures are the slowest
# new pod's image pull and load start -> its first answer.
#
# Usage: scripts/bench-coldstart.sh [compress]   (default 1: the published
# timings, about 6 minutes each; the metric path is compressed with the
# pod's when compress > 1)
set -euo pipefail
cd "$(dirname "$0")/.."
compress=${1:-1}
# shellcheck source=scripts/emulator-tools.sh
. scripts/emulator-tools.sh
emulator_tools coldstart
metric_path=
if [ "$compress" != 1 ]; then metric_path=--compress-metric-path; fi

# run CACHE: prints "pull firstAnswer" in seconds.
run() {
  local dir=$work/emu-$1
  mkdir -p "$dir"
  # shellcheck disable=SC2086 # metric_path is one flag or none
  vllm-hpa-emulator --dir "$dir" --k8s-bin "$bin_dir" --profile gke --compress "$compress" $metric_path --image-cache "$1" > "$dir/log" 2>&1 &
  emu_pid=$!
  for _ in $(seq 600); do [ -f "$dir/env" ] && break; sleep 0.1; done
  [ -f "$dir/env" ] || { cat "$dir/log" >&2; exit 1; }
  (
    # shellcheck disable=SC1091
    . "$dir/env"
    vllm-hpa up >/dev/null 2>&1
    vllm-hpa verify -o json --load --rate 10 --expect-replicas 3 --wait-timeout 20m > "$dir/verify.json" 2>/dev/null || true
  )
  stop_emu
  python3 - "$dir/verify.json" <<'PY'
import json, sys
s = (json.load(open(sys.argv[1])).get("stages") or {}).get("stages") or []
by = {x["stage"]: x for x in s}
pull = by.get("image pulled", {}).get("seconds", float("nan"))
first = s[-1]["atSeconds"] if s and s[-1]["stage"] == "first answer" else float("nan")
print(f"{pull:.1f} {first:.1f}")
PY
}
read -r pull_whole first_whole < <(run "")
read -r pull_disk first_disk < <(run boot-disk)
ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }
echo "machine: $(nproc) cores; $(date -u +%Y-%m-%dT%H:%MZ); emulator gke profile, --compress $compress"
echo "the slowest new pod of a scale-up 1 -> 3 (verify --load --rate 10), seconds:"
echo "                                  image pull   load start -> first answer"
echo "  Autopilot, Docker Hub image:    ${pull_whole}          ${first_whole}"
echo "  L4 pool, secondary boot disk:   ${pull_disk}          ${first_disk}   ($(ratio "$first_disk" "$first_whole") of the whole pull's)"
