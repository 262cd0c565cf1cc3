#!/usr/bin/env bash
# Times iptables-restore of the 10,000 services x 5 endpoints payload (full sync) and of
# the partial payload after one endpoint change, each in a fresh network namespace.
# Usage (root): hack/bench-apply.sh [legacy|nft ...]   (default: legacy)
# Figures go to BENCHMARKS.md by hand; nft takes minutes.
set -eu
cd "$(dirname "$0")/.."
BIN=target/release/kube-proxy-rs
DIR=target/bench/10000-5
python3 hack/gen-cluster.py 10000 5 "$DIR" >/dev/null
# One endpoint moves: the first endpoint address of the first slice.
sed '0,/  - 10.128.0.0$/s//  - 10.200.0.0/' "$DIR/objects.yaml" > "$DIR/objects-step2.yaml"
/usr/bin/time -f "render full+partial: %e s, %M KB" "$BIN" render --config "$DIR/config.yaml" \
    --objects "$DIR/objects.yaml" --objects "$DIR/objects-step2.yaml" > "$DIR/syncs.txt"
awk -v dir="$DIR" '/^# sync 1 /{f=dir"/full.rules"; next} /^# sync 2 /{f=dir"/partial.rules"; next} {print > f}' "$DIR/syncs.txt"
wc -c "$DIR/full.rules" "$DIR/partial.rules"
for mode in "${@:-legacy}"; do
    ns="kprs-bench-$mode-$$"
    ip netns add "$ns"
    trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
    for p in full partial; do
        ip netns exec "$ns" /usr/bin/time -f "$mode $p restore: %e s wall, %U s user, %S s sys" \
            "iptables-$mode-restore" -w 5 -W 100000 --noflush --counters < "$DIR/$p.rules" 2>&1 \
            | grep -v "deprecated --wait-interval"
    done
    ip netns del "$ns"
    # Our whole apply (ensure + render + restore) in a fresh namespace, split in the log.
    ip netns add "$ns"
    RUST_LOG=info ip netns exec "$ns" \
        "$BIN" apply --config "$DIR/config.yaml" --objects "$DIR/objects.yaml" --iptables "$mode" 2>&1 \
        | grep "applied full sync" || true
    ip netns del "$ns"
done
