"""Isotonic solvers: rounds and time against n, both solvers, as ratios to ``jnp.argsort``.

    python benchmarks/bench_pav.py                      # n = 10^3 ... 10^6
    python benchmarks/bench_pav.py --quick              # n = 10^3, one repeat (seconds)
    python benchmarks/bench_pav.py --json results.json  # also write the rows there

Inputs (one row of n float32 values each):

- ``random``, ``sorted``, ``reversed``, ``sawtooth`` (``i mod 64``): ``isotonic_regression(y)``;
- ``relu_rank``: ``soft_rank(relu(N(0, 1)), regularization_strength=1e-5)`` (about half the
  entries are exact zeros: many equal neighbours to pool), the issue's natural hard case;
- ``spike``: ``isotonic_regression([n^2, 1, 2, ..., n - 1])`` (the first element pools with
  everything, one block at a time).

For each input and each solver (``method="sequential"``, ``"parallel"``) it reports:

- ``pool_rounds``: the parallel pooling rounds each solver runs first (at most
  ``softops._isotonic.pav.SEQUENTIAL_ROUNDS`` and ``softops._isotonic.pav.ROUNDS``; each pools
  every run of adjacent violators of every row at once);
- ``blocks_left``: the blocks still unsolved after them;
- ``loop_steps``: the sequential solver's stack-PAV ``while_loop`` steps (one push or one merge
  each), or the parallel solver's merge-tree levels (``ceil(log2 n)``, each a fixed number of
  binary-search steps, ``search_steps`` in all);
- ``seconds``: median time of the jitted op (forward), and ``ratio``: that over the median time of
  ``jnp.argsort`` of the same array, timed interleaved in the same loop.

The counts come from the solvers' own private pieces (``softops._isotonic.pav``), run once
outside the timed op. Times on a shared CPU are noisy: read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import softops
from softops._isotonic import pav as _pav

SIZES = [10**3, 10**4, 10**5, 10**6]
QUICK_SIZES = [10**3]
INPUTS = ["random", "sorted", "reversed", "sawtooth", "relu_rank", "spike"]
METHODS = ["sequential", "parallel"]
RELU_EPS = 1e-5


def make_input(name: str, n: int, seed: int = 0) -> np.ndarray:
    """The benchmark's row of ``n`` values for input ``name`` (float32)."""
    rng = np.random.default_rng(seed)
    i = np.arange(n)
    x = {
        "random": lambda: rng.standard_normal(n),
        "sorted": lambda: i.astype(float),
        "reversed": lambda: (n - i).astype(float),
        "sawtooth": lambda: (i % 64).astype(float),
        "relu_rank": lambda: np.maximum(rng.standard_normal(n), 0.0),
        "spike": lambda: np.concatenate([[float(n) ** 2], np.arange(1, n, dtype=float)]),
    }[name]()
    return np.asarray(x, np.float32)[None, :]


_isotonic = jax.jit(softops.isotonic_regression, static_argnames=("method",))
_rank = jax.jit(
    lambda x, method: softops.soft_rank(x, regularization_strength=RELU_EPS, method=method),
    static_argnames=("method",),
)
_argsort = jax.jit(lambda x: jnp.argsort(x, axis=-1))


def op(name: str, method: str):
    """The public softops call timed for input ``name`` (jitted once per solver and shape)."""
    f = _rank if name == "relu_rank" else _isotonic
    return lambda x: f(x, method=method)


def solver_problem(name: str, x: jax.Array):
    """The ``(a, b)`` statistics (kind l2) the op hands to the solver, as
    ``softops._isotonic.rows`` builds them: increasing isotonic regression of y is the decreasing
    one of -y; soft rank solves it on ``theta - w`` with theta the decreasingly sorted values over
    eps (shifted to max 0) and ``w = (n, ..., 1)``."""
    if name == "relu_rank":
        zs = -jnp.sort(-x, axis=-1)
        n = x.shape[-1]
        w = (n - jnp.arange(n)).astype(x.dtype)
        return (zs - zs[..., :1]) / RELU_EPS - w, jnp.ones_like(x)
    return -x, jnp.ones_like(x)


@functools.partial(jax.jit, static_argnames="max_rounds")
def _counts(a, b, max_rounds):
    """Pooling rounds run, blocks left after them, and the final number of blocks of unsolved
    rows (the solvers' own rounds: ``softops._isotonic.pav._rounds``)."""
    barrier = lax.broadcasted_iota(jnp.int32, a.shape, 1) == 0
    za, ca, ra = _pav.affine(a)
    st = _pav.Stats(za, ca, ra, b, ca, ra)  # l2: the weights b as a plain statistic
    rounds, blk = _pav._rounds("l2", st, False, barrier, max_rounds)
    left = jnp.sum(jnp.where(blk.done, 0, blk.count))
    final = _pav.block_starts("l2", (za, ca, ra), b, "sequential")
    final_left = jnp.sum(jnp.where(blk.done[:, None], False, final))
    return rounds, left, final_left


