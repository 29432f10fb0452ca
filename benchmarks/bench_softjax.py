"""softops against SoftJAX (pure JAX, PyPI ``softjax``): same process, same JAX, both at defaults.

    python benchmarks/bench_softjax.py --json benchmarks/results/bench_softjax.json
    python benchmarks/bench_softjax.py --quick       # small shapes, few repeats (CI smoke)

SoftJAX needs Python >= 3.12 (``pip install softjax``, which pins its own JAX); where it cannot
be imported the script says so and exits 0 without timing anything, so that CI's smoke run of
every benchmark passes on the oldest supported Python.

Timed (jit, warmed up, ``block_until_ready``, every callable of a point interleaved in one loop,
medians): forward+backward, ``jax.grad`` of ``sum(op(x) * u)`` with a fixed random ``u``, of

- **soft rank and soft sort** along the last axis: softops ``soft_rank``/``soft_sort``
  (``regularization="l2"`` and ``"kl"``, strength 1) against SoftJAX ``rank``/``sort`` with
  ``method="fast_soft_sort"`` (the same permutahedron projection, Blondel et al. 2020) in modes
  ``c0`` (L2) and ``smooth`` (its entropic variant), at SoftJAX's default softness (0.1 on
  standardized inputs), and softops' ``"p=3/2"``/``"p=4/3"`` against SoftJAX's modes ``c1``/``c2``
  (the same p-norm regularizers, Sander et al. 2023);
- **top-k masks**: softops ``soft_topk_mask`` (``regularization`` ``"kl"``, ``"l2"``,
  ``"p=3/2"``, ``"p=4/3"``, default temperature) against SoftJAX ``top_k`` in modes ``smooth``,
  ``c0``, ``c1``, ``c2`` (default method ``neuralsort``), whose mask is its soft index summed over
  the k slots (``[..., k, n] -> [..., n]``).

For the L2 rank and sort, SoftJAX also runs at the softness that makes its projection softops'
at strength 1 ("same projection", ``standardize=False``; the largest difference of the two
outputs is recorded). Each is also put over the hard op's forward+backward in the same loop
(``jnp.sort`` of the values for sort and rank, ``lax.top_k`` values for top-k). Ratios below 1
mean softops is faster.
A callable whose warm call takes over a second is timed three times on its own; one whose first
call takes over ten seconds is timed by that call alone and skipped at every larger shape (the
table says which).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's softops

import jax
import jax.numpy as jnp
import numpy as np
from _timing import medians  # noqa: E402  (benchmarks/, the script's folder)
from jax import lax

import softops  # noqa: E402
from softops.topk_ot import soft_topk_mask  # noqa: E402

try:
    import softjax
except ImportError:  # Python < 3.12, or not installed
    softjax = None

SORT_SHAPES = ((1, 1000), (1, 100_000), (32, 10_000), (256, 1000), (4096, 16))
MASK_SHAPES = ((64, 256, 8), (64, 4096, 16), (8192, 8, 2), (8192, 64, 2), (1024, 256, 8))
# softops regularization -> SoftJAX mode
SORT_PAIRS = (("l2", "c0"), ("kl", "smooth"), ("p=3/2", "c1"), ("p=4/3", "c2"))
POWER = {"l2": 2.0, "p=3/2": 1.5, "p=4/3": 4 / 3}
SLOW_S = 1.0  # a warm call slower than this is timed 3 times, alone
ONCE_S = 10.0  # a first call slower than this is its only call
# (op, SoftJAX mode) -> the fewest elements at which its first call took over ONCE_S: from
# there on the mode is skipped at every shape with as many elements or more
TOO_SLOW: dict[tuple[str, str], int] = {}
MASK_PAIRS = (("kl", "smooth"), ("l2", "c0"), ("p=3/2", "c1"), ("p=4/3", "c2"))


def _grad(f, u):
    return jax.jit(jax.grad(lambda x: jnp.sum(f(x) * u)))


def _time(fns: dict, args, repeats: int) -> tuple[dict, dict]:
    """Medians in ms, and how each slow callable was timed.

    A callable whose warm call takes over ``SLOW_S`` is timed 3 times on its own ("alone"); one
    whose first call (compilation included) takes over ``ONCE_S`` is not called again, and that
    call is its time ("once").
    """
    slow, once = {}, {}
    for name, f in fns.items():
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        seconds = time.perf_counter() - t0
        if seconds > ONCE_S:
            slow[name], once[name] = "once", seconds
            continue
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        if time.perf_counter() - t0 > SLOW_S:
            slow[name] = "alone"
    fast = {k: f for k, f in fns.items() if k not in slow}
    t = medians(fast, args, repeats, warmup=1)
    for name, how in slow.items():
        t[name] = once[name] if how == "once" else medians({name: fns[name]}, args, 3, 0)[name]
    return {k: 1e3 * v for k, v in t.items()}, slow


def _same_softness(op: str, reg: str, n: int, eps: float) -> float | None:
    """SoftJAX's softness (``standardize=False``) that computes softops' projection, or None.

    SoftJAX's ``fast_soft_sort`` ranks are ``(n - 1) P(x / s, rho / (n - 1))`` and its sorts
    ``P(iota / ((n - 1) s), x)``. Under a p-norm, ``c P(z / c^(p-1), w) = P(z, c w)``, so its rank
    at ``s = eps (n - 1)^(p - 1)`` (L2: p = 2) and its L2 sort at ``s = eps / (n - 1)`` are softops'
    at strength ``eps`` (checked on every run: ``max_abs_diff``). Its entropic variants and its
    p-norm sorts are other functions (no match found).
    """
    m = max(n - 1, 1)
    if op == "rank" and reg != "kl":
        return eps * m ** (POWER[reg] - 1)
    return eps / m if reg == "l2" else None


def sort_case(batch: int, n: int, op: str, repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, n)), jnp.float32)
    u = jnp.asarray(rng.standard_normal((batch, n)), jnp.float32)
    ours = getattr(softops, f"soft_{op}")
    theirs = getattr(softjax, op)
    fns = {"hard": _grad(lambda x: jnp.sort(x, axis=-1), u)}
    same = {}
    for reg, mode in SORT_PAIRS:
        fns[f"softops {reg}"] = _grad(lambda x, reg=reg: ours(x, regularization=reg), u)
        soft = _same_softness(op, reg, n, 1.0)
        if soft is not None:
            kw = dict(axis=-1, method="fast_soft_sort", mode=mode, standardize=False)
            if op == "rank":
                kw["descending"] = False  # softops' ranks ascend (1 = smallest)
            same[reg] = functools.partial(theirs, softness=soft, **kw)
            fns[f"softjax {mode} same"] = _grad(same[reg], u)
        if batch * n < TOO_SLOW.get((op, mode), batch * n + 1):
            fns[f"softjax {mode}"] = _grad(
                lambda x, mode=mode: theirs(x, axis=-1, method="fast_soft_sort", mode=mode), u
            )
    t, slow = _time(fns, (x,), repeats)
    for key, how in slow.items():
        if how == "once" and key.startswith("softjax"):
            mode = key.split()[1]
            TOO_SLOW[(op, mode)] = min(TOO_SLOW.get((op, mode), batch * n), batch * n)
    rows = []
    for reg, mode in SORT_PAIRS:
        for setting in ("defaults", "same projection"):
            key = f"softjax {mode}" + (" same" if setting != "defaults" else "")
            if key not in t:
                if setting == "defaults":  # skipped: over ONCE_S at a smaller shape
                    t[key], slow[key] = None, "skipped"
                else:
                    continue
            row = {"batch": batch, "n": n, "op": op, "softops": reg, "softjax": mode,
                   "setting": setting, "timed": slow.get(key, "interleaved"),
                   "ms": {"hard": t["hard"], "softops": t[f"softops {reg}"],
                          "softjax": t[key]}}  # fmt: skip
            if setting != "defaults":
                mine = ours(x, regularization=reg)
                row["max_abs_diff"] = float(jnp.max(jnp.abs(same[reg](x) - mine)))
                row["scale"] = float(jnp.max(jnp.abs(mine)))
            rows.append(row)
    return rows


def mask_case(batch: int, n: int, k: int, repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, n)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((batch, n)), jnp.float32)
    uk = jnp.asarray(rng.standard_normal((batch, k)), jnp.float32)
    fns = {"hard": _grad(lambda x: lax.top_k(x, k)[0], uk)}
    for reg, mode in MASK_PAIRS:
        fns[f"softops {reg}"] = _grad(
            lambda x, reg=reg: soft_topk_mask(x, k, regularization=reg), w
        )
        fns[f"softjax {mode}"] = _grad(
            lambda x, mode=mode: jnp.sum(softjax.top_k(x, k, mode=mode)[1], axis=-2), w
        )
    t, slow = _time(fns, (x,), repeats)
    return [
        {
            "batch": batch,
            "n": n,
            "k": k,
            "op": "topk_mask",
            "softops": reg,
            "softjax": mode,
            "setting": "defaults",
            "timed": slow.get(f"softjax {mode}", "interleaved"),
            "ms": {
                "hard": t["hard"],
                "softops": t[f"softops {reg}"],
                "softjax": t[f"softjax {mode}"],
            },
        }
        for reg, mode in MASK_PAIRS
    ]


def _print(row: dict) -> None:
    ms = row["ms"]
    shape = f"{row['batch']}x{row['n']}" + (f" k={row['k']}" if "k" in row else "")
    ours = row["softops"]
    if ms["softjax"] is None:
        print(f"{row['batch']}x{row['n']} {row['op']} softjax {row['softjax']}: skipped (over"
              f" {ONCE_S:g} s at a smaller shape)", flush=True)  # fmt: skip
        return
    diff = f" | max diff {row['max_abs_diff']:.1e} of {row['scale']:.0f}" if "scale" in row else ""
    print(
        f"{shape:16s} {row['op']:9s} {row['setting'][:8]:8s} softops {ours:18s}"
        f" {ms['softops']:9.3f} ms"
        f" | softjax {row['softjax']:6s} {ms['softjax']:10.3f} ms"
        f" | softops/softjax {ms['softops'] / ms['softjax']:6.3f}"
        f" | softops/hard {ms['softops'] / ms['hard']:6.2f}{diff}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed samples per callable")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the results here")
    args = parser.parse_args(argv)
    if softjax is None:
        print(f"softjax cannot be imported on Python {platform.python_version()} (it needs >= 3.12"
              " and `pip install softjax`): nothing to compare")  # fmt: skip
        return
    repeats = args.repeats or (3 if args.quick else 9)
    sort_shapes = ((4, 100),) if args.quick else SORT_SHAPES
    mask_shapes = ((16, 64, 4),) if args.quick else MASK_SHAPES
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg()[0],
        "jax": jax.__version__,
        "softjax": getattr(softjax, "__version__", None),
        "python": platform.python_version(),
        "repeats": repeats,
    }
    rows = []
    for batch, n in sort_shapes:
        for op in ("rank", "sort"):
            for row in sort_case(batch, n, op, repeats):
                _print(row)
                rows.append(row)
    for batch, n, k in mask_shapes:
        for row in mask_case(batch, n, k, repeats):
            _print(row)
            rows.append(row)
    meta["load_avg_end"] = os.getloadavg()[0]
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
