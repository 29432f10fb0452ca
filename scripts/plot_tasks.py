"""One figure per task of the task suite, drawn from its recorded run in ``benchmarks/results/``.

    python scripts/plot_tasks.py --out docs/images

Writes ``task_sorting.png``, ``task_topk.png``, ``task_knn.png`` and ``task_quantile.png`` into
``--out``: means over seeds with min-max bars, nothing but what the JSON files hold.
``docs/tasks.md`` shows them beside the tables ``scripts/update_tables.py`` pastes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import extra_tables  # noqa: E402  (the tables' labels)

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _plain(labels: dict[str, str]) -> dict[str, str]:
    """The tables' labels (``extra_tables``) without their Markdown code marks."""
    return {k: v.replace("`", "") for k, v in labels.items()}


SORT_LABELS = _plain(extra_tables.SORTING_METHODS)
TOPK_LABELS = _plain(extra_tables.TOPK_LOSSES)
QUANTILE_LABELS = _plain(extra_tables.QUANTILE_MODELS)
KNN_LABELS = _plain(extra_tables.KNN_METRICS)


def _load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _stats(values) -> tuple[float, float, float]:
    v = np.asarray(values, float)
    return v.mean(), v.mean() - v.min(), v.max() - v.mean()


def _series(ax, xs, groups: dict, labels: dict, styles: dict | None = None) -> None:
    """One line per label: mean with min-max bars at each x (``groups[(label, x)]``: values)."""
    styles = styles or {}
    for key, label in labels.items():
        pts = [(x, _stats(groups[(key, x)])) for x in xs if (key, x) in groups]
        if not pts:
            continue
        x = [p[0] for p in pts]
        m, lo, hi = (np.array([p[1][i] for p in pts]) for i in range(3))
        style = styles.get(key, {"marker": "o"})
        ax.errorbar(x, m, yerr=[lo, hi], capsize=3, label=label, **style)


def sorting(out: Path) -> None:
    """Exact match and element-wise accuracy against n, per method (last evaluation)."""
    rows = _load("task_sorting")["rows"]
    groups = defaultdict(list)
    for r in rows:
        step, exact, elem = r["curve"][-1]
        groups[(r["method"], r["n"])].append((exact, elem))
    sizes = sorted({r["n"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (ax, title) in enumerate(zip(axes, ("exact match", "element-wise accuracy"))):
        metric = {k: [v[i] for v in vals] for k, vals in groups.items()}
        _series(ax, sizes, metric, SORT_LABELS)
        ax.set_xlabel("numbers per sequence n")
        ax.set_xticks(sizes)
        ax.set_title(f"sorting supervision: {title}")
    axes[0].legend(fontsize=8)
    _save(fig, out / "task_sorting.png")


def topk(out: Path) -> None:
    """Top-1 on the digits and top-5 on the 100-class task, per loss."""
    rows = _load("task_topk")["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, (data, metric) in zip(axes, (("digits", "top1"), ("groups", "top5"))):
        losses = [k for k in TOPK_LABELS if any(r["loss"] == k for r in rows)]
        stats = [
            _stats([r[metric] for r in rows if r["data"] == data and r["loss"] == k])
            for k in losses
        ]
        m = np.array([s[0] for s in stats])
        err = np.array([s[1:] for s in stats]).T
        ax.errorbar(range(len(losses)), m, yerr=err, fmt="o", capsize=3)  # points: a cut axis
        ax.set_xticks(range(len(losses)), [TOPK_LABELS[k] for k in losses], rotation=30, ha="right")
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"{data}: test {metric.replace('top', 'top-')}, every loss at its defaults")
    _save(fig, out / "task_topk.png")


def knn(out: Path) -> None:
    """Test accuracy of the three models against the training steps."""
    runs = _load("task_knn")["runs"]
    groups = {(k, r["steps"]): r[k]["values"] for r in runs for k in KNN_LABELS}
    fig, ax = plt.subplots(figsize=(6, 3.6))
    _series(ax, [r["steps"] for r in runs], groups, KNN_LABELS)
    ax.set_xlabel("training steps")
    ax.set_ylabel("test accuracy")
    ax.set_title("kNN through SOFT top-k (digits)")
    ax.legend(fontsize=8)
    _save(fig, out / "task_knn.png")


def quantile(out: Path) -> None:
    """Test R² of the predicted median against n, per model."""
    rows = _load("task_quantile")["rows"]
    groups = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["n"])].append(r["r2"])
    sizes = sorted({r["n"] for r in rows})
    fig, ax = plt.subplots(figsize=(6, 3.6))
    # soft_median at its defaults gives jnp.median's numbers here: drawn open and dashed on top
    hollow = {"soft_median": dict(marker="s", ms=10, mfc="none", ls="--", zorder=3)}
    _series(ax, sizes, groups, QUANTILE_LABELS, hollow)
    ax.set_xlabel("numbers per set n")
    ax.set_xticks(sizes)
    ax.set_ylabel("test R² of the predicted median")
    ax.set_title("median regression")
    ax.legend(fontsize=8)
    _save(fig, out / "task_quantile.png")


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    """Draws every figure into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="the folder the PNG files go to")
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    for draw in (sorting, topk, knn, quantile):
        draw(out)


if __name__ == "__main__":
    main()