def merge_tree_steps(n: int) -> tuple[int, int]:
    """Levels of the parallel solver's merge tree and their binary-search loop steps in all
    (``softops._isotonic.merge_tree``: per level two searches of s steps, each step evaluating F
    with two inner searches of s steps; s = ceil(log2(p + 1)) for chunks of p blocks)."""
    size = 1 << max(0, (n - 1).bit_length())
    levels, steps, p = 0, 0, 1
    while p < size:
        s = max(1, math.ceil(math.log2(p + 1)))
        steps += 2 * s * (1 + 2 * s)
        levels += 1
        p *= 2
    return levels, steps


def _median_times(fns: dict, repeats: int) -> dict:
    """Times each callable ``repeats`` times, interleaved; the median seconds of each."""
    for f in fns.values():
        jax.block_until_ready(f())  # compile and warm up
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f())
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def _repeats(n: int, quick: bool) -> int:
    if quick:
        return 1
    return 5 if n <= 10**4 else 3 if n <= 10**5 else 1


def run(sizes, inputs, methods, quick: bool = False, time_up_to: int | None = None) -> list[dict]:
    """One row per (input, n, method); prints each as it comes. Sizes above ``time_up_to`` get
    the counts only (``seconds`` None)."""
    rows = []
    for n in sizes:
        for name in inputs:
            x = jnp.asarray(make_input(name, n))
            counts = {
                method: [int(v) for v in _counts(*solver_problem(name, x), max_rounds=r)]
                for method, r in (("sequential", _pav.SEQUENTIAL_ROUNDS), ("parallel", _pav.ROUNDS))
            }
            fns = {"argsort": lambda x=x: _argsort(x)}
            for method in methods:
                fns[method] = lambda f=op(name, method), x=x: f(x)
            timed = time_up_to is None or n <= time_up_to
            times = _median_times(fns, _repeats(n, quick)) if timed else None
            levels, search = merge_tree_steps(n)
            for method in methods:
                rounds, left, final_left = counts[method]
                row = {
                    "input": name,
                    "n": n,
                    "method": method,
                    "pool_rounds": rounds,
                    "blocks_left": left,
                    "loop_steps": (2 * left - final_left) if method == "sequential" else levels,
                    "search_steps": 0 if method == "sequential" else search,
                    "seconds": None if times is None else times[method],
                    "argsort_seconds": None if times is None else times["argsort"],
                    "ratio": None if times is None else times[method] / times["argsort"],
                }
                rows.append(row)
                print(_format(row), flush=True)
    return rows


FIELDS = {
    "input": "random, sorted, reversed, sawtooth (isotonic_regression), relu_rank (soft_rank), "
    "spike (isotonic_regression of [n^2, 1, ..., n-1])",
    "n": "items in the row",
    "method": "solver: sequential or parallel",
    "pool_rounds": "parallel pooling rounds run before the finishing solver (both solvers)",
    "blocks_left": "blocks of unsolved rows after the pooling rounds",
    "loop_steps": "sequential: stack-PAV while_loop steps; parallel: merge-tree levels",
    "search_steps": "parallel: binary-search loop steps over all merge-tree levels; sequential: 0",
    "seconds": "median seconds of the jitted op (null: not timed)",
    "argsort_seconds": "median seconds of jnp.argsort of the same array, timed interleaved",
    "ratio": "seconds / argsort_seconds",
}

HEADER = (
    f"{'input':<10} {'n':>8} {'method':<10} {'rounds':>6} {'left':>8} {'loop':>8} "
    f"{'search':>6} {'ms':>10} {'x argsort':>10}"
)


def _format(row: dict) -> str:
    ms = "-" if row["seconds"] is None else f"{1e3 * row['seconds']:.3f}"
    ratio = "-" if row["ratio"] is None else f"{row['ratio']:.1f}"
    return (
        f"{row['input']:<10} {row['n']:>8} {row['method']:<10} {row['pool_rounds']:>6} "
        f"{row['blocks_left']:>8} {row['loop_steps']:>8} {row['search_steps']:>6} {ms:>10} "
        f"{ratio:>10}"
    )


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 10^3, one repeat")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--inputs", nargs="+", default=INPUTS, choices=INPUTS)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument(
        "--time-up-to", type=int, default=None, help="time sizes up to this n; counts only above"
    )
    parser.add_argument("--json", type=pathlib.Path, default=None, help="write the rows here")
    args = parser.parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; float32, one row")
    print(HEADER)
    t0 = time.perf_counter()
    rows = run(sizes, args.inputs, args.methods, quick=args.quick, time_up_to=args.time_up_to)
    total = time.perf_counter() - t0
    print(f"total {total:.1f} s")
    if args.json is not None:
        doc = {
            "benchmark": "bench_pav",
            "columns": FIELDS,
            "meta": {
                "jax": jax.__version__,
                "device": jax.devices()[0].device_kind,
                "platform": platform.platform(),
                "dtype": "float32",
                "pool_rounds_max": {"sequential": _pav.SEQUENTIAL_ROUNDS, "parallel": _pav.ROUNDS},
                "relu_rank_strength": RELU_EPS,
                "quick": args.quick,
                "timed_up_to_n": args.time_up_to,
                "repeats": {str(n): _repeats(n, args.quick) for n in sizes},
                "total_seconds": total,
            },
            "rows": rows,
        }
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
