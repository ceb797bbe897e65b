# petfabric build and test entry points. `make test` is the one CI runs: on a fresh Debian
# machine it installs the Debian packages and builds the pinned tools it needs, then runs
# gofmt, go vet, staticcheck and every test suite against the real parts.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

GO            ?= go
TOOLS_ENV     := $(shell hack/build-tools.sh env 2>/dev/null)
STATICCHECK   := $(word 2,$(subst =, ,$(filter PETFABRIC_STATICCHECK_BIN=%,$(TOOLS_ENV))))/staticcheck
TEST_TIMEOUT  ?= 25m
TEST_FLAGS    ?=
# Test packages run two at a time on 2 cores (go test 811 s warm). Three at a time took 579 s here,
# but on CI's machine the extra load pushed scheduling-timing assertions past their bounds.
TEST_PARALLEL ?= 2
PKGS          ?= ./...
LOG_DIR       ?= $(CURDIR)/.cache/test-logs
# VERSION is stamped into the binaries (pkg/version; --version, petfabric_build_info).
VERSION       ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS       := -X github.com/petfabric/petfabric/pkg/version.Version=$(VERSION)

.PHONY: all test setup apt tools lint fmt vet staticcheck tidy doccheck gotest bench build clean

all: build

## demo: the whole product on this machine and the 2016 Datera/PetSet blog walkthrough, narrated
## (test/product/cmd/demo): a control plane with 3 real kubelet nodes (one cannot reach the
## storage), the Datera simulator exporting tgtd targets, petfabric installed with its chart.
## KEEP=1 leaves it running (prints the kubeconfig and a kubectl line); Ctrl-C cleans up.
.PHONY: demo
demo: DEMO_T0 := $(shell date +%s%N)
demo: setup
	@echo "==> building the demo (the first run compiles the programs; later runs only link)"
	@$(GO) build -o bin/demo ./test/product/cmd/demo
	@PETFABRIC_DEMO_T0=$(DEMO_T0) exec bin/demo $(if $(KEEP),--keep)

## test: everything CI checks, from a cold machine.
test: setup lint gotest

## setup: Debian packages and pinned tools (idempotent; a warm run builds nothing).
setup: apt tools

apt:
	@echo "==> Debian packages"
	@hack/setup-apt.sh

tools:
	@echo "==> pinned tools (cache: $${PETFABRIC_CACHE:-$$HOME/.cache/petfabric})"
	@hack/build-tools.sh

## build: compile everything; the three programs land in bin/, stamped with $(VERSION).
build:
	$(GO) build ./...
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/ ./cmd/webhook ./cmd/extender ./cmd/flex

## image: the container image (webhook, extender and flex, static, non-root user 65532) as an
## OCI image layout (bin/image/oci) and a `docker load`-able tarball (bin/image/petfabric-image.tar),
## built without a container daemon by hack/image; the Dockerfile builds the same for docker users.
.PHONY: image
image:
	$(GO) run ./hack/image -out bin -version "$(VERSION)" -ldflags "$(LDFLAGS)"

lint: fmt vet staticcheck tidy doccheck

fmt:
	@echo "==> gofmt"
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [[ -n "$$out" ]]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	@echo "==> go vet"
	@$(GO) vet ./...

staticcheck:
	@echo "==> staticcheck"
	@$(STATICCHECK) ./...

## tidy: go.mod and go.sum are what `go mod tidy` makes of the imports (a direct import is not
## marked indirect, nothing unused is required).
tidy:
	@echo "==> go mod tidy -diff"
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum are not tidy: run go mod tidy and commit the result"; exit 1; }

## doccheck: no comment or document cites a file the repository does not contain.
doccheck:
	@echo "==> doccheck (dangling file references in comments and docs)"
	@$(GO) run ./hack/doccheck -root .

## gotest: all suites; a missing real part fails the run (PETFABRIC_STRICT=1) instead of skipping.
gotest:
	@echo "==> go test $(PKGS) (full log: $(LOG_DIR)/go-test.log)"
	@mkdir -p $(LOG_DIR)
	@start=$$SECONDS; set +e; \
	  PETFABRIC_STRICT=1 $(GO) test -count=1 -p $(TEST_PARALLEL) -timeout $(TEST_TIMEOUT) -v $(TEST_FLAGS) $(PKGS) 2>&1 | tee $(LOG_DIR)/go-test.log; \
	  status=$${PIPESTATUS[0]}; set -e; \
	  count() { grep -cE "^\s*--- $$1" $(LOG_DIR)/go-test.log || true; }; \
	  echo "==> go test finished in $$((SECONDS - start))s"; \
	  echo "tests: $$(count PASS) passed, $$(count FAIL) failed, $$(count SKIP) skipped"; \
	  if [ $$status -ne 0 ]; then echo "==> failures (digest of $(LOG_DIR)/go-test.log)"; $(GO) run ./hack/testdigest $(LOG_DIR)/go-test.log || true; fi; \
	  exit $$status

