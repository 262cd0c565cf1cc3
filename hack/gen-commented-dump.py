#!/usr/bin/env python3
"""Print an iptables-save dump (nat + filter) shaped like kube-proxy v1.30 writes for
N ClusterIP services with M endpoints each, WITH comments on every rule (the small-cluster
form; `render` drops them past 1000 endpoints, so large commented dumps come from here).
Chain names are the real hashes. Used by benches/audit.rs and BENCHMARKS.md.

Usage: hack/gen-commented-dump.py SERVICES ENDPOINTS > dump.save
Deterministic: the same arguments always produce the same bytes.
"""
import base64
import hashlib
import sys


def h(*parts):
    d = hashlib.sha256("".join(parts).encode()).digest()
    return base64.b32encode(d).decode()[:16]


def main():
    if len(sys.argv) != 3 or not all(a.isdigit() for a in sys.argv[1:]):
        sys.stderr.write(__doc__)
        sys.exit(2)
    n, m = int(sys.argv[1]), int(sys.argv[2])
    decl, rules, svc_rules = [], [], []
    for i in range(n):
        spn = f"ns-{i // 100}/svc-{i}:http"
        svc = h(spn, "tcp")
        vip = f"10.96.{i // 250}.{i % 250 + 1}"
        decl.append(f":KUBE-SVC-{svc} - [0:0]")
        svc_rules.append(
            f'-A KUBE-SERVICES -d {vip}/32 -p tcp -m comment --comment "{spn} cluster IP" '
            f"-m tcp --dport 80 -j KUBE-SVC-{svc}"
        )
        rules.append(
            f'-A KUBE-SVC-{svc} ! -s 10.128.0.0/9 -d {vip}/32 -p tcp -m comment --comment "{spn} cluster IP" '
            f"-m tcp --dport 80 -j KUBE-MARK-MASQ"
        )
        for j in range(m):
            k = i * m + j
            ip = f"10.{128 + k // 65536}.{k // 256 % 256}.{k % 256}"
            ep = f"{ip}:8080"
            sep = h(spn, "tcp", ep)
            decl.append(f":KUBE-SEP-{sep} - [0:0]")
            prob = ""
            if j < m - 1:
                fixed = round(2**31 / (m - j))
                prob = f" -m statistic --mode random --probability {fixed / 2**31:.11f}"
            rules.append(f'-A KUBE-SVC-{svc} -m comment --comment "{spn} -> {ep}"{prob} -j KUBE-SEP-{sep}')
            rules.append(f'-A KUBE-SEP-{sep} -s {ip}/32 -m comment --comment "{spn}" -j KUBE-MARK-MASQ')
            rules.append(
                f'-A KUBE-SEP-{sep} -p tcp -m comment --comment "{spn}" -m tcp -j DNAT --to-destination {ep}'
            )
    out = sys.stdout
    out.write("*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n")
    out.write(":KUBE-MARK-MASQ - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-SERVICES - [0:0]\n")
    out.write("\n".join(decl) + "\n")
    out.write('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n')
    out.write('-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n')
    out.write('-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING\n')
    out.write("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n")
    out.write("-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n")
    out.write("-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0\n")
    out.write('-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully\n')
    out.write("\n".join(svc_rules) + "\n")
    out.write(
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" '
        "-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n"
    )
    out.write("\n".join(rules) + "\nCOMMIT\n")


if __name__ == "__main__":
    main()
