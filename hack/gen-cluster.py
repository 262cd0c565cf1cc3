#!/usr/bin/env python3
"""Generate a synthetic cluster for benchmarks, shaped like upstream's proxier benchmark:
N ClusterIP services with M ready endpoints each, every 4th service with a second port.

Usage: hack/gen-cluster.py SERVICES ENDPOINTS [OUT_DIR]
Writes OUT_DIR/objects.yaml (multi-document YAML: Node, Services, EndpointSlices) and
OUT_DIR/config.yaml. OUT_DIR defaults to target/bench/SERVICES-ENDPOINTS.
Deterministic: the same arguments always produce the same bytes.
"""
import os
import sys


def ip4(n):
    return "%d.%d.%d.%d" % ((n >> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    n_svc, n_ep = int(sys.argv[1]), int(sys.argv[2])
    out_dir = sys.argv[3] if len(sys.argv) > 3 else "target/bench/%d-%d" % (n_svc, n_ep)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.yaml"), "w") as f:
        f.write(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n"
            "kind: KubeProxyConfiguration\n"
            "hostnameOverride: node-0\n"
            "clusterCIDR: 10.0.0.0/8\n"
        )
    svc_base = (10 << 24) | (96 << 16)  # 10.96.0.0/12
    ep_base = (10 << 24) | (128 << 16)  # pod IPs from 10.128.0.0
    parts = [
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-0\n  labels:\n"
        "    kubernetes.io/hostname: node-0\n    topology.kubernetes.io/zone: zone-a\n"
        "spec:\n  podCIDRs:\n  - 10.128.0.0/24\n"
        "status:\n  addresses:\n  - type: InternalIP\n    address: 192.168.0.10\n"
    ]
    ep_n = 0
    for i in range(n_svc):
        name = "svc-%d" % i
        ns = "ns-%d" % (i % 50)
        two_ports = i % 4 == 0
        ports = "  - name: http\n    port: 80\n    protocol: TCP\n    targetPort: 8080\n"
        if two_ports:
            ports += "  - name: https\n    port: 443\n    protocol: TCP\n    targetPort: 8443\n"
        cip = ip4(svc_base + 1 + i)
        parts.append(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n  namespace: %s\n"
            "  labels:\n    app: %s\nspec:\n  type: ClusterIP\n  clusterIP: %s\n"
            "  clusterIPs:\n  - %s\n  ipFamilies:\n  - IPv4\n  ipFamilyPolicy: SingleStack\n"
            "  selector:\n    app: %s\n  sessionAffinity: None\n  ports:\n%s"
            % (name, ns, name, cip, cip, name, ports)
        )
        eps = []
        for j in range(n_ep):
            eps.append(
                "- addresses:\n  - %s\n  conditions:\n    ready: true\n    serving: true\n"
                "    terminating: false\n  nodeName: node-%d\n  zone: zone-a\n"
                "  targetRef:\n    kind: Pod\n    name: %s-%d\n    namespace: %s\n"
                % (ip4(ep_base + ep_n), (ep_n % 100), name, j, ns)
            )
            ep_n += 1
        slice_ports = "- name: http\n  port: 8080\n  protocol: TCP\n"
        if two_ports:
            slice_ports += "- name: https\n  port: 8443\n  protocol: TCP\n"
        parts.append(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n"
            "  name: %s-abcde\n  namespace: %s\n  labels:\n"
            "    kubernetes.io/service-name: %s\n"
            "    endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io\n"
            "addressType: IPv4\nendpoints:\n%sports:\n%s"
            % (name, ns, name, "".join(eps), slice_ports)
        )
    with open(os.path.join(out_dir, "objects.yaml"), "w") as f:
        f.write("---\n".join(parts))
    print(out_dir)


if __name__ == "__main__":
    main()
