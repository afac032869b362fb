#!/usr/bin/env python3
"""Times the chapter's MultiHeadAttention in PyTorch on this machine (for comparison with
`attn bench`). Optional: needs Debian's python3-torch; run with /usr/bin/python3.

    /usr/bin/python3 tools/bench_torch.py --threads 1,2 --format json > torch.json

Implementations timed (forward only, eval mode, torch.inference_mode):
  chapter    - the book's MultiHeadAttention class (matmul, masked_fill, softmax, matmul)
  torch-mha  - torch.nn.MultiheadAttention(batch_first=True) called with a boolean causal
               attn_mask and need_weights=False. In PyTorch 1.13 an attn_mask turns the
               module's fused fast path off: this times its general path (projections,
               batched matmuls, softmax as separate operators), not PyTorch's fastest one
Rows carry the same fields as `attn bench --format json`, plus `blas`: the BLAS library
loaded. Debian's python3-torch uses whatever libblas.so.3 points to: the reference BLAS
(~4 GFLOP/s here) unless an optimised one is installed; for a fair comparison first run
    apt-get install libopenblas0-pthread
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn


class MultiHeadAttention(nn.Module):
    """Chapter 3's efficient multi-head attention, as the book writes it."""

    def __init__(self, d_in, d_out, context_length, dropout, num_heads, qkv_bias=False):
        super().__init__()
        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", torch.triu(torch.ones(context_length, context_length), diagonal=1))

    def forward(self, x):
        b, num_tokens, d_in = x.shape
        keys = self.W_key(x)
        queries = self.W_query(x)
        values = self.W_value(x)
        keys = keys.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        queries = queries.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        values = values.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
        attn_scores = queries @ keys.transpose(2, 3)
        mask_bool = self.mask.bool()[:num_tokens, :num_tokens]
        attn_scores.masked_fill_(mask_bool, -torch.inf)
        attn_weights = torch.softmax(attn_scores / keys.shape[-1] ** 0.5, dim=-1)
        attn_weights = self.dropout(attn_weights)
        context_vec = (attn_weights @ values).transpose(1, 2)
        context_vec = context_vec.contiguous().view(b, num_tokens, self.d_out)
        return self.out_proj(context_vec)


def flops(batch, seq, d, heads):
    """Counted as attn does: projections 2*M*d*4d, attention 4*head_dim per visible pair."""
    head_dim = d // heads
    visible = seq * (seq + 1) / 2
    return 2.0 * batch * seq * d * 4 * d + 4.0 * head_dim * visible * batch * heads


def blas_library():
    """Returns the BLAS library this process loaded: Debian's PyTorch calls libblas.so.3,
    which update-alternatives points at the reference BLAS unless e.g. libopenblas0-pthread
    is installed, and that decides PyTorch's speed here."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "blas" in line}
    except OSError:
        return ""
    return ",".join(sorted(os.path.realpath(p) for p in paths if p.startswith("/")))


def time_it(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1e3)
    return ms


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", default="1024", help="comma-separated")
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--threads", default="1,2", help="comma-separated")
    p.add_argument("--impl", default="chapter,torch-mha", help="comma-separated")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--format", choices=["json", "table"], default="table")
    a = p.parse_args()
    torch.manual_seed(123)
    d, h = a.d_model, a.heads
    rows = []
    with torch.inference_mode():  # load BLAS before blas_library() looks for it
        torch.rand(2, 2) @ torch.rand(2, 2)
    for seq in [int(s) for s in a.seq_len.split(",")]:
        x = torch.rand(a.batch, seq, d)
        chapter = MultiHeadAttention(d, d, seq, 0.0, h, qkv_bias=True).eval()
        mha = nn.MultiheadAttention(d, h, bias=True, batch_first=True).eval()
        causal = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)
        impls = {
            "chapter": lambda: chapter(x),
            "torch-mha": lambda: mha(x, x, x, attn_mask=causal, need_weights=False),
        }
        for threads in [int(t) for t in a.threads.split(",")]:
            torch.set_num_threads(threads)
            for name in a.impl.split(","):
                print(f"torch {name} threads {threads} seq_len {seq}", file=sys.stderr)
                with torch.inference_mode():
                    ms = time_it(impls[name], a.warmup, a.reps)
                med = statistics.median(ms)
                rows.append({
                    "impl": "torch-" + name if not name.startswith("torch") else name,
                    "backend": "pytorch-" + torch.__version__, "isa": torch.backends.cpu.get_cpu_capability()
                    if hasattr(torch.backends, "cpu") and hasattr(torch.backends.cpu, "get_cpu_capability") else "",
                    "threads": threads, "d_model": d, "heads": h, "causal": True, "batch": a.batch,
                    "seq_len": seq, "median_ms": med, "min_ms": min(ms), "max_ms": max(ms),
                    "gflops": flops(a.batch, seq, d, h) / (med * 1e-3) * 1e-9,
                    "tokens_per_s": a.batch * seq / (med * 1e-3),
                    "blas": blas_library(),
                })
    if a.format == "json":
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        keys = ["impl", "threads", "batch", "seq_len", "median_ms", "min_ms", "max_ms", "gflops", "tokens_per_s"]
        print("  ".join(f"{k:>12}" for k in keys))
        for r in rows:
            print("  ".join(f"{r[k]:>12.4g}" if isinstance(r[k], float) else f"{r[k]:>12}" for k in keys))


if __name__ == "__main__":
    main()
