"""Showcase sections 3 and 4: training results, over several seeds (mean ± standard deviation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from softops.showcase import fg_training, knn
from softops.showcase.results import markdown, table


def mean_sd(values, digits: int = 3) -> str:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if len(v) == 0:
        return "—"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"


def over_seeds(seeds) -> str:
    n = len(seeds)
    return "one seed" if n == 1 else f"mean ± standard deviation over {n} seeds"


def knn_section(*, quick: bool, seeds, progress: bool) -> tuple[str, dict[str, Any], Any]:
    """Differentiable kNN through SOFT top-k on digits, one run per seed."""
    res = knn.run_seeds(seeds, quick=quick, progress=progress)
    k_nn = f"{res['k']}-NN"
    rows = [
        [label.replace("kNN", k_nn), mean_sd(res[key]["values"])]
        for key, label in knn.METRICS.items()
    ]
    tab = table(["model", "test accuracy"], rows)
    md = "\n".join(
        [
            "## 3. Differentiable kNN through SOFT top-k (Xie et al. 2020, Section 5)\n",
            f"scikit-learn's digits ({res['n_train']} train / {res['n_test']} test), "
            f"{res['steps']} steps, k = {res['k']}; {over_seeds(seeds)} (split, initialization and "
            "batches change with the seed).\n",
            markdown(tab),
            "",
        ]
    )
    return md, {"knn": tab}, res


def forward_grad_section(
    out: Path | None, *, quick: bool, seeds, progress: bool
) -> tuple[str, dict[str, Any], dict[str, str], Any]:
    """Backprop vs the three forward-gradient estimators, trained side by side, per seed.

    With a folder ``out`` it also plots loss and accuracy against time there.
    """
    lrs = {m: (lr,) for m, lr in fg_training.TUNED_LRS.items()}
    res = fg_training.run(quick=quick, seeds=tuple(seeds), lrs=lrs, out=out, progress=progress)
    rows, values = [], {}
    for m in fg_training.METHODS:
        ratios = res[f"time_ratio_values_{m}"]
        finite = [r for r in ratios if np.isfinite(r)]
        reached = f"{len(finite)}/{len(ratios)}"
        ended = sum(a >= res["target_acc"] for a in res[f"test_acc_values_{m}"])
        rows.append(
            [
                fg_training.LABELS[m],
                f"{res[f'lr_{m}']:g}",
                mean_sd(res[f"test_acc_values_{m}"]),
                reached,
                f"{ended}/{len(ratios)}",
                mean_sd(finite, 2) if finite else "not reached",
                f"{res[f'step_cost_ratio_{m}']:.2f}",
            ]
        )
        values[f"time_ratio_{m}"] = mean_sd(finite, 2) if finite else "not reached"
        values[f"test_acc_{m}"] = mean_sd(res[f"test_acc_values_{m}"])
    tab = table(
        [
            "method",
            "learning rate",
            "test accuracy",
            "seeds reaching the target (at any evaluation)",
            "seeds ending at or above it",
            "time to target / backprop's",
            "step cost / backprop's",
        ],
        rows,
    )
    md = "\n".join(
        [
            "## 4. Forward gradients vs backprop (digits, Flax nnx MLP 64-128-128-10)\n",
            f"{res['steps']} Adam steps (cosine decay), batch {res['batch']}, each method at "
            "the learning rate `benchmarks/bench_local_losses.py` picked from its grid; all runs "
            "trained side by side in a shuffled order so that machine load hits every method "
            f"alike. Target: backprop's mean test accuracy minus one point "
            f"({res['target_acc']:.3f}). {over_seeds(seeds).capitalize()}; the time ratio is per "
            "seed (against the same seed's backprop run), over the seeds that reached the "
            "target; the step cost is the median ratio of timed chunks.\n",
            markdown(tab),
            "",
        ]
    )
    if "plot" in res:
        md += f"\n![training loss and test accuracy against time]({Path(res['plot']).name})\n"
    data = {k: v for k, v in res.items() if k not in ("curves", "curves_by_seed")}
    return md, {"forward_grad": tab}, values, data
