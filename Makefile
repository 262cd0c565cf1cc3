# kube-proxy-rs — common tasks. `make test` is what CI runs.
CARGO ?= cargo
SHARED ?= ../shared
BIN := target/release/kube-proxy-rs
EXAMPLE := golden/upstream/realistic-cluster

.PHONY: all build demo render-example test unit conformance conformance-kernel lint bench bench-cli bench-apply clean

all: build

build:
	$(CARGO) build --release --locked

# The main job on a built-in example: render the rules of a small realistic cluster.
demo render-example: build
	$(BIN) render --config $(EXAMPLE)/config.yaml --objects $(EXAMPLE)/objects.yaml

# Every test: unit + golden + integration tests, then the corpus conformance run.
test: build unit conformance

unit:
	$(CARGO) test --release --locked

conformance: build
	@if [ -x $(SHARED)/tools/conformance ]; then \
		$(SHARED)/tools/conformance --bin $(BIN) --diff-lines 10; \
	else echo "$(SHARED)/tools/conformance not found: skipped (golden tests above cover the corpus)"; fi

# As root: also apply every corpus case in a fresh network namespace and compare
# iptables-legacy-save with expected.save.
conformance-kernel: build
	$(SHARED)/tools/conformance --bin $(BIN) --kernel --diff-lines 10

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

bench:
	$(CARGO) bench --locked --bench render

# Whole-command figures for BENCHMARKS.md (render of generated clusters from YAML).
bench-cli: build
	python3 hack/gen-cluster.py 10000 5 target/bench/10000-5 >/dev/null
	/usr/bin/time -v $(BIN) render --config target/bench/10000-5/config.yaml \
		--objects target/bench/10000-5/objects.yaml 2>target/bench/time.txt >/dev/null
	grep -E "Elapsed|Maximum resident" target/bench/time.txt

# iptables-restore times at 10,000 x 5 (root; see BENCHMARKS-apply.md). MODES="legacy nft".
MODES ?= legacy
bench-apply: build
	hack/bench-apply.sh $(MODES)

clean:
	$(CARGO) clean
