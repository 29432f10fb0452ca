"""``soft_topk_mask`` time as × ``lax.top_k`` of the same array (float32, one run).

    python benchmarks/bench_topk_mask.py              # the issue's shapes, ε 0.1 and 1e-3
    python benchmarks/bench_topk_mask.py --json out.json
    python benchmarks/bench_topk_mask.py --quick      # one small shape, few repeats (CI smoke)

Per (batch, n, k, ε): medians (jit, warmed up, ``block_until_ready``, interleaved in one loop) of
``lax.top_k`` (values) and ``soft_topk_mask`` forward, and of their forward+backward (``jax.grad``
of ``<op(x), w>``). Printed ratios: mask fwd / top_k fwd, mask fwd+bwd / top_k fwd+bwd, and
mask fwd+bwd / top_k fwd; plus the solver's max iteration count and max residual.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's softops

import jax
import jax.numpy as jnp
import numpy as np
from _timing import medians  # noqa: E402  (benchmarks/, the script's folder)
from jax import lax

from softops.topk_ot import soft_topk_mask, soft_topk_mask_solve  # noqa: E402

SHAPES = ((64, 256), (64, 4096), (8, 32768))
KS = (1, 16)
EPSILONS = (0.1, 1e-3)


def case(batch: int, n: int, k: int, eps: float, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, n)), jnp.float32)
    u = jnp.asarray(rng.standard_normal((batch, k)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((batch, n)), jnp.float32)

    def top(x):
        return lax.top_k(x, k)[0]

    def mask(x):
        return soft_topk_mask(x, k, epsilon=eps)

    fns = {
        "top_k": jax.jit(top),
        "top_k fb": jax.jit(jax.grad(lambda x: jnp.sum(top(x) * u))),
        "mask": jax.jit(mask),
        "mask fb": jax.jit(jax.grad(lambda x: jnp.sum(mask(x) * w))),
    }
    t = medians(fns, (x,), repeats, warmup=3)
    out = jax.jit(lambda x: soft_topk_mask_solve(x, k, epsilon=eps))(x)
    return {
        "batch": batch,
        "n": n,
        "k": k,
        "epsilon": eps,
        "ms": {name: 1e3 * v for name, v in t.items()},
        "fwd": t["mask"] / t["top_k"],
        "fb": t["mask fb"] / t["top_k fb"],
        "fb_over_topk_fwd": t["mask fb"] / t["top_k"],
        "max_iterations": int(out.iterations.max()),
        "mean_iterations": float(out.iterations.mean()),
        "max_residual": float(out.residual.max()),
        "converged": bool(out.converged.all()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 x 256, ε 0.1, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="default 50 (quick: 3)")
    parser.add_argument("--eps", type=float, nargs="*", default=None)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    shapes = SHAPES[:1] if args.quick else SHAPES
    args.repeats = args.repeats or (3 if args.quick else 50)
    args.eps = args.eps or (list(EPSILONS[:1]) if args.quick else list(EPSILONS))
    print("| batch×n | k | ε | top_k fwd / fb (ms) | mask fwd / fb (ms) | fwd × | fb × | "
          "fb × top_k fwd | iters max (mean) | residual |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for batch, n in shapes:
        for k in KS:
            for eps in args.eps:
                r = case(batch, n, k, eps, args.repeats)
                rows.append(r)
                ms = r["ms"]
                print(
                    f"| {batch}×{n} | {k} | {eps:g} | {ms['top_k']:.3f} / {ms['top_k fb']:.3f} | "
                    f"{ms['mask']:.3f} / {ms['mask fb']:.3f} | {r['fwd']:.2f} | {r['fb']:.2f} | "
                    f"{r['fb_over_topk_fwd']:.2f} | {r['max_iterations']} "
                    f"({r['mean_iterations']:.1f}) | {r['max_residual']:.1e} |",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backend": jax.default_backend(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
