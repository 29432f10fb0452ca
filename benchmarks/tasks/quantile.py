"""Quantile regression through a soft quantile (NeuralSort's median task at digits scale).

**Task.** A set of ``n`` four-digit numbers (the images of ``sorting.py``); the target is the
**median value** of the set, divided by 10,000; the numbers' own values are never shown. A model
that predicts the median must learn to read every number and to pick the middle one. Tested on
sets of held-out digit images: mean squared error and R² (one minus the MSE over the variance of
the test medians).

**Models** (the scorer of ``sorting.py``, its output a value per number ``v_i``):

- ``soft_median``: ``softops.losses.soft_median(v)`` at its defaults (the soft 1/2-quantile of
  the set, L2, strength 1), trained with the squared error;
- ``soft_median_10``: the same at strength 10. The L2 soft sort pools sorted neighbours whose gap
  exceeds about 1/strength (``soft_quantile``'s docstring), so with targets in [0, 1] strength 1
  pools almost nothing and 10 pools neighbours of a set, sending a gradient to several numbers;
- ``hard_median``: ``jnp.median(v)``, the same squared error: its gradient reaches the middle
  number(s) only, so the others learn only when they are the median;
- ``pinball``: ``jnp.median(v)`` trained with the pinball (quantile) loss at 1/2, i.e. the
  absolute error: the loss a conditional-quantile model is trained with;
- ``set_mean``: a baseline that cannot sort, ``mean(v)``, the squared error (its best is the
  mean of the set).

Usage: ``python benchmarks/tasks/quantile.py [--quick] [--sizes 5 9 15] [--seeds 3]
[--steps N] [--json PATH]``; the recorded run is ``benchmarks/results/task_quantile.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import write_json  # noqa: E402

from softops.showcase import sorting_data  # noqa: E402
from softops.showcase.data import digit_images  # noqa: E402
from softops.showcase.sorting_task import MEDIANS, train_median  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke run)")
    p.add_argument("--sizes", type=int, nargs="+", default=[5, 9, 15])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32, help="sets per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--num-test", type=int, default=1000, help="test sets")
    p.add_argument("--models", nargs="+", default=list(MEDIANS), choices=list(MEDIANS))
    p.add_argument("--mnist", default=None, help="a local MNIST .npz instead of the digits")
    p.add_argument("--json", default=None, help="write the results there")
    a = p.parse_args()
    if a.quick:
        a.sizes, a.seeds, a.steps, a.num_test = [5], 1, 30, 200
        a.models = ["soft_median", "pinball"]
    rows = []
    print(f"{'n':>3} {'model':<12} {'seed':>4} {'mse':>9} {'r2':>7} {'s':>6}")
    for seed in range(a.seeds):
        images = digit_images(a.mnist, seed=seed)
        for n in a.sizes:
            kw = dict(n=n, seed=seed, steps=a.steps, batch=a.batch, num_test=a.num_test)
            data = sorting_data.make(None, images, **kw)
            for m in a.models:
                t0 = time.perf_counter()
                mse, r2 = train_median(m, data, steps=a.steps, lr=a.lr, seed=seed)
                secs = time.perf_counter() - t0
                rows.append(dict(n=n, model=m, seed=seed, mse=mse, r2=r2, seconds=secs))
                print(f"{n:>3} {m:<12} {seed:>4} {mse:9.5f} {r2:7.3f} {secs:6.1f}", flush=True)
    if a.json:
        write_json(a.json, a, dict(rows=rows), data="mnist" if a.mnist else "digits")


if __name__ == "__main__":
    main()
