"""The p-norm soft sort and rank against the L2 op: time and memory in the same run.

    python benchmarks/bench_pnorm.py --json benchmarks/results/bench_pnorm.json
    python benchmarks/bench_pnorm.py --quick       # one small shape, few repeats (CI smoke)

For each headline shape of ``bench_sort.py`` (float32, strength 1 and 0.1) and each op
(``soft_rank``, ``soft_sort``), the forward+backward (``jax.grad`` of ``sum(op(x) * u)``) under
``regularization="l2"``, ``"p=3/2"`` and ``"p=4/3"`` is timed interleaved in one loop after a
warm-up (``jax.jit``, ``block_until_ready``, medians), with ``jnp.sort``'s forward+backward
beside it; ratios are to the L2 op of the same point. The compiled temporaries come from
``memory_analysis()``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

import softops

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _record import run_meta  # noqa: E402
from _timing import medians  # noqa: E402
from bench_sort import HEADLINE  # noqa: E402

REGS = ("l2", "p=3/2", "p=4/3")
STRENGTHS = (1.0, 0.1)


def _grad(f, u):
    return jax.jit(jax.grad(lambda x: jnp.sum(f(x) * u)))


def point(batch: int, n: int, op: str, eps: float, repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, n)), jnp.float32)
    u = jnp.asarray(rng.standard_normal((batch, n)), jnp.float32)
    fn = getattr(softops, f"soft_{op}")
    fns = {"sort": _grad(lambda x: jnp.sort(x, axis=-1), u)}
    for reg in REGS:
        fns[reg] = _grad(
            lambda x, reg=reg: fn(x, regularization=reg, regularization_strength=eps), u
        )
    t = medians(fns, (x,), repeats)
    rows = []
    for reg in REGS:
        temp = fns[reg].lower(x).compile().memory_analysis().temp_size_in_bytes
        rows.append(
            dict(batch=batch, n=n, op=op, eps=eps, regularization=reg, ms=1e3 * t[reg],
                 sort_ms=1e3 * t["sort"], over_l2=t[reg] / t["l2"], temp_bytes=int(temp))
        )  # fmt: skip
        print(
            f"{batch:>5} x {n:<7} {op:5s} eps={eps:<4g} {reg:6s} {1e3 * t[reg]:9.3f} ms"
            f"  / l2 {t[reg] / t['l2']:5.2f}  temp {temp / 2**20:7.2f} MiB",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small shape (CI smoke)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args()
    shapes = [(4, 100)] if args.quick else HEADLINE
    repeats = 3 if args.quick else args.repeats
    load = os.getloadavg()[0]
    rows = [
        r
        for batch, n in shapes
        for eps in STRENGTHS
        for op in ("rank", "sort")
        for r in point(batch, n, op, eps, repeats)
    ]
    meta = run_meta(
        backend=jax.default_backend(), repeats=repeats, load_avg=load,
        load_avg_end=os.getloadavg()[0],
    )  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
