"""Soft sort / soft rank: time and memory, as ratios to ``jnp.argsort`` measured in the same run.

    python benchmarks/bench_sort.py            # the issue's shapes
    python benchmarks/bench_sort.py --quick    # small shapes, few repeats

For every shape (batch x n), op and regularization it prints the median forward time and the
median forward+backward time (``jax.grad`` of ``sum(op(x) * u)``), each divided by the median time
of ``jnp.argsort`` of the same array, timed interleaved in the same loop. If torchsort is installed,
its forward+backward on the same data is timed in the same loop too. Temporary memory comes from
``jax.jit(f).lower(x).compile().memory_analysis()``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import softops

SHAPES = [(1, 1000), (1, 100_000), (32, 10_000), (256, 1000)]
QUICK_SHAPES = [(1, 1000), (32, 1000)]


def _torchsort_fns(x_np, u_np, op, reg):
    try:
        import torch
        import torchsort
    except ImportError:
        return None
    fn = getattr(torchsort, op)
    x = torch.tensor(x_np)
    u = torch.tensor(u_np)

    def fwd_bwd():
        xx = x.clone().requires_grad_(True)
        (fn(xx, regularization=reg, regularization_strength=1.0) * u).sum().backward()
        return xx.grad

    return fwd_bwd


def _median_ratios(fns, repeats):
    """Times each callable ``repeats`` times, interleaved; returns the median seconds of each."""
    for f in fns.values():
        f()
        f()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def temp_bytes(f, *args):
    return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes


def run(shapes, repeats, method):
    rng = np.random.default_rng(0)
    print(f"backend={jax.default_backend()} method={method} repeats={repeats} float32\n")
    header = (
        "| batch x n | op | reg | fwd (ms) | fwd / argsort | fwd+bwd (ms) | fwd+bwd / argsort "
        "| torchsort fwd+bwd / argsort | temp bytes/elem |"
    )
    print(header)
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for bsz, n in shapes:
        x_np = rng.standard_normal((bsz, n)).astype(np.float32)
        u_np = rng.standard_normal((bsz, n)).astype(np.float32)
        x, u = jnp.asarray(x_np), jnp.asarray(u_np)
        argsort = jax.jit(lambda x: jnp.argsort(x, axis=-1))
        for op_name in ("soft_rank", "soft_sort"):
            op = getattr(softops, op_name)
            for reg in ("l2", "kl"):

                def f(x, op=op, reg=reg):
                    return op(x, regularization=reg, method=method)

                fwd = jax.jit(f)
                grad = jax.jit(jax.grad(lambda x, f=f: jnp.sum(f(x) * u)))
                fns = {
                    "argsort": lambda: argsort(x).block_until_ready(),
                    "fwd": lambda fwd=fwd: fwd(x).block_until_ready(),
                    "grad": lambda grad=grad: grad(x).block_until_ready(),
                }
                ts = _torchsort_fns(x_np, u_np, op_name, reg)
                if ts is not None:
                    fns["torchsort"] = ts
                med = _median_ratios(fns, repeats)
                mem = temp_bytes(jax.grad(lambda x, f=f: jnp.sum(f(x) * u)), x)
                ref = med["argsort"]
                torch_col = f"{med['torchsort'] / ref:.2f}" if "torchsort" in med else "n/a"
                print(
                    f"| {bsz} x {n} | {op_name} | {reg} | {med['fwd'] * 1e3:.3f} | "
                    f"{med['fwd'] / ref:.2f} | {med['grad'] * 1e3:.3f} | {med['grad'] / ref:.2f} | "
                    f"{torch_col} | {mem / (bsz * n):.1f} |",
                    flush=True,
                )


def memory_scaling(method):
    """Temporary bytes per element of forward+backward soft_rank as n grows (O(n) memory)."""
    print("\n| n | soft_rank l2 fwd+bwd temp bytes | bytes / element |")
    print("|---:|---:|---:|")
    for n in (10**4, 10**5, 10**6):
        x = jnp.zeros((1, n), jnp.float32)
        b = temp_bytes(jax.grad(lambda x: jnp.sum(softops.soft_rank(x, method=method) ** 2)), x)
        print(f"| {n} | {b} | {b / n:.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--method", default="auto", choices=["auto", "sequential", "parallel"])
    args = parser.parse_args()
    repeats = args.repeats or (5 if args.quick else 15)
    run(QUICK_SHAPES if args.quick else SHAPES, repeats, args.method)
    memory_scaling(args.method)


if __name__ == "__main__":
    main()
