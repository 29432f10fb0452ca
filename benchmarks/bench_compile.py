"""First-call cost: tracing, lowering and XLA compilation of each op's forward+backward.

    python benchmarks/bench_compile.py [--quick] [--shape 32x100] [--repeats 3] [--json PATH]

Per op, ``jax.jit(jax.grad(lambda x: sum(op(x) * u)))`` at one shape (float32), after
``jax.clear_caches()``: the seconds of ``.trace``, ``.lower`` and ``.compile`` (the median of
``--repeats`` fresh runs), and the total over that of the hard op's (``jnp.sort``; ``lax.top_k``
for the top-k family) **measured in the same run**. ``method="parallel"`` is the solver that
``method="auto"`` picks off the CPU (GPU, TPU); its compile is measured here on the CPU.
The recorded run is ``benchmarks/results/bench_compile.json``; ``scripts/update_tables.py``
pastes it into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from _record import run_meta
from jax import lax

import softops
from softops import losses

K = 5


def _ops(n: int) -> dict:
    """name -> (op on [batch, n] scores, the hard op it is compared with)."""
    labels = jnp.zeros((), jnp.int32)
    return {
        "jnp.sort": (jnp.sort, None),
        "lax.top_k": (lambda x: lax.top_k(x, K)[0], None),
        "soft_rank": (softops.soft_rank, "jnp.sort"),
        "soft_rank kl": (lambda x: softops.soft_rank(x, regularization="kl"), "jnp.sort"),
        "soft_rank parallel": (lambda x: softops.soft_rank(x, method="parallel"), "jnp.sort"),
        "soft_rank p=4/3": (lambda x: softops.soft_rank(x, regularization="p=4/3"), "jnp.sort"),
        "soft_sort": (softops.soft_sort, "jnp.sort"),
        "soft_sort p=3/2": (lambda x: softops.soft_sort(x, regularization="p=3/2"), "jnp.sort"),
        "spearman_loss": (lambda x: losses.spearman_loss(x, x[..., ::-1]), "jnp.sort"),
        "soft_ndcg": (lambda x: losses.soft_ndcg(x, jnp.abs(x[..., ::-1]), k=K), "jnp.sort"),
        "soft_topk_mask": (lambda x: softops.soft_topk_mask(x, K), "lax.top_k"),
        "soft_topk_mask l2": (
            lambda x: softops.soft_topk_mask(x, K, regularization="l2"),
            "lax.top_k",
        ),
        "soft_topk": (lambda x: softops.soft_topk(x, K)[0], "lax.top_k"),
        "soft_topk_mask_loss": (
            lambda x: losses.soft_topk_mask_loss(x, jnp.broadcast_to(labels, x.shape[:-1])),
            "lax.top_k",
        ),
    }


def _split(op, x, u) -> tuple[float, float, float]:
    f = jax.jit(jax.grad(lambda x: jnp.sum(op(x) * u)))
    jax.clear_caches()
    t0 = time.perf_counter()
    traced = f.trace(x)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    lowered.compile()
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="three ops, one repeat (CI smoke)")
    p.add_argument("--shape", default="32x100", help="batch x n")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, metavar="PATH")
    a = p.parse_args()
    batch, n = map(int, a.shape.split("x"))
    ops = _ops(n)
    if a.quick:
        ops = {k: ops[k] for k in ("jnp.sort", "lax.top_k", "soft_rank", "soft_topk_mask")}
        a.repeats = 1
    x = jax.random.normal(jax.random.key(0), (batch, n))
    # per op its output's shape of cotangent weights
    rows = []
    for name, (op, hard) in ops.items():
        u = jax.random.normal(jax.random.key(1), jax.eval_shape(op, x).shape)
        splits = np.array([_split(op, x, u) for _ in range(a.repeats)])
        med = np.median(splits, axis=0)
        rows.append(dict(op=name, hard=hard, trace=med[0], lower=med[1], compile=med[2]))
    total = {r["op"]: r["trace"] + r["lower"] + r["compile"] for r in rows}
    print(f"{'op':22s} {'trace':>6} {'lower':>6} {'compile':>7} {'total':>6}  x hard")
    for r in rows:
        r["total"] = total[r["op"]]
        r["ratio"] = None if r["hard"] is None else r["total"] / total[r["hard"]]
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.1f}"
        print(
            f"{r['op']:22s} {r['trace']:6.2f} {r['lower']:6.2f} {r['compile']:7.2f}"
            f" {r['total']:6.2f}  {ratio}"
        )
    if a.json:
        meta = run_meta(load_avg=os.getloadavg()[0], shape=[batch, n], repeats=a.repeats)
        with open(a.json, "w") as f:
            json.dump(dict(meta=meta, rows=rows), f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
