#!/usr/bin/env bash
# make test: every test, on this machine's 2 cores, in as little wall time
# as their waits allow.
#
# The test binaries are built with `go test -c` into bin/test/ (and
# bin/test-race/, bin/test/emulator/), where go links only what changed
# since the last run: `go test` relinks every binary on every run (about
# 80 CPU-seconds of 29 links here, a sixth of the run). Each runs from its
# package's directory with the flags go test would give it, and its result
# is printed as go test prints it (its output only when it failed, or with
# -test.v).
#
# Four lanes run at once, the longest two first: the CLI's (cmd, at
# TEST_CLUSTERS control planes), the emulator's end-to-end tests
# (scripts/emulator: about 550 emulator-seconds alone, EMULATORS at
# once), the other packages that wait on the CPU, one at a time and at a
# lower CPU priority (lower_priority): those whose goroutines share state
# only under the race detector (their tests are the same), then the CLI's
# input handling under it, then the rest; and those that wait on clocks,
# one at a time (the load generator's pacing without the detector, whose
# slowdown would measure the machine). The last line says when each lane
# ended: the longest is make test's wall time.
# Environment (the Makefile sets them): TEST_CLUSTERS, EMULATORS,
# TEST_PARALLEL, GO, and TEST_ARGS, flags for every test binary (go
# test's, prefixed test.: `-test.v -test.run=TestX`; a -test.run there
# replaces the race run's filter on the CLI, and the pacing run's, too).
#
# Each lane, and each build, is a process group of its own (a job): an
# interrupt, a SIGTERM or a failed build ends them all at once (the
# control planes die with their test binary; the emulator's test ends the
# emulators its blocks started).
set -uo pipefail
set -m
cd "$(dirname "$0")/.."
GO=${GO:-go}
began=$(date +%s.%N)
repo=$PWD
bin=$repo/bin/test
race_bin=$repo/bin/test-race
emulator_bin=$repo/bin/test/emulator
mkdir -p "$bin" "$race_bin" "$emulator_bin"
# As go test does: the go that built the tests first on PATH.
PATH=$($GO env GOROOT)/bin:$PATH

# localcluster first: its control planes make it the longest.
race_pkgs=(./internal/localcluster ./internal/output ./internal/load ./internal/reach ./internal/vllmsim ./internal/redact ./internal/timeline ./internal/rollout)
race_cmd_run='TestHostileInput|TestBadInput|TestPrecedence|TestTokenRedacted'
# Packages whose tests wait on clocks (a simulator's token latency, a load
# generator's pacing: about 60 s of waiting for 2 CPU-seconds), run in a
# lane of their own beside those that wait on the CPU.
timed_race_pkgs=(./internal/load ./internal/vllmsim)
timed_pkgs=(./internal/tune)
nl=$'\n'

logs=$(mktemp -d)
stop_lanes() {
	for pgid in $(jobs -p); do
		kill -TERM -- "-$pgid" 2>/dev/null
	done
	wait
	rm -rf "$logs"
}
# (Quiet: job control would report each lane it ends.)
trap 'stop_lanes 2>/dev/null' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# as_job COMMAND...: runs COMMAND as a job of its own and waits for it,
# so that an interrupt or a SIGTERM ends the run at once: bash runs a
# trap only once its foreground command has ended, and ignores an
# interrupt that command survived (a build, minutes long in a fresh clone,
# went on, and the run with it). stop_lanes ends the job with the lanes.
as_job() {
	"$@" &
	wait $!
}

# build WHAT COMMAND...: runs a build as a job (as_job), its output shown
# only if it fails, and then ends the run.
build() {
	local what=$1 log
	shift
	log=$(mktemp "$logs/build.XXXXXX")
	if ! as_job "$@" >"$log" 2>&1; then
		cat "$log"
		echo "FAIL	$what [build failed]"
		exit 1
	fi
}

as_job scripts/build-k8s-cache.sh >"$logs/k8s-bin" || exit 1
k8s_bin=$(<"$logs/k8s-bin")
export VLLM_HPA_K8S_BIN=$k8s_bin VLLM_HPA_REQUIRE_K8S=1
export VLLM_HPA_TEST_CLUSTERS=${TEST_CLUSTERS:-5} VLLM_HPA_EMULATORS=${EMULATORS:-3}
parallel=${TEST_PARALLEL:-16}
# Split into words, never globbed (-test.run=Test[AB]).
read -ra test_args <<<"${TEST_ARGS:-}"
verbose=false
for a in "${test_args[@]}"; do
	case $a in -test.v | -test.v=true | -test.v=test2json) verbose=true ;; esac
done
# Test binaries without DWARF (-w): nothing here runs a debugger on them,
# and it takes a quarter off each link (cmd.test 6.4 s -> 4.8 s). And
# -trimpath: go's build cache keys a package's compilation by its
# directory unless the path is trimmed, so a checkout in a new directory
# (CI's clean clone) recompiled the whole module (cmd.test: 266 s and 365
# CPU-s on 2 cores); trimmed, it links what the cache holds (6 s).
build_flags=(-ldflags=-w -trimpath)

