#!/usr/bin/env bash
# The daemon at 10,000 services x 5 endpoints, end to end, in fresh network namespaces:
# start -> first full sync applied, then one endpoint moved -> partial sync applied, the
# render / iptables-restore split of both syncs, payload bytes and the daemon's peak RSS.
#
# Usage (root): hack/bench-daemon.sh [MODE ...]        MODE: legacy | nft (default: both)
#   SOURCES="file api"   file: the daemon polls a static --objects file, rewritten
#                        atomically for the change; api: examples/bench-apiserver in the
#                        same namespace, the daemon with --master, the change over watch.
# Needs `cargo build --release --locked --bins --example bench-apiserver` (`make
# bench-daemon` does it). Logs and the summary go to target/bench/daemon/. An nft full
# restore at this size takes minutes (TIMEOUT_FULL bounds it).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "bench-daemon: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces and iptables)"

BIN=target/release/kube-proxy-rs
SERVER=target/release/examples/bench-apiserver
DIR=target/bench/10000-5
OUT=target/bench/daemon
SOURCES=${SOURCES:-"file api"}
MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(legacy nft)
TIMEOUT_START=${TIMEOUT_START:-120}
TIMEOUT_FULL=${TIMEOUT_FULL:-900}
TIMEOUT_PARTIAL=${TIMEOUT_PARTIAL:-180}
# The change: the first endpoint of the first slice (an IP no other slice lists) moves.
OLD_IP=10.128.0.0
NEW_IP=10.200.0.0

for b in "$BIN" "$SERVER"; do
    [ -x "$b" ] || die "$b missing: cargo build --release --locked --bins --example bench-apiserver"
done
for m in "${MODES[@]}"; do
    case $m in legacy | nft) command -v "iptables-$m-restore" >/dev/null || die "iptables-$m-restore not found" ;;
    *) die "unknown mode $m (legacy or nft)" ;; esac
done
for s in $SOURCES; do case $s in file | api) ;; *) die "unknown source $s (file or api)" ;; esac; done
[ -f "$DIR/objects.yaml" ] || python3 hack/gen-cluster.py 10000 5 "$DIR" >/dev/null
[ "$(grep -c "^  - $OLD_IP\$" "$DIR/objects.yaml")" = 1 ] || die "$OLD_IP is not a unique endpoint in $DIR"
mkdir -p "$OUT"

