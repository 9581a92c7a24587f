# vllm-hpa: build, test, lint, install.
GO      ?= go
BIN     := bin/vllm-hpa
EMULATOR_BIN := bin/vllm-hpa-emulator
PKG     := github.com/vllm-hpa/vllm-hpa
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
# The commit's time, not the clock's (as go build's own vcs.time): one
# commit builds one binary, so a build whose output is up to date links
# nothing (go build and go install skip a target whose build ID matches).
DATE    ?= $(shell TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS := -s -w -X $(PKG)/cmd.version=$(VERSION) -X $(PKG)/cmd.commit=$(COMMIT) -X $(PKG)/cmd.date=$(DATE)

.PHONY: build emulator demo FORCE test test-e2e test-faults test-unit lint install k8s-cache clean
# build and install write one file (bin/vllm-hpa when GOBIN is bin/): never
# at once, even under -j.
.NOTPARALLEL:

# Each binary is rebuilt when its stamp (bin/.NAME.stamp) is newer, and
# the stamp is rewritten only when what the binary is built from changed:
# the flags and the toolchain (BUILD_FLAGS), the tree's file names (a file
# added, removed or renamed: TREE_FILES), or a file newer than the binary.
# go build would link nothing otherwise anyway, but finds that out in
# about 1.7 CPU-seconds (it hashes every package's inputs); make, in a
# few milliseconds: make test's documented blocks and demos run `make
# build` a dozen times. The binary takes its stamp's time (touch -r): a
# file changed while go build runs is newer than both, and built next
# time. POSIX find: the same on macOS.
BUILD_FLAGS := $(GO) $(LDFLAGS) $(shell $(GO) env GOVERSION GOFLAGS GOOS GOARCH GOAMD64 GOWORK GOEXPERIMENT 2>/dev/null)
FIND_TREE := find . \( -path ./bin -o -path ./.git \) -prune -o -type f
TREE_FILES := $(shell $(FIND_TREE) -print | LC_ALL=C sort | cksum)

bin/.%.stamp: FORCE
	@mkdir -p bin; stamp='$(BUILD_FLAGS) $(TREE_FILES)'; \
	  if [ "$$(cat $@ 2>/dev/null)" != "$$stamp" ] || \
	     [ -n "$$($(FIND_TREE) -newer bin/$* -print 2>/dev/null | head -n 1)" ]; then \
	    echo "$$stamp" > $@; fi

FORCE:

# -buildvcs=false: the version, commit and date are the ldflags', and a
# stamp of the tree's state would relink on any untracked file.
build: $(BIN)
$(BIN): bin/.vllm-hpa.stamp
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags "$(LDFLAGS)" -o $(BIN) . && touch -r $< $(BIN)

# The local GKE emulator (scripts/emulator, a module of its own), with the
# flags every script and document builds it with, so that one build serves
# them all.
emulator: $(EMULATOR_BIN)
$(EMULATOR_BIN): bin/.vllm-hpa-emulator.stamp
	cd scripts/emulator && CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags "-s -w" -o ../../$(EMULATOR_BIN) . && touch -r ../../$< ../../$(EMULATOR_BIN)

# The whole walkthrough on the local GKE emulator: up, load, 1 -> 3 -> 1,
# cleanup. The first run builds the Kubernetes binaries. BACKEND=native
# runs it on GKE's native custom metrics (no adapter, no IAM).
demo:
	@scripts/demo.sh

# The Kubernetes control-plane binaries the tests run (built once, cached
# under $${VLLM_HPA_CACHE:-~/.cache/vllm-hpa}; the first build takes minutes).
k8s-cache:
	@scripts/build-k8s-cache.sh >/dev/null

# Tests that wait on control planes run many at once: each holds one of
# $(TEST_CLUSTERS) control planes (VLLM_HPA_TEST_CLUSTERS) for its run.
# More is slower on 2 cores: 7 took make test from 4:50 to 5:22 (the
# control planes' CPU grew by a third; the machine is CPU-bound).
TEST_CLUSTERS ?= 5
# go test's -parallel: high enough that every test waiting for a control
# plane (or an emulator) is in its queue, where the longest go first
# (cmd/testbed_test.go, scripts/emulator/slots_test.go); at 16 go test
# released the CLI's longest tests last, and the lane ended with them.
TEST_PARALLEL ?= 64
# Emulators the end-to-end tests run at once (VLLM_HPA_EMULATORS: they
# take their turns longest first, scripts/emulator/slots_test.go). Their
# tests wait on timed lags: at 4 the module took 199 s in make test
# against 306 s at 3 (then behind the CLI's lane in CPU priority), when
# the walkthrough's HPA once overshot to 4 replicas in CI (answers slowed
# by the CPU's contention kept more requests running).
EMULATORS ?= 4

# All tests, including those against a real kube-apiserver and
# kube-controller-manager (VLLM_HPA_REQUIRE_K8S makes a missing binary a
# failure rather than a skip), scripts/test.sh: test binaries built with
# go test -c into bin/test/, linked only when their source changed; the
# emulator's end-to-end tests (each on an emulator of its own; the demos
# with the gke profile's every lag at a fiftieth: make test-e2e runs them
# at full length), the CLI's, and the other packages one at a time, all
# three at once (those with goroutines only under the race detector, then
# the CLI's input handling under it too). The version stamps are fixed
# for the run (exported: every make the documented blocks run takes
# them), so that an edit during the run relinks nothing a block runs. The
# fault tests run 2 rounds here (make test-faults: 20).
test: lint
	@VERSION="$(VERSION)" COMMIT="$(COMMIT)" DATE="$(DATE)" GO="$(GO)" \
	  TEST_CLUSTERS=$(TEST_CLUSTERS) EMULATORS=$(EMULATORS) TEST_PARALLEL=$(TEST_PARALLEL) TEST_ARGS='$(TEST_ARGS)' scripts/test.sh

# The README's demos at the gke profile's own timings (about 6 minutes
# each: IAM's 2-minute propagation, 40 s of ingestion, GKE's 15 s scrape
# and HPA sync), one after the other.
test-e2e:
	@export VLLM_HPA_K8S_BIN="$$(scripts/build-k8s-cache.sh)" VLLM_HPA_REQUIRE_K8S=1 VLLM_HPA_E2E_FULL=1 VLLM_HPA_EMULATORS=1 && \
	  cd scripts/emulator && $(GO) test -count=1 -timeout 40m -run 'TestDocumentedDemo' -v ./...

# The fault tests at full length: 20 rounds of up and cleanup through a
# proxy that breaks 10% of Kubernetes requests, with 10% of Google API calls
# failing, and 20 SIGKILLs during up (make test runs 2 of each).
test-faults:
	@export VLLM_HPA_K8S_BIN="$$(scripts/build-k8s-cache.sh)" VLLM_HPA_REQUIRE_K8S=1 VLLM_HPA_FAULT_RUNS=20 && \
	  $(GO) test -count=1 -timeout 40m -run 'TestFaults|TestKilledUpRecovers' -v ./cmd > .test-faults.log 2>&1; \
	  status=$$?; grep -E '^(=== RUN|--- |PASS|FAIL|ok)|faults_test' .test-faults.log; rm -f .test-faults.log; exit $$status

# Only the tests that need no Kubernetes binaries.
test-unit:
	$(GO) test -count=1 ./...

# go vet -trimpath: its results are cached by the packages' contents, not
# their directory, so a checkout elsewhere (CI's clean clone) vets in a
# second instead of 30 (scripts/test.sh builds the tests so, too).
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet -trimpath ./...

install:
	CGO_ENABLED=0 $(GO) install -trimpath -buildvcs=false -ldflags "$(LDFLAGS)" .

clean:
	rm -rf bin
