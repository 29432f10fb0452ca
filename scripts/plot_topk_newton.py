"""Figures for docs/topk.md: sorted soft top-k across ε, and the ott-jax parity functions.

    python scripts/plot_topk_newton.py --out /tmp/softops-figures

Writes ``soft_topk_newton.png``, ``soft_permutation.png`` and ``soft_quantize.png`` into
``--out`` (never into the repository: copy them to ``docs/images/`` by hand to update the docs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from softops import soft_permutation, soft_quantile_normalization, soft_quantize  # noqa: E402
from softops.topk_ot import soft_topk_solve  # noqa: E402

X = jnp.array([2.9, 0.1, 1.2, 1.8, -0.4, 1.5, 2.6, 0.7], dtype=jnp.float32)


def topk_figure(out: Path) -> None:
    """soft_topk values (k = 3) from ε = 10 to 1e-5, Newton vs Sinkhorn (1000 iterations)."""
    eps = np.logspace(-5, 1, 49)
    k = 3
    with jax.enable_x64(True):
        x = jnp.asarray(X, jnp.float64)
        run = {
            s: jax.jit(lambda e, s=s: soft_topk_solve(x, k, epsilon=e, solver=s))
            for s in ("newton", "sinkhorn")
        }
        outs = {s: [run[s](float(e)) for e in eps] for s in run}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for j in range(k):
        axes[0].plot(eps, [float(o.values[j]) for o in outs["newton"]], label=f"value {j + 1}")
    for v in np.sort(np.asarray(X))[::-1][:k]:
        axes[0].axhline(v, color="grey", lw=0.5, ls=":")
    axes[0].set_title("soft_topk (newton), k = 3: values")
    for s, style in (("newton", "-"), ("sinkhorn", "--")):
        axes[1].plot(eps, [float(o.residual) for o in outs[s]], style, label=s)
    axes[1].set_yscale("log")
    axes[1].set_title("column-marginal error (mask units)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("ε")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "soft_topk_newton.png", dpi=100)
    plt.close(fig)


def permutation_figure(out: Path) -> None:
    """soft_permutation of X at three temperatures."""
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    for ax, t in zip(axes, (0.02, 0.3, 3.0)):
        ax.imshow(np.asarray(soft_permutation(X, temperature=t)), vmin=0, vmax=1, cmap="viridis")
        ax.set_title(f"soft_permutation, T = {t}")
        ax.set_xlabel("item")
        ax.set_ylabel("position")
    fig.tight_layout()
    fig.savefig(out / "soft_permutation.png", dpi=100)
    plt.close(fig)


def quantize_figure(out: Path) -> None:
    """soft_quantize (3 levels) and soft_quantile_normalization of X as ε varies."""
    eps = np.logspace(-3, 1, 60)
    targets = jnp.array([-1.0, 0.0, 1.0, 2.0])
    quant = np.stack([np.asarray(soft_quantize(X, 3, regularization_strength=e)) for e in eps])
    qn = np.stack(
        [
            np.asarray(soft_quantile_normalization(X, targets, regularization_strength=e))
            for e in eps
        ]
    )
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for j in range(X.shape[0]):
        axes[0].plot(eps, quant[:, j], label=f"x = {float(X[j]):.1f}")
        axes[1].plot(eps, qn[:, j])
    axes[0].set_title("soft_quantize, 3 levels")
    axes[1].set_title("soft_quantile_normalization onto {-1, 0, 1, 2}")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("regularization strength ε")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "soft_quantize.png", dpi=100)
    plt.close(fig)


def main() -> None:
    """Writes the three figures into --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a directory outside the repo")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    topk_figure(out)
    permutation_figure(out)
    quantize_figure(out)


if __name__ == "__main__":
    main()
