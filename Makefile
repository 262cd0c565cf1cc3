# kube-proxy-rs — common tasks. `make test` is what CI runs.
CARGO ?= cargo
SHARED ?= ../shared
BIN := target/release/kube-proxy-rs
EXAMPLE := golden/upstream/realistic-cluster

.PHONY: all build demo demo-if-root render-example test unit conformance conformance-kernel conformance-kernel-if-root lint bench bench-cli bench-apply bench-daemon bench-sync clean golden-check bench-audit

all: build

build:
	$(CARGO) build --release --locked

# The main job on a built-in example: the daemon in throwaway network namespaces, with a
# request through a ClusterIP reaching a pod (root). `render-example` needs no root.
demo: build
	BIN=$(BIN) hack/demo.sh

demo-if-root: build
	@if [ "$$(id -u)" = 0 ]; then BIN=$(BIN) hack/demo.sh; else echo "not root: demo skipped"; fi

render-example: build
	$(BIN) render --emulated-version 1.30 --config $(EXAMPLE)/config.yaml --objects $(EXAMPLE)/objects.yaml

# Every test: unit, golden, property and netns tests, the corpus conformance run, the
# audit golden check, and (as root) the corpus applied to a real kernel.
test: build unit conformance golden-check conformance-kernel-if-root demo-if-root

unit:
	$(CARGO) test --release --locked

# Both corpora (the tool passes each corpus' VERSION as --emulated-version).
CORPORA := $(SHARED)/golden-upstream $(SHARED)/golden-upstream-v1.35

conformance: build
	@if [ -x $(SHARED)/tools/conformance ]; then \
		for c in $(CORPORA); do $(SHARED)/tools/conformance --bin $(BIN) --corpus $$c --diff-lines 10 || exit 1; done; \
	else echo "$(SHARED)/tools/conformance not found: skipped (golden tests above cover the corpus)"; fi

# As root: also apply every corpus case in a fresh network namespace and compare
# iptables-legacy-save with expected.save.
conformance-kernel: build
	for c in $(CORPORA); do $(SHARED)/tools/conformance --bin $(BIN) --corpus $$c --kernel --diff-lines 10 || exit 1; done

conformance-kernel-if-root: build
	@if [ "$$(id -u)" = 0 ] && [ -x $(SHARED)/tools/conformance ]; then \
		for c in $(CORPORA); do $(SHARED)/tools/conformance --bin $(BIN) --corpus $$c --kernel --diff-lines 10 || exit 1; done; \
	else echo "not root (or no ../shared/tools): kernel conformance skipped"; fi

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

bench:
	$(CARGO) bench --locked --bench render
	$(CARGO) bench --locked --bench guard

# Whole-command figures for BENCHMARKS.md (render of generated clusters from YAML).
bench-cli: build
	python3 hack/gen-cluster.py 10000 5 target/bench/10000-5 >/dev/null
	/usr/bin/time -v $(BIN) render --config target/bench/10000-5/config.yaml \
		--objects target/bench/10000-5/objects.yaml 2>target/bench/time.txt >/dev/null
	grep -E "Elapsed|Maximum resident" target/bench/time.txt

# iptables-restore times at 10,000 x 5 (root; see BENCHMARKS.md). MODES="legacy nft".
MODES ?= legacy
bench-apply: build
	hack/bench-apply.sh $(MODES)

# The daemon end to end at 10,000 x 5: start -> full sync, one endpoint moved -> partial
# sync, render/restore split, payload bytes, peak RSS (root; see BENCHMARKS.md).
# SOURCES="file api" (static objects file, the test API server over list/watch).
SOURCES ?= file api
bench-daemon: build
	$(CARGO) build --release --locked --example bench-apiserver
	SOURCES="$(SOURCES)" hack/bench-daemon.sh $(MODES)

# The sync path on real iptables in a scratch namespace (root): a fresh node's full sync,
# partial syncs (default and --iptables-minimal-restore payloads), and a restart on a node
# whose rules are right, each beside upstream's way (--upstream). SIZE="10000 5", MODES.
SIZE ?= 10000 5
bench-sync: build
	$(CARGO) build --release --locked --example bench-sync
	@d=target/bench/$$(echo $(SIZE) | tr ' ' -); python3 hack/gen-cluster.py $(SIZE) $$d >/dev/null; \
	for m in $(MODES); do for extra in "" --upstream "--minimal --no-restart"; do \
		ns=kprs-bsync-$$$$; ip netns add $$ns || exit 1; \
		echo "== $$m $$extra"; \
		ip netns exec $$ns target/release/examples/bench-sync $$d $$m 3 $$extra; rc=$$?; \
		ip netns del $$ns; [ $$rc = 0 ] || exit $$rc; \
	done; done

clean:
	$(CARGO) clean

# Every corpus state (both families, every step) rendered and compared with the kernel's
# iptables-save view by `kube-proxy-rs diff`: all must report equal.
golden-check: build
	@fail=0; n=0; for d in golden/upstream/*/ golden/upstream-v1.35/*/; do \
		v=$$(cat $${d}../VERSION); \
		c=$${d}config.yaml; \
		for s in $${d}expected.save $${d}step-*.save; do \
			[ -f "$$s" ] || continue; \
			o=$${d}objects.yaml; case $$s in *step-*.save) o=$${s%.save}/objects.yaml;; esac; \
			n=$$((n+1)); \
			$(BIN) diff --emulated-version $$v --config $$c --objects $$o --live $$s >/tmp/golden-check.out 2>&1 || { echo "DIFFERENT: $$s"; cat /tmp/golden-check.out; fail=1; }; \
		done; \
		if [ -f $${d}expected-ipv6.save ]; then n=$$((n+1)); \
			$(BIN) diff --emulated-version $$v --ip-family IPv6 --config $$c --objects $${d}objects.yaml --live $${d}expected-ipv6.save >/tmp/golden-check.out 2>&1 || { echo "DIFFERENT: $${d}expected-ipv6.save"; cat /tmp/golden-check.out; fail=1; }; fi; \
	done; echo "golden-check: $$n states compared"; exit $$fail

# Parse + diff of the ~300,000-line 10,000x5 dump (criterion), then iptables-legacy-save
# printing the same rules from a scratch namespace (as root) for comparison.
bench-audit: build
	$(CARGO) bench --locked --bench audit
	@if [ "$$(id -u)" = 0 ]; then \
		d=target/bench/10000-5; ns=kprs-bench-$$$$; \
		$(BIN) render --config $$d/config.yaml --objects $$d/objects.yaml > $$d/payload.rules; \
		ip netns add $$ns && trap "ip netns del $$ns" EXIT; \
		ip netns exec $$ns iptables-legacy-restore --noflush < $$d/payload.rules; \
		/usr/bin/time -f "iptables-legacy-save: %e s wall, %M KiB" ip netns exec $$ns iptables-legacy-save > $$d/kernel.save; \
		wc -l $$d/kernel.save; \
		/usr/bin/time -f "kube-proxy-rs diff (whole command, incl. YAML + render): %e s wall, %M KiB" \
			$(BIN) diff --config $$d/config.yaml --objects $$d/objects.yaml --live $$d/kernel.save | tail -1; \
	else echo "not root: iptables-save comparison skipped"; fi
