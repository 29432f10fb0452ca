"""Benchmark: soft_topk_mask / soft_topk vs lax.top_k and ott-jax's topk_mask (float32).

For a batch of 64 rows of n standard-normal scores and several k, prints a Markdown table of
median times (jit, warmed up, ``block_until_ready``) as ratios to ``lax.top_k`` of the same array
measured in the same run, and the Σ-error ``max |Σ mask - k|`` of each soft mask.

- fwd: the op alone; fwd+bwd: ``jax.grad`` of ``<op(x), u>`` (for ``lax.top_k``: of its values).
- ``soft_topk`` (sorted, k+1 anchors, Sinkhorn) is run only for k <= ``--max-sorted-k`` (its
  Sinkhorn works on n×(k+1) matrices, so k = n/8 would be n²/8 per row).
- ott-jax (optional extra ``bench``) is run with its defaults when importable.

    python benchmarks/bench_topk.py            # full table (a few minutes on a 2-core CPU)
    python benchmarks/bench_topk.py --quick    # n in {256, 4096}, fewer repeats
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from softops.topk_ot import soft_topk, soft_topk_mask

try:
    from ott.tools.soft_sort import topk_mask as ott_topk_mask
except ImportError:  # optional
    ott_topk_mask = None


def timeit(fn, *args, repeats: int) -> float:
    """Median wall time in ms of a jitted call (after one warm-up call)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def fwd_bwd(op, u):
    """jit(grad(<op(x), u>)) where op returns an array of the shape of u."""
    return jax.jit(jax.grad(lambda x: jnp.sum(op(x) * u)))


def sum_error(mask, k) -> float:
    return float(np.max(np.abs(np.asarray(mask, np.float64).sum(-1) - k)))


def bench_case(n: int, k: int, *, batch: int, epsilon: float, repeats: int, max_sorted_k: int):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, n)), jnp.float32)
    u = jnp.asarray(rng.standard_normal((batch, n)), jnp.float32)
    row = {"n": n, "k": k}

    def hard(x):
        return lax.top_k(x, k)[0]

    row["topk_fwd"] = timeit(jax.jit(hard), x, repeats=repeats)
    row["topk_fb"] = timeit(fwd_bwd(hard, u[:, :k]), x, repeats=repeats)

    def mask(x):
        return soft_topk_mask(x, k, epsilon=epsilon)

    row["mask_fwd"] = timeit(jax.jit(mask), x, repeats=repeats)
    row["mask_fb"] = timeit(fwd_bwd(mask, u), x, repeats=repeats)
    row["mask_err"] = sum_error(jax.jit(mask)(x), k)
    row["mask_grad_finite"] = bool(jnp.all(jnp.isfinite(fwd_bwd(mask, u)(x))))

    if ott_topk_mask is not None and k < n:

        def ott(x):
            return ott_topk_mask(x, axis=-1, k=k)

        row["ott_fwd"] = timeit(jax.jit(ott), x, repeats=max(1, repeats // 3))
        row["ott_fb"] = timeit(fwd_bwd(ott, u), x, repeats=max(1, repeats // 3))
        row["ott_err"] = sum_error(jax.jit(ott)(x), k)
        row["ott_grad_finite"] = bool(jnp.all(jnp.isfinite(fwd_bwd(ott, u)(x))))

    if k <= max_sorted_k:

        def sorted_vals(x):
            return soft_topk(x, k, epsilon=epsilon)[0]

        row["sorted_fwd"] = timeit(jax.jit(sorted_vals), x, repeats=max(1, repeats // 3))
        row["sorted_fb"] = timeit(fwd_bwd(sorted_vals, u[:, :k]), x, repeats=max(1, repeats // 3))
    return row


def fmt(v, digits=2):
    return "–" if v is None else f"{v:.{digits}f}"


def table(rows) -> str:
    head = (
        "| n | k | top_k fwd / fwd+bwd (ms) | mask fwd ×top_k | mask fwd+bwd ×top_k | "
        "mask Σ-err | ott fwd+bwd ×top_k | ott Σ-err | mask speed-up vs ott (fwd+bwd) | "
        "soft_topk fwd / fwd+bwd ×top_k |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        ott_ratio = r["ott_fb"] / r["topk_fb"] if "ott_fb" in r else None
        speedup = r["ott_fb"] / r["mask_fb"] if "ott_fb" in r else None
        ott_err = f"{r['ott_err']:.2g}" if "ott_err" in r else "–"
        if "ott_grad_finite" in r and not r["ott_grad_finite"]:
            ott_err += " (NaN grad)"
        sorted_col = (
            f"{r['sorted_fwd'] / r['topk_fwd']:.1f} / {r['sorted_fb'] / r['topk_fb']:.1f}"
            if "sorted_fwd" in r
            else "not run (k > cap)"
        )
        mask_err = f"{r['mask_err']:.2g}" + ("" if r["mask_grad_finite"] else " (NaN grad)")
        lines.append(
            f"| {r['n']} | {r['k']} | {r['topk_fwd']:.2f} / {r['topk_fb']:.2f} | "
            f"{r['mask_fwd'] / r['topk_fwd']:.2f} | {r['mask_fb'] / r['topk_fb']:.2f} | "
            f"{mask_err} | {fmt(ott_ratio, 1)} | {ott_err} | {fmt(speedup, 1)} | {sorted_col} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description="soft top-k benchmark")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--max-sorted-k", type=int, default=16)
    args = parser.parse_args()
    sizes = (256, 4096) if args.quick else (256, 4096, 32768)
    repeats = args.repeats or (3 if args.quick else 7)
    rows = []
    for n in sizes:
        for k in sorted({1, 16, n // 8}):
            rows.append(
                bench_case(
                    n, k, batch=args.batch, epsilon=args.epsilon, repeats=repeats,
                    max_sorted_k=args.max_sorted_k,
                )
            )
            print(f"done n={n} k={k}", flush=True)
    print(f"\nbatch {args.batch}, float32, epsilon={args.epsilon}, {jax.devices()[0].platform}, "
          f"ott-jax {'present' if ott_topk_mask else 'absent'}; medians of {repeats} runs\n")
    print(table(rows))


if __name__ == "__main__":
    main()
