#!/usr/bin/env bash
# `make demo`: the daemon on a built-in example, in throwaway network namespaces.
# A "node" namespace runs kube-proxy-rs with a static object file; a "pod" namespace
# serves HTTP on 10.244.1.10:8080; a request from the node to the Service's ClusterIP
# 10.96.0.10:80 goes through the rules the daemon wrote and reaches the pod.
# Needs root (network namespaces). Only addresses inside these namespaces are used.
set -euo pipefail
BIN=${BIN:-target/release/kube-proxy-rs}
[ "$(id -u)" = 0 ] || { echo "make demo needs root (it creates network namespaces)"; exit 1; }
NODE=kprs-demo-node-$$ POD=kprs-demo-pod-$$
WORK=$(mktemp -d)
DAEMON=""
cleanup() {
    [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
    ip netns pids "$POD" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$NODE" 2>/dev/null || true
    ip netns del "$POD" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$NODE"
ip netns add "$POD"
ip -n "$NODE" link set lo up
ip -n "$POD" link set lo up
# The node's own address and a default route, so that a ClusterIP is routable at all.
ip -n "$NODE" link add eth0 type veth peer name eth0-peer
ip -n "$NODE" addr add 192.168.50.10/24 dev eth0
ip -n "$NODE" link set eth0 up
ip -n "$NODE" link set eth0-peer up
ip -n "$NODE" route add default via 192.168.50.1 dev eth0 onlink
# The pod, wired to the node by a veth pair.
ip link add kprsd$$ netns "$NODE" type veth peer name eth0 netns "$POD"
ip -n "$NODE" addr add 10.244.1.1/24 dev "kprsd$$"
ip -n "$NODE" link set "kprsd$$" up
ip -n "$POD" addr add 10.244.1.10/24 dev eth0
ip -n "$POD" link set eth0 up
ip -n "$POD" route add default via 10.244.1.1

mkdir -p "$WORK/www"
echo "hello from pod 10.244.1.10 (demo/web)" > "$WORK/www/index.html"
ip netns exec "$POD" python3 -m http.server 8080 --bind 10.244.1.10 --directory "$WORK/www" >/dev/null 2>&1 &

for _ in $(seq 1 50); do
    ip netns exec "$NODE" python3 -c 'import socket; socket.create_connection(("10.244.1.10", 8080), 1)' 2>/dev/null && break
    sleep 0.2
done

cat > "$WORK/objects.yaml" <<'YAML'
apiVersion: v1
kind: Node
metadata: {name: node-a}
status:
  addresses: [{type: InternalIP, address: 192.168.50.10}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: demo
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
- addresses: [10.244.1.10]
  nodeName: node-a
ports: [{name: http, port: 8080}]
YAML

# --conntrack-max-per-core 0: nf_conntrack_max and hashsize are host-global; leave them.
echo "== starting: kube-proxy-rs --objects objects.yaml --hostname-override node-a --cluster-cidr 10.244.0.0/16 --conntrack-max-per-core 0"
ip netns exec "$NODE" "$BIN" --objects "$WORK/objects.yaml" --hostname-override node-a \
    --cluster-cidr 10.244.0.0/16 --conntrack-max-per-core 0 --healthz-bind-address 127.0.0.1:10256 \
    --metrics-bind-address 127.0.0.1:10249 >"$WORK/daemon.log" 2>&1 &
DAEMON=$!

for _ in $(seq 1 100); do
    if ip netns exec "$NODE" iptables-legacy-save -t nat 2>/dev/null | grep -q "demo/web:http cluster IP"; then break; fi
    sleep 0.2
done
echo "== rules the daemon wrote for demo/web:"
ip netns exec "$NODE" iptables-legacy-save -t nat | grep -E "demo/web" || { cat "$WORK/daemon.log"; exit 1; }

echo "== request from the node to the ClusterIP http://10.96.0.10/"
ip netns exec "$NODE" python3 - <<'PY'
import urllib.request
print(urllib.request.urlopen("http://10.96.0.10/", timeout=10).read().decode().strip())
PY
echo "== healthz"
ip netns exec "$NODE" python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:10256/healthz", timeout=5).read().decode())'
echo
echo "== demo done (namespaces removed)"
