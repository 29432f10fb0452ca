"""kNN through SOFT top-k (Xie et al., 2020): a trained embedding, pixel kNN, a classifier.

Runs the showcase's experiment (``softops.showcase.knn``: an MLP embedding trained by the soft
top-k mask over a random pool of labelled images, then a hard kNN on the embedding; a pixel kNN;
the same body trained with cross-entropy) over several seeds and at several training lengths,
and records every seed's accuracies.

Usage: ``python benchmarks/tasks/knn.py [--quick] [--seeds 3] [--steps 600 2000]
[--mnist PATH] [--json PATH]``; the recorded run is ``benchmarks/results/task_knn.json``
(table in ``docs/tasks.md`` by ``scripts/update_tables.py``).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import write_json  # noqa: E402

from softops.showcase import knn  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one seed, 30 steps (CI smoke run)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, nargs="+", default=[600, 2000])
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--epsilon", type=float, default=0.01)
    p.add_argument("--mnist", default=None, help="a local MNIST .npz instead of the digits")
    p.add_argument("--json", default=None, help="write the results there")
    a = p.parse_args()
    seeds = range(1 if a.quick else a.seeds)
    runs = []
    for steps in [30] if a.quick else a.steps:
        res = knn.run_seeds(
            seeds,
            quick=a.quick,
            steps=steps,
            k=a.k,
            epsilon=a.epsilon,
            mnist=a.mnist,
            progress=False,
        )
        runs.append(res)
        print(
            f"steps {steps}: " + ", ".join(f"{m} {res[m]['mean']:.4f}" for m in knn.METRICS),
            flush=True,
        )
    if a.json:
        write_json(a.json, a, dict(runs=runs))


if __name__ == "__main__":
    main()
