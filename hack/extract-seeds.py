#!/usr/bin/env python3
"""Extract the iptables rule dumps quoted in ../shared/seeds/ articles into golden/seeds/.

Usage: hack/extract-seeds.py SEEDS_DIR OUT_DIR
Each dump is a line range of an article; the article prints long rules wrapped with a
trailing backslash, which is undone here. Line-number gutters ("1", "2", ...) and "..."
placeholders are dropped; the articles' own "#" remarks are kept (iptables-save comments).
"""
import os
import sys

# (output name, seed file, first line, last line, what it is)
DUMPS = [
    ("k8s-1.9-nginx-web-1-one-endpoint.save", "002_c230d1116599057d.txt", 89, 98,
     "k8s 1.9, demo/nginx-web-1 with one endpoint (`iptables-save | grep nginx-web-1`)"),
    ("k8s-1.9-nat-hooks.save", "002_c230d1116599057d.txt", 105, 107,
     "k8s 1.9, the nat PREROUTING/OUTPUT jumps"),
    ("k8s-1.9-nginx-web-1-three-endpoints.save", "002_c230d1116599057d.txt", 141, 180,
     "k8s 1.9, demo/nginx-web-1 scaled to 3 endpoints (old 5-decimal probabilities)"),
    ("k8s-1.9-nginx-web-1-affinity.save", "002_c230d1116599057d.txt", 224, 256,
     "k8s 1.9, demo/nginx-web-1 with sessionAffinity ClientIP (article elides 4 rules)"),
    ("userspace-portals.save", "004_d77dda3c302b562d.txt", 152, 154,
     "pre-iptables userspace proxy mode: KUBE-PORTALS-CONTAINER redirect"),
]


def extract(lines):
    out, cur = [], ""
    for raw in lines:
        s = raw.strip()
        if not s or s.isdigit() or s == "...":
            continue
        if s.endswith("\\"):
            cur += s[:-1].rstrip() + " "
            continue
        out.append(cur + s)
        cur = ""
    if cur:
        out.append(cur.rstrip())
    return out


def main():
    seeds, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    for name, src, a, b, what in DUMPS:
        with open(os.path.join(seeds, src), encoding="utf-8") as f:
            lines = f.read().splitlines()[a - 1:b]
        body = extract(lines)
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            f.write("# Source: ../shared/seeds/%s, lines %d-%d\n# %s\n" % (src, a, b, what))
            for l in body:
                f.write(l + "\n")


if __name__ == "__main__":
    main()
