"""Plots and Markdown tables of ``softops.showcase.fg_training`` results.

The methods' order and labels live here, with the tables they shape; ``fg_training`` imports them
(this module imports nothing of it, so neither imports the other in a cycle).
"""

from __future__ import annotations

import math
import pathlib

#: The methods, in the order of the tables.
METHODS = ("backprop", "fgd", "fgd_activity", "fgd_local")
LABELS = {
    "backprop": "backprop",
    "fgd": "FGD, weight-perturbed",
    "fgd_activity": "FGD, activity-perturbed",
    "fgd_local": "FGD, activity-perturbed + local losses",
}


def plot_path(out, dataset):
    """``out/forward_grad_<dataset>.png`` for a folder ``out``; ``out`` itself if a ``.png``."""
    out = pathlib.Path(out)
    return out if out.suffix == ".png" else out / f"forward_grad_{dataset}.png"


def plot(res, methods, path):
    """Training loss and test accuracy against training time; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    by_seed = res.get("curves_by_seed") or {m: [res["curves"][m]] for m in methods}
    for m in methods:
        # Every seed evaluates at the same steps: mean time, loss and accuracy per evaluation,
        # the band spans the seeds' accuracies.
        runs = np.array([[c[:4] for c in curve] for curve in by_seed[m]], float)
        t, loss, acc = runs[:, :, 0].mean(0), runs[:, :, 2].mean(0), runs[:, :, 3].mean(0)
        label = f"{LABELS[m]} (lr {res[f'lr_{m}']:g})"
        (line,) = ax1.plot(t, loss, label=label)
        ax2.plot(t, acc, color=line.get_color(), label=f"{LABELS[m]}: {res[f'test_acc_{m}']:.3f}")
        if len(runs) > 1:
            lo, hi = runs[:, :, 3].min(0), runs[:, :, 3].max(0)
            ax2.fill_between(t, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
    ax1.set_yscale("log")
    ax1.set_ylabel("training loss (full set)")
    ax2.axhline(res["target_acc"], color="gray", ls=":", lw=1, label="target: backprop - 1 pt")
    ax2.set_ylim(max(0.0, res["target_acc"] - 0.3), 1.0)
    ax2.set_ylabel("test accuracy")
    for ax in (ax1, ax2):
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlim(left=0.0)
        ax.set_xlabel("training wall-clock time (s)")
        ax.legend(fontsize=7)
    n = len(next(iter(by_seed.values())))
    over = "one seed" if n == 1 else f"mean over {n} seeds (band: the seeds' min to max)"
    fig.suptitle(f"{res['dataset']}, MLP, batch {res['batch']}, {over}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _num(value, fmt: str) -> str:
    return format(value, fmt) if math.isfinite(value) else "not reached"


def report(res, methods=METHODS):
    """A Markdown table of the results (± the standard deviation over seeds when several)."""
    lines = [
        f"{res['dataset']}: MLP {res['hidden']}-{res['hidden']}, batch {res['batch']}, "
        f"{res['steps']} steps, {res['seeds']} seed(s), local losses in {res['num_groups']} "
        f"groups; target = backprop's test accuracy - 1 pt = {res['target_acc']:.4f}\n",
        "| method | learning rate | test accuracy | steps to target | time to target (s) "
        "| time to target / backprop's | step cost / backprop's |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in methods:
        if f"lr_{m}" not in res:
            continue
        acc = f"{res[f'test_acc_{m}']:.4f}"
        if res["seeds"] > 1:
            acc += f" ± {res[f'test_acc_std_{m}']:.4f}"
        lines.append(
            f"| {LABELS[m]} | {res[f'lr_{m}']:g} | {acc} "
            f"| {_num(res[f'steps_to_target_{m}'], '.0f')} "
            f"| {_num(res[f'time_to_target_s_{m}'], '.3f')} "
            f"| {_num(res[f'time_ratio_{m}'], '.2f')} "
            f"| {res[f'step_cost_ratio_{m}']:.2f} |"
        )
    return "\n".join(lines)