# run DIR BINARY NAME [FLAGS...]: runs one test binary from DIR, then
# prints go test's line for it (and its output when it failed).
run() {
	local dir=$1 binary=$2 name=$3 start end status took log
	shift 3
	log=$logs/${name//[^A-Za-z0-9.]/_}.log
	start=$(date +%s.%N)
	(cd "$dir" && "${run_prefix[@]}" "$binary" -test.count=1 -test.paniconexit0 "$@" "${test_args[@]}" </dev/null >"$log" 2>&1)
	status=$?
	end=$(date +%s.%N)
	took=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3fs", e - s }')
	if [ $status -eq 0 ]; then
		if $verbose; then cat "$log"; fi
		printf 'ok  \t%s\t%s\n' "$name" "$took"
	else
		cat "$log"
		printf 'FAIL\t%s\t%s\n' "$name" "$took"
	fi
	return $status
}

# lower_priority makes run start its binaries at a lower CPU priority
# (nice's increment of 10: a tenth of the others' weight), and so their
# children: the third lane, which needs a minute of CPU and has three
# alone, yields to the CLI's and the emulator's, the two that set make
# test's wall time (the CLI's waits on the CPU; the emulator's on timed
# lags, a scale-up's, a drain's, that run longer the longer each of their
# steps takes to get a core). Measured here, warm: with the CLI's lane at
# nice 5 instead, and the third lane's clock-bound packages in line with
# its others, the CLI's ended last, after 181-190 s; so, 165-166 s, with
# the CLI's and the emulator's ending within 7 s of each other.
run_prefix=()
lower_priority() {
	run_prefix=(nice -n 10)
}

# lane_ended NAME STATUS: notes when a lane ended, for the summary of
# where make test's time went (the longest lane is its wall time), and
# exits with the lane's status.
lane_ended() {
	awk -v b="$began" -v e="$(date +%s.%N)" -v n="$1" 'BEGIN { printf "%s %.0fs\n", n, e - b }' >"$logs/lane.$1"
	exit "$2"
}

# tested PATTERNS...: "import-path directory" of each package with tests.
tested() {
	$GO list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}} {{.Dir}}{{end}}' "$@" | grep .
}

# run_each BINDIR FLAGS... < LIST: runs the binaries of LIST's packages
# (from tested) one after the other.
run_each() {
	local dir=$1 status=0 p pkgdir
	shift
	while read -r p pkgdir; do
		run "$pkgdir" "$dir/$(basename "$p").test" "$p" "$@" || status=1
	done
	return $status
}

# The CLI's tests first, as soon as their binary is built: theirs is the
# longest lane (it waited for the emulator module's build, vet and link:
# about 6 s warm, a minute when they relink).
module=$($GO list -m) || exit 1
build "$module/cmd" $GO test -c "${build_flags[@]}" -o "$bin/cmd.test" ./cmd
(
	run cmd "$bin/cmd.test" "$module/cmd" -test.timeout=30m -test.parallel="$parallel"
	lane_ended cli $?
) >"$logs/cmd.out" 2>&1 &
cli=$!

# The emulator's module: the binaries the documented blocks run (they
# find them up to date), vet, its test binary; then its tests.
build_emulator() {
	make -s build emulator && cd scripts/emulator && $GO vet -trimpath ./... &&
		$GO test -c "${build_flags[@]}" -o "$emulator_bin/emulator.test" .
}
build scripts/emulator build_emulator
emulator_module=$(cd scripts/emulator && $GO list -m) || exit 1
(
	run scripts/emulator "$emulator_bin/emulator.test" "$emulator_module" \
		-test.timeout=20m -test.parallel=16
	lane_ended emulator $?
) >"$logs/emulator.out" 2>&1 &
emulator=$!

race_list=$(tested "${race_pkgs[@]}") || exit 1
timed_race_list=$(tested "${timed_race_pkgs[@]}") || exit 1
timed_list=$(tested "${timed_pkgs[@]}") || exit 1
others=$(tested ./... | grep -vxF "$race_list" | grep -vxF "$timed_list" | grep -v "^$module/cmd ") || {
	echo "no packages with tests besides cmd and the race detector's" >&2
	exit 1
}
build_packages() {
	$GO test -c "${build_flags[@]}" -o "$bin/" $(cut -d" " -f1 <<<"$others$nl$timed_list") ./internal/load &&
		$GO test -c -race "${build_flags[@]}" -o "$race_bin/" "${race_pkgs[@]}" ./cmd
}
build "the other packages" build_packages

# The third lane: what waits on the CPU.
(
	lower_priority
	status=0
	run_each "$race_bin" -test.timeout=30m -test.parallel="$parallel" < <(grep -vxF "$timed_race_list" <<<"$race_list") || status=1
	run cmd "$race_bin/cmd.test" "$module/cmd (race)" \
		-test.timeout=30m -test.run="$race_cmd_run" || status=1
	run_each "$bin" -test.timeout=30m -test.parallel="$parallel" <<<"$others" || status=1
	lane_ended cpu $status
) &
rest=$!

# The fourth: what waits on clocks.
(
	status=0
	run_each "$race_bin" -test.timeout=30m -test.parallel="$parallel" <<<"$timed_race_list" || status=1
	# The load generator's pacing is measured without the detector.
	run internal/load "$bin/load.test" "$module/internal/load (rates)" \
		-test.timeout=5m -test.run='^TestAchievedRate$' || status=1
	run_each "$bin" -test.timeout=30m -test.parallel="$parallel" <<<"$timed_list" || status=1
	lane_ended clocks $status
) >"$logs/timed.out" 2>&1 &
timed=$!

failed=0
wait $rest || failed=1
wait $timed || failed=1
cat "$logs/timed.out"
wait $cli || failed=1
cat "$logs/cmd.out"
wait $emulator || failed=1
cat "$logs/emulator.out"
echo "lanes ended after: $(cat "$logs"/lane.* 2>/dev/null | paste -sd, - | sed 's/,/, /g')"
exit $failed
