"""The ``python -m softops`` showcase: the papers' headline results, measured on this machine.

Writes a report folder (Markdown and PNG plots) with

1. soft sort and soft rank of a fixed vector as the strength varies (Blondel et al., Figure 2);
2. time and compiled memory of soft rank against the two baselines the paper compares with, an
   O(n^2) all-pairs soft rank and an optimal-transport (Sinkhorn) soft rank with n anchors, as n
   grows until a baseline needs more memory than the budget;
3. the kNN-through-SOFT-top-k and forward-gradient training results, when the ``examples/`` folder
   of a source checkout is importable (run from the repository root).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from softops.projection import soft_rank, soft_sort


def _all_pairs_soft_rank(x, eps):
    """O(n^2) baseline: rank_i = 1/2 + sum_j sigmoid((x_i - x_j) / eps)."""
    return 0.5 + jnp.sum(jax.nn.sigmoid((x[:, :, None] - x[:, None, :]) / eps), axis=-1)


def _sinkhorn_soft_rank(x, eps, iters=100):
    """OT baseline (Cuturi et al. 2019): transport n squashed inputs to n sorted anchors."""
    n = x.shape[-1]
    z = jax.nn.sigmoid((x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + 1e-6))
    anchors = (jnp.arange(n, dtype=x.dtype) + 0.5) / n
    cost = (z[:, :, None] - anchors[None, None, :]) ** 2
    log_a = jnp.full(x.shape, -jnp.log(n), x.dtype)

    def step(carry, _):
        f, g = carry
        f = eps * log_a - eps * jax.nn.logsumexp((g[:, None, :] - cost) / eps, axis=-1)
        g = eps * log_a - eps * jax.nn.logsumexp((f[:, :, None] - cost) / eps, axis=-2)
        return (f, g), None

    (f, g), _ = jax.lax.scan(step, (jnp.zeros_like(x), jnp.zeros_like(x)), None, length=iters)
    plan = jnp.exp((f[:, :, None] + g[:, None, :] - cost) / eps)
    return n * jnp.sum(plan * jnp.arange(1, n + 1, dtype=x.dtype)[None, None, :], axis=-1)


def _median_time(f, x, repeats):
    f(x).block_until_ready()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(x).block_until_ready()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def figure2(out: Path, plt) -> str:
    """Soft sort and soft rank of a fixed vector as the strength varies."""
    x = jnp.array([-1.3, 0.2, 2.1, 0.9, -0.4])
    eps = np.logspace(-2, 2, 60)
    lines = []
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, op, name in ((axes[0], soft_sort, "soft_sort"), (axes[1], soft_rank, "soft_rank")):
        for reg, style in (("l2", "-"), ("kl", "--")):
            vals = jax.vmap(
                lambda e, op=op, reg=reg: op(x, regularization=reg, regularization_strength=e)
            )(jnp.asarray(eps, jnp.float32))
            for j in range(x.shape[0]):
                ax.plot(eps, vals[:, j], style, color=f"C{j}", label=f"{reg}" if j == 0 else None)
        ax.set_xscale("log")
        ax.set_xlabel("regularization strength ε")
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "soft_sort_rank_vs_strength.png", dpi=120)
    plt.close(fig)
    lines.append("## Soft sort and soft rank as ε varies\n")
    lines.append(f"x = [{', '.join(f'{v:.1f}' for v in np.asarray(x))}]\n")
    lines.append("| ε | soft_sort (l2) | soft_rank (l2) |\n|---:|---|---|")
    for e in (0.01, 0.3, 1.0, 10.0):
        s = ", ".join(f"{v:.3f}" for v in np.asarray(soft_sort(x, regularization_strength=e)))
        r = ", ".join(f"{v:.3f}" for v in np.asarray(soft_rank(x, regularization_strength=e)))
        lines.append(f"| {e} | [{s}] | [{r}] |")
    lines.append("\n![soft sort and rank](soft_sort_rank_vs_strength.png)\n")
    return "\n".join(lines)


def scaling(out: Path, plt, sizes, budget_bytes: int, repeats: int) -> str:
    """Time and memory of soft_rank vs the O(n^2) and Sinkhorn baselines as n grows."""
    methods = {
        "softops soft_rank": lambda x: soft_rank(x, regularization_strength=0.1),
        "all-pairs O(n²)": lambda x: _all_pairs_soft_rank(x, 0.1),
        "Sinkhorn OT (n anchors, 100 it.)": lambda x: _sinkhorn_soft_rank(x, 0.01),
    }
    rows, times = [], {k: [] for k in methods}
    rng = np.random.default_rng(0)
    for n in tqdm(sizes, desc="soft rank vs baselines", unit="n"):
        x = jnp.asarray(rng.standard_normal((1, n)), jnp.float32)
        u = jnp.asarray(rng.standard_normal((1, n)), jnp.float32)
        row = [f"{n:,}"]
        for name, f in methods.items():
            # Forward + backward: the gradient of <rank(x), u>, what training needs.
            fj = jax.jit(jax.grad(lambda x, f=f, u=u: jnp.sum(f(x) * u)))
            mem = fj.lower(x).compile().memory_analysis().temp_size_in_bytes
            if mem > budget_bytes:
                row.append(f"over budget ({mem / 2**20:,.0f} MiB)")
                times[name].append(np.nan)
                continue
            try:
                t = _median_time(fj, x, repeats)
            except jax.errors.JaxRuntimeError as err:  # e.g. an allocation XLA could not make
                row.append(f"failed: {str(err).splitlines()[0][:60]}")
                times[name].append(np.nan)
                continue
            times[name].append(t)
            row.append(f"{t * 1e3:,.2f} ms, {mem / 2**20:,.2f} MiB")
        rows.append("| " + " | ".join(row) + " |")
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, ts in times.items():
        ax.plot(sizes, np.asarray(ts) * 1e3, "o-", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n")
    ax.set_ylabel("forward + backward time (ms)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "soft_rank_scaling.png", dpi=120)
    plt.close(fig)
    header = "| n | " + " | ".join(methods) + " |\n|---:|" + "---|" * len(methods)
    speedups = [
        times["all-pairs O(n²)"][i] / times["softops soft_rank"][i]
        for i in range(len(sizes))
        if np.isfinite(times["all-pairs O(n²)"][i])
    ]
    return "\n".join(
        [
            "## Soft rank against the paper's baselines (forward + backward, float32, batch 1)\n",
            f"Memory budget: {budget_bytes / 2**20:,.0f} MiB of compiled temporary memory; "
            "a baseline "
            "over it is not run. Times are medians; memory is XLA's compiled temporary memory.\n",
            header,
            *rows,
            "",
            "All-pairs / softops time ratio where both ran: "
            + ", ".join(f"{s:.1f}x" for s in speedups)
            + ".",
            "\n![scaling](soft_rank_scaling.png)\n",
        ]
    )


def _example(name: str):
    try:
        return importlib.import_module(f"examples.{name}")
    except ImportError:
        return None


def examples_section(out: Path, quick: bool) -> str:
    lines = ["## Examples\n"]
    knn = _example("knn_digits")
    fg = _example("forward_gradient_training")
    if knn is None or fg is None:
        lines.append(
            "Run from the repository root to include the kNN and forward-gradient examples."
        )
        return "\n".join(lines)
    print("kNN through SOFT top-k (examples/knn_digits.py) ...", flush=True)
    res = knn.run(quick=quick)
    lines.append("### Differentiable kNN through SOFT top-k (digits)\n")
    lines.append("| metric | value |\n|---|---:|")
    lines += [f"| {k} | {v:.4g} |" for k, v in res.items() if isinstance(v, (int, float))]
    print("Forward gradients vs backprop (examples/forward_gradient_training.py) ...", flush=True)
    res = fg.run(quick=quick, out=str(out / "forward_grad_digits.png"))
    lines.append("\n### Forward gradients vs backprop (digits)\n")
    lines.append("| metric | value |\n|---|---:|")
    lines += [f"| {k} | {v:.4g} |" for k, v in res.items() if isinstance(v, (int, float))]
    if (out / "forward_grad_digits.png").exists():
        lines.append("\n![forward gradients](forward_grad_digits.png)\n")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m softops", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes (CI)")
    parser.add_argument("--out", default="softops_report", help="report folder")
    parser.add_argument("--budget-mib", type=float, default=1024, help="baseline memory budget")
    parser.add_argument("--skip-examples", action="store_true")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path.cwd()))
    t0 = time.perf_counter()
    print(
        f"softops showcase on {jax.default_backend()} ({jax.devices()[0].device_kind})", flush=True
    )
    sections = [
        "# softops report\n",
        f"JAX {jax.__version__}, backend {jax.default_backend()}.\n",
        figure2(out, plt),
    ]
    sizes = [100, 1000] if args.quick else [100, 1000, 10_000, 100_000]
    sections.append(scaling(out, plt, sizes, int(args.budget_mib * 2**20), 3 if args.quick else 7))
    print(sections[-1].split("\n![")[0])
    if not args.skip_examples:
        sections.append(examples_section(out, args.quick))
        print(sections[-1])
    sections.append(f"\nTotal time: {time.perf_counter() - t0:.1f} s.")
    (out / "README.md").write_text("\n".join(sections) + "\n")
    print(f"\nReport written to {out / 'README.md'} ({time.perf_counter() - t0:.1f} s)")
