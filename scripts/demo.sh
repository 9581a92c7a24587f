#!/usr/bin/env bash
# The whole walkthrough on this machine: build what is missing, start the
# local GKE emulator (GKE's 15 s scrape and HPA sync intervals), run
# `vllm-hpa up`, prove the HPA scales 1 -> 3 under the walkthrough's load and
# back to 1 when it stops, clean up, and stop the emulator.
# BACKEND=native (or auto) runs it on GKE's native custom metrics instead of
# the Stackdriver adapter: no adapter, no IAM. EMULATOR_ARGS are added to
# the emulator's flags (the tests run "--compress 50 --compress-metric-path":
# every lag of the gke profile, in its order, at a fiftieth of its length).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

state=$(mktemp -d -t vllm-hpa-demo-XXXXXX)
emulator_pid=
stop_emulator() {
  if [ -n "$emulator_pid" ]; then
    kill -TERM "$emulator_pid" 2>/dev/null || true
    wait "$emulator_pid" 2>/dev/null || true
  fi
  rm -rf "$state"
}
trap stop_emulator EXIT

say "building (the first run builds the Kubernetes binaries: several minutes)"
bin_dir=$(scripts/build-k8s-cache.sh)
# Built into bin/ (linked only when the source changed), then copied
# beside the demo's state: a build of bin/ while the demo runs leaves it
# alone.
make -s build emulator
mkdir "$state/bin" && cp bin/vllm-hpa bin/vllm-hpa-emulator "$state/bin/"
export PATH="$state/bin:$PATH"

say "starting the local GKE emulator"
# shellcheck disable=SC2086 # EMULATOR_ARGS is a list of flags
vllm-hpa-emulator --dir "$state" --k8s-bin "$bin_dir" ${EMULATOR_ARGS:-} > "$state/emulator.log" 2>&1 &
emulator_pid=$!
for _ in $(seq 600); do
  [ -f "$state/env" ] && break
  kill -0 "$emulator_pid" 2>/dev/null || { cat "$state/emulator.log" >&2; exit 1; }
  sleep 0.1
done
[ -f "$state/env" ] || { echo "the emulator did not start" >&2; exit 1; }
grep -E '^(emulator ready|profile )' "$state/emulator.log" >&2
# shellcheck disable=SC1091
. "$state/env"

export VLLM_HPA_HPA_BACKEND="${BACKEND:-adapter}"
say "vllm-hpa up (hpa.backend $VLLM_HPA_HPA_BACKEND)"
vllm-hpa up

say "vllm-hpa verify --load: the walkthrough's test (about 10 requests running, target 4)"
vllm-hpa verify --load --rate 10 --expect-replicas 3 --scale-down --wait-timeout 5m --report "$state/timeline.json"

say "vllm-hpa cleanup"
vllm-hpa cleanup

say "demo done in $((SECONDS - start))s"
