"""Convergence of ``soft_topk_solve`` per solver, dtype and ε (the table of docs/topk.md).

    python benchmarks/bench_topk_convergence.py --json PATH   # prints the rows, writes PATH
    python benchmarks/bench_topk_convergence.py --quick       # 8 rows of n = 256 (CI smoke)
    python scripts/update_tables.py       # renders the recorded run into docs/topk.md

The recorded run is ``benchmarks/results/bench_topk_convergence.json``.

Standard-normal rows (seed 0), default tolerance (``max(sqrt(eps), 16 n eps)`` of the dtype,
mask units) and ``max_iter``. Per case: the largest iteration count, the share of converged rows,
the largest residual ``n ||Γᵀ1 - ν||₁`` and the largest ``|values - lax.top_k|``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import softops
from softops.topk_ot import soft_topk_solve

# (solver, dtype, ε): the cases of the docs table.
CASES = (
    ("newton", "float32", 0.1),
    ("newton", "float32", 1e-2),
    ("newton", "float32", 1e-3),
    ("newton", "float32", 1e-4),
    ("newton", "float64", 1e-5),
    ("sinkhorn", "float32", 1e-2),
    ("sinkhorn", "float32", 1e-3),
    ("sinkhorn", "float32", 1e-4),
)


def case(batch: int, n: int, k: int, solver: str, dtype: str, eps: float) -> dict:
    """One row of the table (float64 cases run with x64 enabled)."""
    with jax.enable_x64(dtype == "float64"):
        x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, n)), dtype)
        out = jax.jit(lambda x, e: soft_topk_solve(x, k, epsilon=e, solver=solver))(
            x, jnp.asarray(eps, dtype)
        )
        hard = np.asarray(lax.top_k(x, k)[0], np.float64)
        err = np.abs(np.asarray(out.values, np.float64) - hard).max()
        return {
            "solver": solver, "dtype": dtype, "epsilon": eps, "batch": batch, "n": n, "k": k,
            "max_iterations": int(out.iterations.max()),
            "converged_fraction": float(jnp.mean(out.converged)),
            "max_residual": float(out.residual.max()),
            "max_abs_error": float(err),
        }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 x 256, k = 4, no Sinkhorn at 1e-4")
    parser.add_argument("--batch", type=int, default=None, help="rows (default 64; quick: 8)")
    parser.add_argument("--n", type=int, default=None, help="items (default 1000; quick: 256)")
    parser.add_argument("--k", type=int, default=None, help="k (default 8; quick: 4)")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the results here")
    args = parser.parse_args()
    batch = args.batch or (8 if args.quick else 64)
    n = args.n or (256 if args.quick else 1000)
    k = args.k or (4 if args.quick else 8)
    cases = CASES[:-1] if args.quick else CASES  # Sinkhorn at 1e-4 runs to max_iter
    start = time.perf_counter()
    rows = [case(batch, n, k, *c) for c in cases]
    for r in rows:
        print(r)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
        "machine": platform.machine(), "jax": jax.__version__, "softops": softops.__version__,
        "max_iter": 1000, "seed": 0, "wall_s": round(time.perf_counter() - start, 1),
    }  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"benchmark": "bench_topk_convergence", "meta": meta, "rows": rows}, fh, indent=1
            )
            fh.write("\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
