"""Produce the PNG figures that ``docs/images/`` holds for the documentation site.

    python scripts/make_doc_plots.py --out /tmp/softops-figures

They go into ``--out`` (never into the repository: copy them to ``docs/images/`` by hand to
update the docs).
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from softops import soft_rank, soft_sort, soft_topk_mask  # noqa: E402


def sort_rank_figure(out: Path) -> None:
    """soft_sort and soft_rank of a fixed 5-element vector as ε varies (Blondel et al., Fig. 2)."""
    x = jnp.array([2.9, 0.1, 1.2, 1.8, -0.4], dtype=jnp.float32)
    eps = np.logspace(-2, 2, 80)
    sorts = np.stack([np.asarray(soft_sort(x, regularization_strength=float(e))) for e in eps])
    ranks = np.stack([np.asarray(soft_rank(x, regularization_strength=float(e))) for e in eps])
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for j in range(x.shape[0]):
        axes[0].plot(eps, sorts[:, j], label=f"s{j + 1}")
        axes[1].plot(eps, ranks[:, j], label=f"x{j + 1} = {float(x[j]):.1f}")
    for ax, title in zip(axes, ("soft_sort", "soft_rank")):
        ax.set_xscale("log")
        ax.set_xlabel("regularization strength ε")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "soft_sort_rank.png", dpi=100)
    plt.close(fig)


def topk_figure(out: Path) -> None:
    """The soft top-k mask (k=2) of a fixed vector as ε varies."""
    x = jnp.array([2.9, 0.1, 1.2, 1.8, -0.4], dtype=jnp.float32)
    eps = np.logspace(-3, 0, 60)
    masks = np.stack([np.asarray(soft_topk_mask(x, 2, epsilon=float(e))) for e in eps])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for j in range(x.shape[0]):
        ax.plot(eps, masks[:, j], label=f"x{j + 1} = {float(x[j]):.1f}")
    ax.set_xscale("log")
    ax.set_xlabel("ε")
    ax.set_ylabel("mask value")
    ax.set_title("soft_topk_mask, k = 2")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "soft_topk_mask.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a directory outside the repo")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    sort_rank_figure(out)
    topk_figure(out)
