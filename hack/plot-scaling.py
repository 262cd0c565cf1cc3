#!/usr/bin/env python3
"""Plot `render` CPU time and peak RSS against cluster size (BENCHMARKS.md).

Usage: hack/plot-scaling.py [--bin PATH] [--runs N] [--out PNG] [SIZES...]
Defaults: target/release/kube-proxy-rs, 3 runs per size (best CPU time and the largest peak RSS
are plotted), docs/render-scaling.png, sizes 1000 2000 5000 10000 20000 Services x 5
endpoints from hack/gen-cluster.py. Needs matplotlib (pip install matplotlib); not run in
CI. Prints a markdown table of the figures too.
"""
import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(binary, d):
    """One `render` run under /usr/bin/time: (wall s, CPU s = user + sys, peak RSS MiB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        subprocess.run(
            ["/usr/bin/time", "-o", t.name, "-f", "%e %U %S %M", binary, "render",
             "--config", os.path.join(d, "config.yaml"),
             "--objects", os.path.join(d, "objects.yaml")],
            check=True, stdout=subprocess.DEVNULL)
        wall, user, sys_, kib = t.read().split()[-4:]
    return float(wall), float(user) + float(sys_), int(kib) / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/kube-proxy-rs"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/render-scaling.png"))
    ap.add_argument("--endpoints", type=int, default=5)
    ap.add_argument("sizes", nargs="*", type=int, default=[1000, 2000, 5000, 10000, 20000])
    a = ap.parse_args()
    rows = []
    for n in a.sizes:
        d = os.path.join(ROOT, "target/bench/%d-%d" % (n, a.endpoints))
        if not os.path.exists(os.path.join(d, "objects.yaml")):
            subprocess.run([sys.executable, os.path.join(ROOT, "hack/gen-cluster.py"),
                            str(n), str(a.endpoints), d], check=True, stdout=subprocess.DEVNULL)
        mb = os.path.getsize(os.path.join(d, "objects.yaml")) / 1e6
        runs = [measure(a.bin, d) for _ in range(a.runs)]
        rows.append((n, mb, min(r[0] for r in runs), min(r[1] for r in runs),
                     max(r[2] for r in runs)))
    print("| Services x %d | objects YAML | wall (best of %d) | CPU user+sys (best) | peak RSS (max) |"
          % (a.endpoints, a.runs))
    print("|---|---|---|---|---|")
    for n, mb, wall, cpu, rss in rows:
        print("| %d | %.1f MB | %.2f s | %.2f s | %.0f MiB |" % (n, mb, wall, cpu, rss))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    xs = [r[0] for r in rows]
    fig, ax1 = plt.subplots(figsize=(7, 4))
    # CPU time: on a shared machine it is far steadier than wall time.
    ax1.plot(xs, [r[3] for r in rows], "o-", color="tab:blue", label="CPU time")
    ax1.set_xlabel("Services (x %d endpoints each)" % a.endpoints)
    ax1.set_ylabel("render CPU time, user + sys (s)", color="tab:blue")
    ax1.set_ylim(bottom=0)
    ax2 = ax1.twinx()
    ax2.plot(xs, [r[4] for r in rows], "s--", color="tab:red", label="peak RSS")
    ax2.set_ylabel("peak RSS (MiB)", color="tab:red")
    ax2.set_ylim(bottom=0)
    ax1.set_title("kube-proxy-rs render: YAML objects in, restore payload out")
    ax1.grid(True, alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    fig.savefig(a.out, dpi=100)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
