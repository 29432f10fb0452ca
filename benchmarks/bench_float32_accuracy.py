"""float32 accuracy of soft rank / soft sort at large n, and the cost of keeping it.

    python benchmarks/bench_float32_accuracy.py                    # n = 1e5, 1e6, 1e7
    python benchmarks/bench_float32_accuracy.py --n 100000         # one size
    python benchmarks/bench_float32_accuracy.py --quick            # n = 1e4, two cases (CI smoke)
    python benchmarks/bench_float32_accuracy.py --cost --against /path/to/other/checkout

**Accuracy** (default mode): for each n, one row ``x ~ N(0, 1)`` drawn in float32 (seed 0); each
op runs on that float32 row and on the same row cast to float64 (the reference, exact to about
1e-15), both jitted and warmed up (the timed second call's results are the ones compared). Printed
per case:

- ``max|f32 - f64| / scale``, with scale ``n`` for soft ranks (the ranks' size) and ``max|x|``
  for soft-sorted values (the size of what they average), and the same in float32 ulps of the
  scale (``/ 2^-23``);
- the row-sum relative error ``|sum(f32) - sum(f64)| / sum(|f64|)`` (sums in float64; for ranks
  ``sum(f64) = n(n + 1)/2``);
- whether the float32 soft sort is non-decreasing;
- ``--only soft_rank:l2:1.0 ...``: the listed cases only;
- ``--long``: the soft sort at strength n / 10 instead (blocks of many items);
- the warm float32 call time (one call, noisy: for orientation only).

The code measured is whichever ``softops`` Python imports (run it with ``PYTHONPATH`` set to the
checkout to measure); the first line prints its path and git commit.

**Cost** (``--cost --against DIR``): the forward+backward (``jax.grad`` of ``sum(soft_rank(x) *
u)``, L2, strength 1, float32) median time at 1 x 1e5, 1 x 1e6 and 64 x 1000, for this checkout
and for the checkout ``DIR``, each in its own process (one process imports one ``softops``),
alternating A, B, A, B, ... ``--rounds`` times; each process reports the median of ``--repeats``
warm calls; the ratio is of the medians over rounds. The machine is shared: the ratio is noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)
CASES = [  # (op, regularization, strength)
    ("soft_rank", "l2", 1.0),
    ("soft_rank", "l2", 1e-3),
    ("soft_rank", "kl", 1.0),
    ("soft_rank", "kl", 1e-4),
    ("soft_sort", "l2", 1.0),
    ("soft_sort", "l2", 1e-3),
    ("soft_sort", "kl", 1.0),
    ("soft_sort", "kl", 1e-3),
]
LONG = [  # long blocks in the sort (strength n / 10), as in tests/test_float32_accuracy.py
    ("soft_sort", "l2", "n/10"),
    ("soft_sort", "kl", "n/10"),
]
COST_SHAPES = [(1, 100_000), (1, 1_000_000), (64, 1000)]
ROOT = pathlib.Path(__file__).resolve().parent.parent


def _commit(path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()[:80]
    except (OSError, subprocess.CalledProcessError):
        return "(no git)"


def accuracy(sizes, cases) -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import softops

    where = pathlib.Path(softops.__file__).resolve().parent.parent
    source = f"checkout {where.name!r} ({_commit(where)})"
    print(f"softops from {source}; jax {jax.__version__}, {jax.devices()[0]}")
    head = f"{'n':>9} {'op':9} {'reg':3} {'eps':>6} {'max err/scale':>13} {'ulps':>9}"
    print(head + f" {'row-sum rel':>11} {'monotone':>8} {'f32 s':>6}")
    for n in sizes:
        x32 = np.random.default_rng(0).standard_normal(n).astype(np.float32)
        x64 = x32.astype(np.float64)
        for op, reg, strength in cases:
            eps = n / 10 if strength == "n/10" else strength
            f = jax.jit(
                lambda v, op=op, reg=reg, eps=eps: getattr(softops, op)(
                    v, regularization=reg, regularization_strength=eps
                )
            )
            outs, secs = [], 0.0
            for x in (x32, x64):
                xj = jnp.asarray(x)
                jax.block_until_ready(f(xj))  # compile and warm up
                t0 = time.perf_counter()
                out = jax.block_until_ready(f(xj))
                secs = secs or time.perf_counter() - t0  # the float32 call
                outs.append(np.asarray(out, np.float64))
                del out
            o32, o64 = outs
            scale = float(n) if op == "soft_rank" else float(np.abs(x64).max())
            err = float(np.abs(o32 - o64).max()) / scale
            rowsum = abs(o32.sum() - o64.sum()) / np.abs(o64).sum()
            mono = "yes" if np.all(np.diff(o32) >= 0) else "NO"
            mono = mono if op == "soft_sort" else "-"
            print(
                f"{n:>9.0e} {op:9} {reg:3} {eps:>6g} {err:>13.2e} {err / EPS32:>9.3g}"
                f" {rowsum:>11.2e} {mono:>8} {secs:>6.2f}",
                flush=True,
            )


def _time_one(repeats: int) -> None:
    """Child process: fwd+bwd medians of soft_rank for COST_SHAPES, printed as JSON."""
    import jax
    import jax.numpy as jnp

    import softops

    out = {}
    for b, n in COST_SHAPES:
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal((b, n)), jnp.float32)
        u = jnp.asarray(rng.standard_normal((b, n)), jnp.float32)
        g = jax.jit(jax.grad(lambda x, u: (softops.soft_rank(x) * u).sum()))
        jax.block_until_ready(g(x, u))
        jax.block_until_ready(g(x, u))
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(g(x, u))
            ts.append(time.perf_counter() - t0)
        out[f"{b}x{n}"] = float(np.median(ts))
    print(json.dumps(out))


def cost(against: str, rounds: int, repeats: int) -> None:
    checkouts = {"this": str(ROOT), "other": str(pathlib.Path(against).resolve())}
    for k, p in checkouts.items():
        print(f"{k}: checkout {pathlib.Path(p).name!r} ({_commit(p)})")
    runs: dict[str, list[dict]] = {k: [] for k in checkouts}
    for r in range(rounds):
        for k, p in checkouts.items():
            env = dict(os.environ, PYTHONPATH=p)
            cmd = [sys.executable, __file__, "--child", "--repeats", str(repeats)]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            runs[k].append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(f"round {r} {k}: " + ", ".join(f"{s} {t * 1e3:.2f} ms" for s, t in
                                                 runs[k][-1].items()), flush=True)  # fmt: skip
    print(f"{'shape':>10} {'this ms':>9} {'other ms':>9} {'this/other':>10}  (median of rounds)")
    for b, n in COST_SHAPES:
        s = f"{b}x{n}"
        a = float(np.median([d[s] for d in runs["this"]]))
        o = float(np.median([d[s] for d in runs["other"]]))
        print(f"{s:>10} {a * 1e3:>9.2f} {o * 1e3:>9.2f} {a / o:>10.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    p.add_argument("--long", action="store_true", help="the long-block sort cases instead")
    p.add_argument("--only", nargs="+", metavar="OP:REG:EPS", help="e.g. soft_rank:l2:1")
    p.add_argument("--cost", action="store_true", help="time against another checkout")
    p.add_argument("--against", help="the other checkout's root (with --cost)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="n = 1e4, the first two cases (CI smoke)")
    a = p.parse_args()
    if a.quick:
        accuracy([10_000], CASES[:2])
        return
    if a.child:
        _time_one(a.repeats)
    elif a.cost:
        if not a.against:
            p.error("--cost needs --against DIR")
        cost(a.against, a.rounds, a.repeats)
    else:
        cases = LONG if a.long else CASES
        if a.only:
            cases = [c for c in CASES + LONG if ":".join(map(str, c)) in a.only]
        accuracy(a.n, cases)


if __name__ == "__main__":
    main()
