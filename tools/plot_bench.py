#!/usr/bin/env python3
"""Turns `attn bench --format json` output (and optionally tools/bench_torch.py's) into PNG
charts: throughput vs seq_len per implementation, and the fraction of the FMA peak.
Needs Debian's python3-matplotlib; run with /usr/bin/python3.

    attn bench --seq-len 128,256,512,1024,2048 --batch 1 --impl fused,unfused \\
        --threads 1,2 --format json > bench.json
    /usr/bin/python3 tools/plot_bench.py bench.json --out docs/img/bench
"""
import argparse
import json
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(paths):
    rows = []
    for p in paths:
        with open(p) as f:
            rows.extend(json.load(f))
    return [r for r in rows if "seq_len" in r]


def series(rows, value):
    """Groups rows into lines keyed by (impl, threads, batch), sorted by seq_len."""
    lines = defaultdict(list)
    for r in rows:
        if value not in r:
            continue
        key = f"{r['impl']} ({r.get('backend', '')}, {r['threads']} thr, batch {r['batch']})"
        lines[key].append((r["seq_len"], r[value]))
    return {k: sorted(v) for k, v in sorted(lines.items())}


def chart(rows, value, ylabel, title, path, log_y=False):
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, points in series(rows, value).items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xscale("log", base=2)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("seq_len (tokens)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("json", nargs="+", help="attn bench --format json outputs (and bench_torch.py outputs)")
    p.add_argument("--out", default="bench", help="output prefix: <out>-throughput.png, <out>-peak.png")
    a = p.parse_args()
    rows = load(a.json)
    if not rows:
        raise SystemExit("no rows with seq_len in " + ", ".join(a.json))
    d = rows[0].get("d_model", "?")
    h = rows[0].get("heads", "?")
    cpu = next((r["cpu_model"] for r in rows if r.get("cpu_model")), "this machine")
    chart(rows, "gflops", "GFLOP/s (attention counts visible pairs only)",
          f"attention layer, d {d}, {h} heads, causal - {cpu}", a.out + "-throughput.png", log_y=True)
    if any("peak_fraction" in r for r in rows):
        chart(rows, "peak_fraction", "fraction of the FMA peak (all threads used)",
              f"fraction of peak, d {d}, {h} heads - {cpu}", a.out + "-peak.png")


if __name__ == "__main__":
    main()
