"""Showcase section 1: soft sort and soft rank of a fixed vector as the strength varies.

Blondel et al., Fast Differentiable Sorting and Ranking, ICML 2020, arXiv:2002.08871, Figure 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from softops.projection import soft_rank, soft_sort
from softops.showcase.results import markdown, table

X = (-1.3, 0.2, 2.1, 0.9, -0.4)
PLOT = "soft_sort_rank_vs_strength.png"


def run(out: Path | None) -> tuple[str, dict[str, Any]]:
    """Tabulates both operators at a few ε and, with a folder ``out``, plots them against ε.

    Returns the Markdown and the tables; ``out=None`` writes nothing.
    """
    x = jnp.array(X, jnp.float32)
    if out is not None:
        _plot(out, x)

    rows = []
    for e in (0.01, 0.3, 1.0, 10.0):
        s = np.asarray(soft_sort(x, regularization_strength=e))
        r = np.asarray(soft_rank(x, regularization_strength=e))
        rows.append([f"{e:g}", ", ".join(f"{v:.3f}" for v in s), ", ".join(f"{v:.3f}" for v in r)])
    tab = table(
        ["ε", "soft_sort(x), L2", "soft_rank(x), L2"],
        rows,
        align=["r", "l", "l"],
        note=f"x = [{', '.join(f'{v:g}' for v in X)}]",
    )
    lines = [
        "## 1. Soft sort and soft rank as ε varies (Blondel et al. 2020, Figure 2)\n",
        f"x = [{', '.join(f'{v:g}' for v in X)}]. As ε → 0 the outputs become the hard sort "
        "(ascending) and the hard ranks (1 = smallest); as ε grows the L2 outputs collapse to "
        "the mean of x (soft sort) and the mean rank (soft rank).\n",
        markdown(tab),
    ]
    if out is not None:
        lines += [
            f"\n![soft sort and soft rank against ε]({PLOT})\n",
            "Colours: one per coordinate of the output (coordinate j of the soft sort is the "
            "j-th smallest value; coordinate j of the soft rank is the rank of x_j). Solid: L2 "
            "regularization; dashed: KL.\n",
        ]
    return "\n".join(lines) + "\n", {"figure2": tab}


def _plot(out: Path, x) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    eps = np.logspace(-2, 2, 60)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ops = ((soft_sort, "soft_sort(x)", "soft-sorted value"), (soft_rank, "soft_rank(x)", "rank"))
    for ax, (op, title, ylabel) in zip(axes, ops):
        for reg, style in (("l2", "-"), ("kl", "--")):
            vals = jax.vmap(
                lambda e, op=op, reg=reg: op(x, regularization=reg, regularization_strength=e)
            )(jnp.asarray(eps, jnp.float32))
            for j in range(x.shape[0]):
                ax.plot(eps, np.asarray(vals[:, j]), style, color=f"C{j}", lw=1.4)
        ax.set_xscale("log")
        ax.set_xlabel("regularization strength ε")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
    # One colour per output coordinate j, which means a different thing in each panel: the j-th
    # smallest value on the left, the rank of x_j on the right. The line style is the
    # regularization.
    for ax, labels in (
        (axes[0], [f"{j + 1}. smallest ({v:g})" for j, v in enumerate(sorted(X))]),
        (axes[1], [f"rank of x_{j + 1} ({v:g})" for j, v in enumerate(X)]),
    ):
        coords = [Line2D([], [], color=f"C{j}", label=label) for j, label in enumerate(labels)]
        ax.legend(handles=coords, fontsize=7, frameon=False, loc="best")
    styles = [
        Line2D([], [], color="k", ls="-", label="L2 regularization"),
        Line2D([], [], color="k", ls="--", label="KL regularization"),
    ]
    fig.legend(handles=styles, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(
        "Soft sort (ascending) and soft rank of x as ε grows; colour j: the j-th smallest "
        "value (left), the rank of x_j (right)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    fig.savefig(out / PLOT, dpi=120)
    plt.close(fig)
