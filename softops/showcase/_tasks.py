"""Showcase section 5: the task suite's headline table at quick sizes.

The recorded full runs (more steps and seeds, diffsort as a peer) are in ``docs/tasks.md``;
``benchmarks/tasks/`` holds their scripts, which train with the same code as this section.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from softops.showcase import sorting_data, sorting_task, topk_task
from softops.showcase._examples import mean_sd, over_seeds
from softops.showcase.data import digit_images, load_data
from softops.showcase.results import markdown, table

# the models of each task, in the table's order, and their labels
_SORT = {"perm_bce": "`soft_permutation` + BCE", "spearman": "`spearman_loss`"}
_TOPK = {
    "digits": ("cross_entropy", "rank_k1", "mask_k1"),
    "groups": ("cross_entropy", "rank_k5", "mask_k5"),
}
_TOPK_LABEL = {
    "cross_entropy": "cross-entropy",
    "rank_k1": "`soft_topk_rank_loss` (defaults)",
    "mask_k1": "`soft_topk_mask_loss` (defaults)",
    "rank_k5": "`soft_topk_rank_loss` (k = 5)",
    "mask_k5": "`soft_topk_mask_loss` (k = 5)",
}
_MEDIAN = {
    "soft_median": "`soft_median` (defaults), squared error",
    "pinball": "`jnp.median`, pinball loss",
    "set_mean": "set mean (cannot sort)",
}


def _sizes(quick: bool) -> dict[str, int]:
    if quick:
        return dict(n=4, steps=20, num_test=100, topk_steps=100)
    return dict(n=5, steps=500, num_test=500, topk_steps=1000)


def run(*, quick: bool, seeds, progress: bool = True) -> dict[str, Any]:
    """Every model of the headline table, once per seed: ``{(task, model): [metric, ...]}``."""
    z = _sizes(quick)
    got: dict[tuple[str, str], list[float]] = {}
    for seed in seeds:
        t0 = time.perf_counter()
        kw = dict(n=z["n"], seed=seed, steps=z["steps"], batch=32, num_test=z["num_test"])
        data = sorting_data.make(None, digit_images(seed=seed), **kw)
        run = dict(steps=z["steps"], lr=1e-3, seed=seed)
        for loss in _SORT:
            curve = sorting_task.train_sorting(loss, data, evals={z["steps"]}, **run)
            got.setdefault(("sorting", loss), []).append(curve[-1][1])
        for model in _MEDIAN:
            r2 = sorting_task.train_median(model, data, **run)[1]
            got.setdefault(("median", model), []).append(r2)
        for name, losses in _TOPK.items():
            if name == "digits":
                xy = load_data(seed=seed, test_size=0.3)
            else:
                xy = topk_task.groups_data(seed)
            for loss in losses:
                r = topk_task.train(loss, xy, seed, steps=z["topk_steps"])
                got.setdefault((name, loss), []).append(r["top1" if name == "digits" else "top5"])
        if progress:
            print(f"task suite: seed {seed}, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return {"sizes": z, "seeds": list(seeds), "results": got}


def section(*, quick: bool, seeds, progress: bool) -> tuple[str, dict[str, Any], Any]:
    """The Markdown section, its table and the raw numbers."""
    res = run(quick=quick, seeds=seeds, progress=progress)
    z, got = res["sizes"], res["results"]
    n, chance = z["n"], 1.0
    for i in range(2, z["n"] + 1):
        chance /= i
    rows = [
        [f"sorting supervision, n = {n}", "exact match", label, mean_sd(got[("sorting", key)])]
        for key, label in _SORT.items()
    ]
    rows.append([f"sorting supervision, n = {n}", "exact match", "chance (1/n!)", f"{chance:.3f}"])
    for name, losses in _TOPK.items():
        task, metric = (
            ("top-k classification, digits", "top-1")
            if name == "digits"
            else ("top-k classification, 100 classes in groups of 5", "top-5")
        )
        rows += [[task, metric, _TOPK_LABEL[k], mean_sd(got[(name, k)])] for k in losses]
    rows += [
        [f"median regression, n = {n}", "test R²", label, mean_sd(got[("median", key)])]
        for key, label in _MEDIAN.items()
    ]
    tab = table(["task", "metric", "model", "test score"], rows, align=["l", "l", "l", "r"])
    md = "\n".join(
        [
            "## 5. The task suite at quick sizes (full runs: `docs/tasks.md`)\n",
            f"Sorting and median regression: sequences of {n} four-digit numbers made of "
            f"scikit-learn's digit images, a small CNN scorer, {z['steps']} Adam steps, "
            f"{z['num_test']} test sequences of held-out images. Top-k classification: an MLP, "
            f"{z['topk_steps']} Adam steps, every loss at its defaults (k as shown). "
            f"{over_seeds(seeds).capitalize()}. The kNN task is section 3; diffsort, the sorting "
            "peer, runs in PyTorch and is compared in the recorded runs only.\n",
            markdown(tab),
            "",
        ]
    )
    raw = {
        "sizes": z,
        "seeds": res["seeds"],
        "results": {f"{t}/{m}": v for (t, m), v in got.items()},
    }
    return md, {"tasks": tab}, raw
