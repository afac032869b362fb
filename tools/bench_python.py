#!/usr/bin/env python3
"""Times attn from Python against the chapter's PyTorch MultiHeadAttention and against the
engine's own time (`attn bench`), for docs/python.md. Run with Debian's python3:

    PYTHONPATH=build/release/python /usr/bin/python3 tools/bench_python.py \
        --attn build/release/tools/attn --threads 2

Measures, on gpt2-small shapes (batch 8, seq 1024, d 768, 12 heads, causal, qkv_bias):
  torch-chapter  the book's MultiHeadAttention in PyTorch (torch.inference_mode)
  attn-python    attn.MultiHeadAttention with the same state dict, called from Python
  attn-bench     `attn bench --preset gpt2-small` (the C++ engine timed in C++)
and the per-call overhead of layer(x) for x of shape [1, 1, 768]: Python's median minus
`attn bench --batch 1 --seq-len 1`'s median. Python and `attn bench` alternate for --rounds
rounds (the machine may be shared); each figure is the median of the rounds' medians.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

import attn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python", "tests"))


def median_ms(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def cli_median_ms(cli, args, threads, reps):
    out = subprocess.run([cli, "bench", *args, "--threads", str(threads), "--reps", str(reps),
                          "--format", "json"], check=True, capture_output=True, text=True).stdout
    rows = json.loads(out)
    rows = rows["results"] if isinstance(rows, dict) and "results" in rows else rows
    return rows[0]["median_ms"], rows[0]["min_ms"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--attn", default="build/release/tools/attn", help="the attn command")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=7, help="timed gpt2-small forwards per row")
    p.add_argument("--small-reps", type=int, default=3000, help="timed [1, 1, 768] calls per round")
    p.add_argument("--rounds", type=int, default=5, help="alternations of Python and attn bench")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch row")
    a = p.parse_args()

    rows = []
    b, n, d, h = 8, 1024, 768, 12
    x = np.random.default_rng(0).standard_normal((b, n, d)).astype(np.float32)
    layer = attn.MultiHeadAttention(d, d, 1024, 0.0, h, qkv_bias=True, threads=a.threads, seed=1)
    if not a.no_torch:
        import torch
        import chapter
        torch.set_num_threads(a.threads)
        torch.manual_seed(123)
        ref = chapter.MultiHeadAttention(d, d, 1024, 0.0, h, qkv_bias=True).eval()
        layer.load_state_dict(ref.state_dict())  # the swap: same weights in attn
        xt = torch.from_numpy(x)
        with torch.inference_mode():
            med, best = median_ms(lambda: ref(xt), 1, a.reps)
            diff = float((ref(xt) - layer(xt)).abs().max())
        rows.append(("torch-chapter (gpt2-small)", med, best))
        print(f"max |torch - attn| = {diff:.2e}", file=sys.stderr)

    # The machine may be shared: alternate Python and `attn bench` in rounds so that both see
    # the same background load, and take the median over all rounds.
    out = np.empty((b, n, d), dtype=np.float32)
    py_new, py_out, cli = [], [], []
    for _ in range(a.rounds):
        py_new.append(median_ms(lambda: layer(x), 1, a.reps)[0])
        py_out.append(median_ms(lambda: layer(x, out=out), 1, a.reps)[0])
        cli.append(cli_median_ms(a.attn, ["--preset", "gpt2-small", "--warmup", "1"],
                                 a.threads, a.reps)[0])
    med_py, med_out, med_cli = (statistics.median(v) for v in (py_new, py_out, cli))
    rows.append(("attn-python (gpt2-small)", med_py, min(py_new)))
    rows.append(("attn-python out= (gpt2-small)", med_out, min(py_out)))
    rows.append(("attn-bench (gpt2-small)", med_cli, min(cli)))

    one = np.random.default_rng(1).standard_normal((1, 1, d)).astype(np.float32)
    small_py, small_cli = [], []
    for _ in range(a.rounds):
        small_py.append(median_ms(lambda: layer(one), 200, a.small_reps)[0])
        small_cli.append(cli_median_ms(a.attn, ["--batch", "1", "--seq-len", "1", "--d-model",
                                                str(d), "--heads", str(h), "--warmup", "200"],
                                       a.threads, a.small_reps)[0])
    med_1, med_1c = statistics.median(small_py), statistics.median(small_cli)
    rows.append(("attn-python [1, 1, 768]", med_1, min(small_py)))
    rows.append(("attn-bench [1, 1, 768]", med_1c, min(small_cli)))

    # The binding's own cost, with almost no engine work: [1, 1, 16], 2 heads.
    tiny = attn.MultiHeadAttention(16, 16, 1024, 0.0, 2, qkv_bias=True, threads=a.threads, seed=1)
    t_one = np.ones((1, 1, 16), dtype=np.float32)
    tiny_py, tiny_cli = [], []
    for _ in range(a.rounds):
        tiny_py.append(median_ms(lambda: tiny(t_one), 1000, a.small_reps * 10)[0])
        tiny_cli.append(cli_median_ms(a.attn, ["--batch", "1", "--seq-len", "1", "--d-model", "16",
                                               "--heads", "2", "--warmup", "1000"],
                                      a.threads, a.small_reps * 10)[0])
    med_t, med_tc = statistics.median(tiny_py), statistics.median(tiny_cli)
    rows.append(("attn-python [1, 1, 16]", med_t, min(tiny_py)))
    rows.append(("attn-bench [1, 1, 16]", med_tc, min(tiny_cli)))

    print(f"{'what':32} {'median ms':>10} {'min ms':>10}   (threads {a.threads}, "
          f"isa {layer.isa}, {a.rounds} rounds)")
    for name, med, best in rows:
        print(f"{name:32} {med:10.4f} {best:10.4f}")
    print(f"gpt2-small: Python / attn bench = {med_py / med_cli:.4f} "
          f"({(med_py / med_cli - 1) * 100:+.2f} %); with out=: {med_out / med_cli:.4f} "
          f"({(med_out / med_cli - 1) * 100:+.2f} %)")
    print(f"[1, 1, 768]: Python call overhead = {(med_1 - med_1c) * 1e3:.2f} us "
          f"(median {med_1 * 1e3:.2f} us vs {med_1c * 1e3:.2f} us)")
    print(f"[1, 1, 16]: Python call overhead = {(med_t - med_tc) * 1e3:.2f} us "
          f"(median {med_t * 1e3:.2f} us vs {med_tc * 1e3:.2f} us)")
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
