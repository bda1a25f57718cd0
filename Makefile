# pgswift build, test and demo entry points (CI runs `make test` through .ci/run).
SWIFT   ?= swift
JOBS    ?= 2
CONFIG  ?= pgswift.ini
RELEASE := .build/release

.PHONY: all build debug test test-cluster test-systemd run fuzz bench bench-quick bench-binaries microbench profile clean check-config deps deps-build deps-test deb deb-binaries

all: build

deps: deps-build deps-test
deps-build:
	scripts/install-deps.sh build
deps-test:
	scripts/install-deps.sh build test deb

build: deps-build
	$(SWIFT) build -c release -j $(JOBS)

debug: deps-build
	$(SWIFT) build -j $(JOBS)

# Without Swift Testing tests its runner would close the log with "0 tests", hiding XCTest's count.
TEST_FLAGS := $(if $(shell grep -rl '^import Testing' Tests 2>/dev/null),,--disable-swift-testing)

# The end-to-end tests start the freshly built binaries: they are found through PGSWIFT_BIN_DIR.
# FleetTests and RoutingSwitchoverTests are left to test-cluster (CI runs both).
test: deps-test
	$(SWIFT) build --build-tests -j $(JOBS)
	PGSWIFT_BIN_DIR="$${PGSWIFT_BIN_DIR:-$$($(SWIFT) build --show-bin-path)}" $(SWIFT) test --skip-build $(TEST_FLAGS) \
		--skip FleetTests --skip RoutingSwitchoverTests

# The multi-host test (issue 22): three pgswift hosts in network namespaces behind HAProxy, one PostgreSQL
# (Tests/EndToEndTests/FleetTests.swift; about a minute), and read/write routing's switchover (issue 20:
# RoutingSwitchoverTests in Tests/EndToEndTests/RoutingTests.swift, a primary and two standbys). Needs root for `ip netns`; skips with the reason
# where the machine cannot make namespaces.
test-cluster: deps-test
	scripts/install-deps.sh cluster
	$(SWIFT) build --build-tests -j $(JOBS)
	PGSWIFT_BIN_DIR="$${PGSWIFT_BIN_DIR:-$$($(SWIFT) build --show-bin-path)}" $(SWIFT) test --skip-build $(TEST_FLAGS) \
		--filter 'FleetTests|RoutingSwitchoverTests'

# The Debian package under a real systemd (issue 22): systemd-nspawn --boot on a debootstrapped bookworm
# (cached in .build/systemd-rootfs), the .deb installed, start/status/reload/watchdog/upgrade/stop checked
# (scripts/test-systemd.sh; about 2 minutes, plus `make deb` and, once, debootstrap's 90 s). Needs root;
# prints SKIP with the reason and succeeds where the machine cannot boot systemd in a container.
test-systemd: deps-test
	scripts/install-deps.sh systemd
	JOBS=$(JOBS) scripts/test-systemd.sh

run: deps-test build
	scripts/demo.sh

# The fuzzer (issue 14; README "Fuzzing"): a real PostgreSQL and pgswift, >= 1 M pre-auth and >= 1 M post-auth
# inputs within FUZZ_SECONDS, then crash and frozen-pool checks. Never part of `make test`. FUZZ_SEED replays a
# run (drawn and printed when unset); findings and pgswift's log go to fuzz/out/.
FUZZ_SECONDS ?= 570
FUZZ_SEED    ?=

fuzz: deps-test
	$(SWIFT) build -c release -j $(JOBS)
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_SEED=$(FUZZ_SEED) PGSWIFT_BIN_DIR="$${PGSWIFT_BIN_DIR:-$(CURDIR)/$(RELEASE)}" \
		PYTHONDONTWRITEBYTECODE=1 python3 fuzz/fuzz.py

# Benchmarks (bench/README.md); never part of `make test`. Tune with BENCH_DURATION, BENCH_REPEATS...
BENCH_PY := PYTHONDONTWRITEBYTECODE=1 python3

# They measure the binaries the Debian package ships (deb-binaries' build: Swift runtime linked in), not
# `make build`'s: a dynamically linked libswiftCore & co. add ~5 MiB of resident pages to every process.
BENCH_BIN = $${PGSWIFT_BIN_DIR:-$(CURDIR)/$(DEB_BUILD)/release}

bench: bench-binaries
	scripts/install-deps.sh bench
	BENCH_MAKE_TARGET=bench PGSWIFT_BIN_DIR="$(BENCH_BIN)" $(BENCH_PY) bench/bench.py

bench-quick: bench-binaries
	scripts/install-deps.sh bench
	BENCH_MAKE_TARGET=bench-quick BENCH_QUICK=1 PGSWIFT_BIN_DIR="$(BENCH_BIN)" $(BENCH_PY) bench/bench.py

microbench: bench-binaries
	scripts/install-deps.sh bench
	PGSWIFT_BIN_DIR="$(BENCH_BIN)" $(BENCH_PY) bench/microbench.py

# Where each pooler's CPU goes per transaction (perf record, system call by system call): bench/PROFILE.md.
profile: bench-binaries
	scripts/install-deps.sh bench profile
	PGSWIFT_BIN_DIR="$(BENCH_BIN)" $(BENCH_PY) bench/profile.py $(PROFILE_ARGS)

bench-binaries: deps-build
	$(SWIFT) build -c release -j $(JOBS) --static-swift-stdlib --scratch-path $(DEB_BUILD) $(DEB_LDFLAGS)

check-config: build
	$(RELEASE)/pgswift --check-config $(CONFIG)

clean:
	rm -rf .build .build-deb

# Debian package (Packaging/README.md): pgswift_<version>-1_<arch>.deb in DEB_OUT. Release binaries with
# the Swift standard library linked in (no Swift runtime on the target), in their own build folder so
# `make build` is not rebuilt. DEB_VERSION=0.1.0-2 repackages the same binaries under another version.
DEB_BUILD := .build-deb
DEB_OUT   ?= .
DEB_LDFLAGS := -Xlinker -z -Xlinker relro -Xlinker -z -Xlinker now

deb-binaries: deps-build bench-binaries
	scripts/install-deps.sh deb

deb: deb-binaries
	Packaging/build-deb.sh $(DEB_BUILD)/release $(DEB_OUT)
