"""Soft sort / soft rank: time and memory, as ratios to sorts and to torchsort in the same run.

    python benchmarks/bench_sort.py                       # headline shapes, sweep, float64
    python benchmarks/bench_sort.py --quick               # a few small shapes (CI, seconds)
    python benchmarks/bench_sort.py --json results.json   # also write every measurement as JSON

For every shape (batch x n) it times, interleaved in one loop after a warm-up (``jax.jit``,
``block_until_ready``, median over the repeats):

- ``jnp.argsort`` of the same array (stable) and softops' private fast exact argsort
  (``softops._sort.argsort``);
- for each op (soft_sort, soft_rank) and regularization (L2, KL), strength 1: the forward and the
  forward+backward (``jax.grad`` of ``sum(op(x) * u)``);
- torchsort's forward+backward of the same op on the same data (CPU tensors), when torch and
  torchsort import.

Calls shorter than about a millisecond are timed in batches of several calls. Temporary memory
of the compiled forward+backward comes from ``.lower(x).compile().memory_analysis()``.

Shapes: the four headline shapes (1 x 10^3, 1 x 10^5, 32 x 10^4, 256 x 10^3) in float32, a sweep
over n (powers of two and others, 16 to 2^17) and batch (1 to 4096) with at most ``--max-elements``
items per array, and the headline shapes in float64 (softops vs ``jnp.argsort`` of the float64
array). The JSON (``--json PATH``) holds the raw medians; ``scripts/update_tables.py`` renders the
README / docs tables from ``benchmarks/results/bench_sort.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import softops
from softops import _sort

HEADLINE = [(1, 1000), (1, 100_000), (32, 10_000), (256, 1000)]
SWEEP_N = [16, 100, 128, 1000, 1024, 10_000, 16_384, 100_000, 131_072]
SWEEP_BATCH = [1, 64, 4096]
MAX_ELEMENTS = 2**18  # the recorded run; 2**20 and more take many minutes on 2 cores
OPS = ("soft_sort", "soft_rank")
REGS = ("l2", "kl")
MIN_SAMPLE_S = 2e-3  # a timed sample runs a batch of calls lasting at least this long

QUICK_HEADLINE = [(1, 1000)]
QUICK_SWEEP_N = [16]
QUICK_SWEEP_BATCH = [8]
QUICK_FLOAT64 = [(1, 100)]


def _torchsort():
    try:
        import torch
        import torchsort
    except ImportError:
        return None, None
    return torch, torchsort


def _torch_fwd_bwd(torch, torchsort, op, reg, x_np, u_np, threads):
    fn = getattr(torchsort, op)
    x, u = torch.from_numpy(x_np), torch.from_numpy(u_np)

    def fwd_bwd():
        xx = x.detach().requires_grad_(True)
        (fn(xx, regularization=reg, regularization_strength=1.0) * u).sum().backward()
        return xx.grad

    fwd_bwd.setup = lambda: torch.set_num_threads(threads)  # run untimed before each sample
    return fwd_bwd


def _calls_per_sample(f) -> int:
    t0 = time.perf_counter()
    f()
    dt = time.perf_counter() - t0
    return max(1, min(1000, int(MIN_SAMPLE_S / max(dt, 1e-7))))


def interleaved_medians(fns: dict, repeats: int) -> dict:
    """Median seconds per call of each callable, all timed interleaved after a warm-up.

    A callable's ``setup`` attribute, when it has one, runs untimed before each of its samples.
    """
    nothing = lambda: None  # noqa: E731
    inner = {}
    for k, f in fns.items():
        getattr(f, "setup", nothing)()
        f()
        f()
        inner[k] = _calls_per_sample(f)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            getattr(f, "setup", nothing)()
            t0 = time.perf_counter()
            for _ in range(inner[k]):
                f()
            times[k].append((time.perf_counter() - t0) / inner[k])
    return {k: float(np.median(v)) for k, v in times.items()}


def _compiled(f, x):
    return jax.jit(f).lower(x).compile()


def _ready(compiled, x):
    return lambda: compiled(x).block_until_ready()


def measure_shape(group, batch, n, dtype, repeats, torch_mods, torch_threads=(1,), seed=0):
    """One interleaved timing loop for one shape: returns one JSON row per (op, reg).

    torchsort is timed once per entry of ``torch_threads`` (torch's intra-op threads), in the
    same loop.
    """
    rng = np.random.default_rng(seed + 7919 * n + batch)
    np_dtype = np.float64 if dtype == "float64" else np.float32
    x_np = rng.standard_normal((batch, n)).astype(np_dtype)
    u_np = rng.standard_normal((batch, n)).astype(np_dtype)
    ctx = jax.enable_x64(True) if dtype == "float64" else contextlib.nullcontext()
    with ctx:
        x, u = jnp.asarray(x_np), jnp.asarray(u_np)
        assert x.dtype == np_dtype
        fns = {
            "argsort": _ready(_compiled(lambda x: jnp.argsort(x, axis=-1, stable=True), x), x),
            "fast_argsort": _ready(_compiled(_sort.argsort, x), x),
        }
        temp = {}
        for op_name in OPS:
            op = getattr(softops, op_name)
            for reg in REGS:

                def f(x, op=op, reg=reg):
                    return op(x, regularization=reg, regularization_strength=1.0)

                def loss(x, f=f):
                    return jnp.sum(f(x) * u)

                fwd = _compiled(f, x)
                grad = _compiled(jax.grad(loss), x)
                temp[op_name, reg] = (
                    fwd.memory_analysis().temp_size_in_bytes,
                    grad.memory_analysis().temp_size_in_bytes,
                )
                fns[f"{op_name}/{reg}/fwd"] = _ready(fwd, x)
                fns[f"{op_name}/{reg}/grad"] = _ready(grad, x)
                for t in torch_threads if torch_mods[0] is not None else ():
                    fns[f"{op_name}/{reg}/torchsort/{t}"] = _torch_fwd_bwd(
                        *torch_mods, op_name, reg, x_np, u_np, t
                    )
        med = interleaved_medians(fns, repeats)
    rows = []
    for op_name in OPS:
        for reg in REGS:
            rows.append(
                {
                    "group": group,
                    "batch": batch,
                    "n": n,
                    "dtype": dtype,
                    "op": op_name,
                    "reg": reg,
                    "fwd_s": med[f"{op_name}/{reg}/fwd"],
                    "grad_s": med[f"{op_name}/{reg}/grad"],
                    "argsort_s": med["argsort"],
                    "fast_argsort_s": med["fast_argsort"],
                    # torch threads -> seconds
                    "torchsort_by_threads": {
                        str(t): med[f"{op_name}/{reg}/torchsort/{t}"]
                        for t in torch_threads
                        if torch_mods[0] is not None
                    },
                    "fwd_temp_bytes": int(temp[op_name, reg][0]),
                    "grad_temp_bytes": int(temp[op_name, reg][1]),
                }
            )
    return rows


def _vs_torch(r):
    """softops' fwd+bwd over torchsort's at each torch thread count, ``ratio (threads)``."""
    by = r["torchsort_by_threads"]
    return ", ".join(f"{r['grad_s'] / v:.2f} ({t}t)" for t, v in by.items()) or "n/a"


def print_rows(rows):
    for r in rows:
        print(
            f"| {r['dtype']} | {r['batch']} x {r['n']} | {r['op']} | {r['reg']} "
            f"| {r['grad_s'] * 1e3:.3f} | {r['grad_s'] / r['argsort_s']:.2f} "
            f"| {r['grad_s'] / r['fast_argsort_s']:.2f} "
            f"| {_vs_torch(r)} "
            f"| {r['fwd_s'] / r['argsort_s']:.2f} "
            f"| {r['grad_temp_bytes'] / (r['batch'] * r['n']):.1f} |",
            flush=True,
        )


def sweep_shapes(ns, batches, max_elements):
    return [(b, n) for n in ns for b in batches if b * n <= max_elements]


def meta(args, torch_mods):
    torch, torchsort = torch_mods
    info = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "softops": softops.__version__,
        "repeats": args.repeats,
        "quick": args.quick,
        "max_elements": args.max_elements,
        "sweep_n": args.sweep_n,
        "sweep_batch": args.sweep_batch,
        "regularization_strength": 1.0,
        "torch": None,
        "torchsort": None,
        "cores": len(os.sched_getaffinity(0)),
    }
    if torch is not None:
        from importlib.metadata import version

        info["torch"] = torch.__version__
        info["torchsort"] = version("torchsort")
        info["torch_threads_all"] = args.torch_threads
    return info


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few small shapes, few repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed samples per callable")
    parser.add_argument("--max-elements", type=int, default=MAX_ELEMENTS, help="sweep cap")
    parser.add_argument("--sweep-n", type=int, nargs="+", default=SWEEP_N, help="sweep sizes")
    parser.add_argument(
        "--sweep-batch", type=int, nargs="+", default=SWEEP_BATCH, help="sweep batch sizes"
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        nargs="+",
        default=None,
        help="torch intra-op thread counts, each timed in the same loop (default: torch's own "
        "default, then 1)",
    )
    parser.add_argument(
        "--cores",
        type=int,
        default=None,
        help="run on this many of the process's cores (os.sched_setaffinity before JAX starts: "
        "XLA's and torch's thread pools see only these; default: all)",
    )
    parser.add_argument("--no-torchsort", action="store_true", help="skip torchsort")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the results here")
    args = parser.parse_args()
    args.repeats = args.repeats or (3 if args.quick else 9)
    if args.cores is not None:  # before the first JAX call creates XLA's CPU thread pool
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
    torch_mods = (None, None) if args.no_torchsort else _torchsort()
    if args.torch_threads is None:
        default = torch_mods[0].get_num_threads() if torch_mods[0] is not None else 1
        args.torch_threads = list(dict.fromkeys([default, 1]))
    if args.quick:
        plan = [("headline", s, "float32") for s in QUICK_HEADLINE]
        plan += [
            ("sweep", s, "float32")
            for s in sweep_shapes(QUICK_SWEEP_N, QUICK_SWEEP_BATCH, args.max_elements)
        ]
        plan += [("float64", s, "float64") for s in QUICK_FLOAT64]
    else:
        plan = [("headline", s, "float32") for s in HEADLINE]
        plan += [
            ("sweep", s, "float32")
            for s in sweep_shapes(args.sweep_n, args.sweep_batch, args.max_elements)
            if s not in HEADLINE
        ]
        plan += [("float64", s, "float64") for s in HEADLINE]
    info = meta(args, torch_mods)
    print(
        f"backend={info['backend']} jax={info['jax']} torchsort={info['torchsort']} "
        f"repeats={args.repeats}; ratios are of forward+backward medians, same loop\n"
    )
    print(
        "| dtype | batch x n | op | reg | fwd+bwd (ms) | / jnp.argsort | / fast argsort "
        "| / torchsort | fwd / jnp.argsort | temp bytes/elem |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    t0 = time.perf_counter()
    rows = []
    for group, (batch, n), dtype in plan:
        new = measure_shape(
            group, batch, n, dtype, args.repeats, torch_mods, tuple(args.torch_threads)
        )
        print_rows(new)
        rows += new
    info["wall_s"] = round(time.perf_counter() - t0, 1)
    print(f"\n{len(plan)} shapes in {info['wall_s']} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"benchmark": "bench_sort", "meta": info, "rows": rows}, fh, indent=1)
            fh.write("\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
