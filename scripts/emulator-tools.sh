# Sourced by the emulator benchmarks (bench-drain.sh, bench-coldstart.sh):
# builds vllm-hpa and the emulator (into bin/, linked only when the source
# changed) and copies them into a work directory of their own (a build of
# bin/ while a benchmark runs leaves it alone), puts them first on PATH,
# and stops the emulator and removes the directory on exit.
#
# emulator_tools NAME sets bin_dir (the Kubernetes binaries) and work.
emulator_tools() {
  bin_dir=$(scripts/build-k8s-cache.sh)
  work=$(mktemp -d -t "vllm-hpa-$1-XXXXXX")
  make -s build emulator
  mkdir "$work/bin" && cp bin/vllm-hpa bin/vllm-hpa-emulator "$work/bin/"
  export PATH="$work/bin:$PATH"
  emu_pid=
  trap 'stop_emu; rm -rf "$work"' EXIT
}

# stop_emu stops the emulator started last (its pid in emu_pid).
stop_emu() {
  if [ -n "${emu_pid:-}" ]; then
    kill -TERM "$emu_pid" 2>/dev/null || true
    wait "$emu_pid" 2>/dev/null || true
    emu_pid=
  fi
}