# State of the current run, for cleanup on any exit.
NS="" DPID="" SPID="" WATCH_PID=""
cleanup() {
    if [ -n "$DPID" ]; then kill "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true; fi
    if [ -n "$SPID" ]; then
        exec 3>&-
        kill "$SPID" 2>/dev/null || true
        wait "$SPID" 2>/dev/null || true
    fi
    if [ -n "$NS" ]; then ip netns del "$NS" 2>/dev/null || true; fi
    DPID="" SPID="" NS="" WATCH_PID=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The Nth line of FILE matching the extended regex RE (colour codes stripped), waiting
# up to TIMEOUT seconds; fails early if WATCH_PID exits.
wait_line() {
    local file=$1 re=$2 timeout=$3 n=${4:-1} line deadline=$((SECONDS + $3))
    while :; do
        line=$(sed 's/\x1b\[[0-9;]*m//g' "$file" 2>/dev/null | grep -E -- "$re" | sed -n "${n}p") || true
        [ -n "$line" ] && { printf '%s\n' "$line"; return 0; }
        if [ -n "$WATCH_PID" ] && ! kill -0 "$WATCH_PID" 2>/dev/null; then
            tail -20 "$file" >&2
            die "process $WATCH_PID exited while waiting for /$re/ in $file"
        fi
        [ $SECONDS -lt "$deadline" ] || { tail -5 "$file" >&2; die "timed out (${timeout}s) waiting for /$re/ in $file"; }
        sleep 0.1
    done
}
count_lines() { sed 's/\x1b\[[0-9;]*m//g' "$1" | grep -cE -- "$2" || true; }
# A field of a klog text line (`key=value` or `key="value"`).
field() { sed -n "s/.* $2=\"\?\([^ \"]*\).*/\1/p" <<<"$1"; }
# The klog header's time (`I1202 04:57:16.123456`, UTC, this year) as Unix seconds.
log_time() {
    local md=${1:1:4} hms=${1:6:15}
    date -u -d "$(date -u +%Y)-${md:0:2}-${md:2:2} $hms" +%s.%N
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }
mb() { awk -v k="$1" 'BEGIN { printf "%.0f MB", k / 1024 }'; }
# Jumps to endpoint chains that DNAT to IP in an iptables-save dump. (In large-cluster
# mode stale endpoint chains stay until the next stale-chain scan, as upstream's do, so
# the DNAT rules alone would still show the old endpoint.)
dnat_refs() {
    awk -v ip="$2" '
        $1 == "-A" && / --to-destination / {
            split($0, a, "--to-destination "); split(a[2], b, ":")
            if (b[1] == ip) sep[$2] = 1
            next
        }
        $1 == "-A" && $NF ~ /^KUBE-SEP-/ { jumps[$NF]++ }
        END { n = 0; for (c in sep) n += jumps[c]; print n }' "$1"
}
# A gauge from the daemon's /metrics (empty if absent).
metric() {
    ip netns exec "$NS" curl -sf --max-time 10 http://127.0.0.1:10249/metrics |
        awk -v m="$1" '$1 == m { print $2 }' || true
}
QUEUED=kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds
# The first V4 sync logged after line N of LOG that started at or after Unix time T
# (a periodic sync already running when the change came does not count).
wait_sync_after() {
    local log=$1 n=$2 t=$3 deadline=$((SECONDS + $4)) line start
    while :; do
        n=$((n + 1))
        line=$(wait_line "$log" 'Synced proxy rules" family="V4"' $((deadline - SECONDS + 1)) "$n")
        start=$(awk -v t="$(log_time "$line")" -v ms="$(field "$line" total_ms)" 'BEGIN { printf "%.6f", t - ms / 1000 }')
        if awk -v s="$start" -v t="$t" 'BEGIN { exit !(s >= t) }'; then
            printf '%s\n' "$line"
            return 0
        fi
    done
}
kb_of() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

ROWS=()
run() {
    local source=$1 mode=$2 tag="$1-$2"
    local log="$OUT/$tag.log" work="$OUT/$tag"
    rm -rf "$work" && mkdir -p "$work" && : >"$log"
    NS="kprs-bench-daemon-$tag-$$"
    ip netns add "$NS"
    ip netns exec "$NS" ip link set lo up
    # The daemon detects the mode as kube-proxy's image does: kubelet's hint chain wins.
    ip netns exec "$NS" "iptables-$mode" -t mangle -N KUBE-IPTABLES-HINT
    local src_args
    if [ "$source" = file ]; then
        cp "$DIR/objects.yaml" "$work/objects.yaml"
        src_args=(--objects "$work/objects.yaml")
    else
        mkfifo "$work/ctl"
        ip netns exec "$NS" "$SERVER" --objects "$DIR/objects.yaml" --listen 127.0.0.1:6443 \
            <"$work/ctl" >"$work/server.out" 2>&1 &
        SPID=$!
        exec 3>"$work/ctl"
        WATCH_PID=$SPID
        local url
        url=$(wait_line "$work/server.out" '^url ' "$TIMEOUT_START")
        src_args=(--master "${url#url }")
    fi

    local t0
    t0=$(date +%s.%N)
    NO_COLOR=1 ip netns exec "$NS" "$BIN" --config "$DIR/config.yaml" "${src_args[@]}" \
        --iptables-min-sync-period 1s -v 2 --metrics-bind-address 127.0.0.1:10249 \
        --healthz-bind-address 127.0.0.1:10256 >"$log" 2>&1 &
    DPID=$!
    WATCH_PID=$DPID
    # `ip netns exec` execs the daemon in place: make sure RSS is read from the daemon.
    local i
    for i in $(seq 50); do
        [[ "$(readlink "/proc/$DPID/exe" 2>/dev/null)" == */kube-proxy-rs ]] && break
        sleep 0.1
    done
    [[ "$(readlink "/proc/$DPID/exe")" == */kube-proxy-rs ]] || die "pid $DPID is not the daemon"

    echo "== $tag: waiting for the first full sync" >&2
    local full
    full=$(wait_line "$log" 'Synced proxy rules" family="V4" full=true' "$TIMEOUT_FULL")
    grep -q 'using iptables" family="V6"' "$log" &&
        wait_line "$log" 'Synced proxy rules" family="V6"' "$TIMEOUT_PARTIAL" >/dev/null
    grep -qi "mode=\"\?$mode" "$log" || echo "warning: $tag: mode line not found in $log" >&2
    local n queued_before
    queued_before=$(metric $QUEUED)
    n=$(count_lines "$log" 'Synced proxy rules" family="V4"')

    echo "== $tag: moving $OLD_IP -> $NEW_IP" >&2
    local tchange
    if [ "$source" = file ]; then
        sed "0,/  - $OLD_IP\$/s//  - $NEW_IP/" "$work/objects.yaml" >"$work/objects.yaml.new"
        mv "$work/objects.yaml.new" "$work/objects.yaml"
        tchange=$(date +%s.%N)
    else
        echo "move $OLD_IP $NEW_IP" >&3
        local moved
        moved=$(WATCH_PID=$SPID wait_line "$work/server.out" '^(moved|error)' 30)
        [[ $moved == moved* ]] || die "$moved"
        tchange=$(sed -n 's/.* at \([0-9.]*\) .*/\1/p' <<<"$moved")
    fi
    # The daemon stamps when it queued the change for a sync (event in, models compared);
    # the sync that applies it starts after that.
    local queued="" deadline=$((SECONDS + TIMEOUT_PARTIAL))
    while queued=$(metric $QUEUED) && [ -z "$queued" ] || [ "$queued" = "$queued_before" ]; do
        kill -0 "$DPID" 2>/dev/null || die "the daemon exited; see $log"
        [ $SECONDS -lt $deadline ] || die "timed out waiting for the change to be queued (see $log)"
        sleep 0.1
    done
    local part
    part=$(wait_sync_after "$log" "$n" "$queued" "$TIMEOUT_PARTIAL")
    grep -q 'using iptables" family="V6"' "$log" &&
        wait_line "$log" 'Synced proxy rules" family="V6"' "$TIMEOUT_PARTIAL" $(($(count_lines "$log" 'Synced proxy rules" family="V4"'))) >/dev/null
    # The kernel's view, timed: what the daemon's periodic stale-chain scan costs.
    local ts0 ts1 in_kernel=no new_refs old_refs
    ts0=$(date +%s.%N)
    ip netns exec "$NS" "iptables-$mode-save" -t nat >"$work/nat.save"
    ts1=$(date +%s.%N)
    new_refs=$(dnat_refs "$work/nat.save" "$NEW_IP") old_refs=$(dnat_refs "$work/nat.save" "$OLD_IP")
    echo "$tag: jumps to endpoint chains of $OLD_IP: $old_refs, of $NEW_IP: $new_refs" >&2
    [ "$new_refs" -gt 0 ] && [ "$old_refs" = 0 ] && in_kernel=yes
    local hwm rss load
    load=$(cut -d' ' -f1 /proc/loadavg)
    hwm=$(kb_of "$DPID" VmHWM) rss=$(kb_of "$DPID" VmRSS)
    [ -n "$SPID" ] && echo "$tag: bench-apiserver VmHWM $(mb "$(kb_of "$SPID" VmHWM)") (not the daemon)" >&2
    cleanup

    local tfull tpart tstart change_ms restore_ms render_ms other_ms
    tfull=$(log_time "$full") tpart=$(log_time "$part")
    restore_ms=$(field "$part" restore_ms) render_ms=$(field "$part" render_ms)
    other_ms=$(($(field "$part" total_ms) - render_ms - restore_ms))
    tstart=$(awk -v t="$tpart" -v ms="$(field "$part" total_ms)" 'BEGIN { printf "%.6f", t - ms / 1000 }')
    change_ms=$(ms "$tchange" "$tpart")
    local payload
    payload=$(field "$part" payload_bytes)
    [ "$(field "$part" full)" = false ] || payload+=" (a FULL sync)"
    local row
    row="| $source | $mode | $(secs "$t0" "$tfull") | $(field "$full" render_ms) / $(field "$full" restore_ms) / $(field "$full" total_ms) | $(field "$full" payload_bytes)"
    row+=" | $change_ms | $(ms "$tchange" "$queued") / $(ms "$queued" "$tstart") | $render_ms / $restore_ms / $other_ms | $payload"
    row+=" | $((change_ms - restore_ms)) | $in_kernel | $(secs "$ts0" "$ts1") | $(mb "$hwm") | $load |"
    echo "$row" >&2
    ROWS+=("$row")
}

for source in $SOURCES; do
    for mode in "${MODES[@]}"; do
        run "$source" "$mode"
    done
done

{
    echo "| source | iptables | start → full sync applied (s) | full sync: render / restore / total (ms) | full payload (bytes) | change → partial sync applied (ms) | change → queued / queued → sync start (ms) | partial sync: render / restore / ensure + stale-chain scan (ms) | partial payload (bytes) | change → applied − restore (ms) | new endpoint in kernel | iptables-save -t nat (s) | daemon peak RSS (VmHWM) | load (1 min) |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/summary.md"