## bench: the benchmarks whose figures go into the issue notes (each compares with a baseline
## measured in the same run). The e2e ones start their own control plane, so their iteration
## counts are fixed instead of grown by the benchmark loop. Every line's output is kept in
## $(BENCH_LOG); a failing line does not stop the others (make prints "ignored"), and the run
## ends with hack/benchtable's table (figure, value, baseline, ratio, goal), also written to
## $(BENCH_JSON); it exits 1 when go test reported a failure or a row is missing. Its rows are
## listed in hack/benchtable/rows.go: a new row is a benchmark here plus a Spec there.
BENCH_DIR     ?= $(CURDIR)/.cache/bench
BENCH_LOG     ?= $(BENCH_DIR)/bench.txt
BENCH_JSON    ?= $(CURDIR)/bench.json
BENCH_TEE     := 2>&1 | tee -a $(BENCH_LOG)

bench:
	@mkdir -p $(BENCH_DIR) && printf 'commit: %s\nversion: %s\ndate: %s\n' \
	  "$$(git rev-parse HEAD 2>/dev/null || echo unknown)" "$(VERSION)" "$$(date -u +%Y-%m-%dT%H:%M:%SZ)" > $(BENCH_LOG)
	-PETFABRIC_STRICT=1 $(GO) test -p 1 -run '^$$' -bench . -benchmem ./pkg/... ./cmd/... $(BENCH_TEE)
	-PETFABRIC_STRICT=1 $(GO) test -run '^$$' -bench RoundTrip -cpu 1 ./pkg/datera/ $(BENCH_TEE)
	-PETFABRIC_STRICT=1 $(GO) test -run '^$$' -bench StatefulSetCreate -benchtime 100x ./test/e2e/ $(BENCH_TEE)
	-PETFABRIC_STRICT=1 $(GO) test -run '^$$' -bench ClaimsBound100 -benchtime 1x -timeout 20m ./test/e2e/ $(BENCH_TEE)
	-PETFABRIC_STRICT=1 $(GO) test -run '^$$' -bench BindingModes100 -benchtime 1x -timeout 30m ./test/e2e/ $(BENCH_TEE)
	-PETFABRIC_STRICT=1 $(GO) test -run '^$$' -bench Scale100 -benchtime 1x -timeout 15m ./test/e2e/scale/ $(BENCH_TEE)
	-PETFABRIC_STRICT=1 $(GO) test -run '^$$' -bench RecoveryRequeue -benchtime 1x -timeout 30m ./test/e2e/extender/ $(BENCH_TEE)
	-PETFABRIC_STRICT=1 $(GO) test -run '^$$' -bench KubeletPodRunning -benchtime 1x -timeout 20m ./test/e2e/kubelet/ $(BENCH_TEE)
	-PETFABRIC_STRICT=1 $(GO) test -run '^$$' -bench CacheRSS -benchtime 1x -timeout 60m ./test/e2e/ $(BENCH_TEE)
	@$(MAKE) --no-print-directory bench-table

## bench-table: the table and $(BENCH_JSON) from the output make bench kept in $(BENCH_LOG)
## (again, e.g. after a run that stopped; a partial log: BENCH_TABLE_FLAGS=-allow-missing). The
## commit, version and date are the ones make bench wrote at the top of the log (the code
## measured); -commit/-version only fill in for a log without them.
.PHONY: bench-table bench-compare
BENCH_TABLE_FLAGS ?=
bench-table:
	$(GO) run ./hack/benchtable table -in $(BENCH_LOG) -json $(BENCH_JSON) $(BENCH_TABLE_FLAGS) \
	  -commit "$$(git rev-parse HEAD 2>/dev/null || echo unknown)" -version "$(VERSION)"

## bench-compare: OLD=a.json NEW=b.json prints each row's NEW/OLD and flags (exit 1) rows
## more than 10% worse in their unit's direction (rates lower, times/bytes/counts higher).
bench-compare:
	@[[ -n "$(OLD)" && -n "$(NEW)" ]] || { echo "usage: make bench-compare OLD=old-bench.json NEW=new-bench.json"; exit 2; }
	$(GO) run ./hack/benchtable compare $(OLD) $(NEW)

clean:
	rm -rf bin .cache
