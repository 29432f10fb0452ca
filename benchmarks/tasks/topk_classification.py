"""Top-k classification: cross-entropy against softops' top-k losses, at their defaults.

**Data.** ``digits``: scikit-learn's 8x8 digits (10 classes, a stratified 70/30 split per seed).
``groups``: a generated task where top-5 is the natural target, as on CIFAR-100: 100 classes in
20 groups of 5; an example of class ``c`` in group ``g`` is ``x = 3 mu_g + 0.6 nu_c + z`` in
R^32 (``mu``, ``nu`` random unit directions, ``z`` standard normal), so the group is far
easier to tell than the class within it; 20 % of the *training* labels are replaced by another
class of the same group (label noise), the test labels are clean. 6,000 training and 4,000 test
examples per seed.

**Model and training** (every loss alike): an MLP with one hidden layer of 128 (ReLU), Adam 3e-3,
batches of 64, ``--steps`` steps, the same initialization and batches for every loss.

**Losses**: ``cross_entropy``; ``rank_k1``/``rank_k5``: ``soft_topk_rank_loss(k=1 | 5)`` at its
defaults; ``mask_k1``/``mask_k5``: ``soft_topk_mask_loss(k=1 | 5)`` at its defaults; ``mix_1_5``:
the mix of top-1 and top-5 objectives weighted by P_K = (1/2 at k = 1, 1/2 at k = 5), as in
Petersen et al., "Differentiable Top-k Classification Learning" (ICML 2022), built from the mask
loss: ``(mask_loss(k=1) + mask_loss(k=5)) / 2``. Measured: test top-1 and top-5 accuracy, mean
and spread (min to max) over ``--seeds`` seeds.

Usage: ``python benchmarks/tasks/topk_classification.py [--quick] [--data digits groups]
[--seeds 3] [--steps N] [--json PATH]``; the recorded run is
``benchmarks/results/task_topk.json`` (tables in ``docs/tasks.md`` by ``scripts/update_tables.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import write_json  # noqa: E402

from softops.showcase.data import load_data  # noqa: E402
from softops.showcase.topk_task import GRID, LOSSES, groups_data, train, tuned  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="groups, one seed, 100 steps (CI smoke)")
    p.add_argument("--data", nargs="+", default=["digits", "groups"], choices=["digits", "groups"])
    p.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument(
        "--tuned",
        action="store_true",
        help=f"each loss at the strength of {GRID} that scores best on a validation split "
        "(top-1 on digits, top-5 on groups) instead of its defaults",
    )
    p.add_argument("--json", default=None, help="write the results there")
    a = p.parse_args()
    if a.quick:
        a.data, a.seeds, a.steps = ["groups"], 1, 100
    rows, start = [], time.perf_counter()
    print(f"{'data':<7} {'loss':<14} {'seed':>4} {'top1':>6} {'top5':>6}")
    for name in a.data:
        for seed in range(a.seeds):
            if name == "digits":
                data = load_data(seed=seed, test_size=0.3)
            else:
                data = groups_data(seed)
            for loss in a.losses:
                if a.tuned:
                    metric = "top1" if name == "digits" else "top5"
                    got = tuned(loss, data, seed, steps=a.steps, metric=metric)
                else:
                    got = train(loss, data, seed, steps=a.steps)
                r = dict(data=name, loss=loss, seed=seed, **got)
                rows.append(r)
                print(
                    f"{name:<7} {loss:<14} {seed:>4} {r['top1']:6.3f} {r['top5']:6.3f}", flush=True
                )
    if a.json:
        seconds = round(time.perf_counter() - start)
        write_json(a.json, a, dict(rows=rows), skip=("json",), seconds=seconds)


if __name__ == "__main__":
    main()
