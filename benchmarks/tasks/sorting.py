"""Sorting supervision (NeuralSort's and diffsort's task at digits scale): softops against diffsort.

**Task.** A number is four digit images side by side, its value the four labels read as a
decimal number; a sequence is ``n`` numbers with distinct values. A scorer maps each number image
to one score; it is trained only from the *order* of the sequence (never from the values) and
tested on sequences made of held-out digit images: *exact match* is the share of test sequences
whose whole order the scores get right, *element-wise* the share of positions holding the right
number. Data: scikit-learn's 8x8 digits (1,797 images, a stratified 70/30 split per seed, so
each number is an 8x32 image), or a local MNIST ``.npz`` with ``--mnist`` (28x112 numbers).
Both trainers read the same generated ``.npz`` (``_sorting_data.py``): the same image pools,
training batches and test sequences per (n, seed).

**Scorer** (both frameworks alike): conv 3x3 (8) - ReLU - max-pool 2 - conv 3x3 (16) - ReLU -
max-pool 2 - dense 64 - ReLU - dense 1, PyTorch's default initialization (uniform, bound
1/sqrt(fan-in)); Adam at ``--lr``, ``--batch`` sequences per step, ``--steps`` steps.

**Losses.** softops: ``perm_bce``, the binary cross-entropy between
``softops.soft_permutation(scores)`` (an entropic-OT doubly-stochastic matrix, temperature 1 in
the units of the scores, which the scorer learns to scale) and the true permutation matrix, the
loss diffsort trains with; ``spearman``, ``softops.losses.spearman_loss(scores, values,
target_regularization_strength=0)`` at its default strength (soft ranks of the scores against
the hard ranks of the values). diffsort 0.2.0 (PyTorch, run by ``_sorting_torch.py`` in the
interpreter given with ``--torch-python``): ``DiffSortNet("odd_even", n, steepness)`` with its
other defaults, binary cross-entropy against the true permutation matrix, as in its
``experiments/main.py`` (whose defaults are steepness 10 and ``art_lambda`` 0.25).

Usage: ``python benchmarks/tasks/sorting.py [--quick] [--sizes 3 5 9 15] [--seeds 3]
[--steps N] [--torch-python PATH] [--json PATH]``. The recorded run is
``benchmarks/results/task_sorting.json``; ``scripts/update_tables.py`` pastes its table into
``docs/tasks.md``. NeuralSort's and diffsort's published numbers are on four-digit *MNIST*, a
different data set, with 100,000 steps: they are quoted in the docs as context, not compared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import write_json  # noqa: E402

from softops.showcase import sorting_data  # noqa: E402
from softops.showcase.data import digit_images  # noqa: E402
from softops.showcase.sorting_task import SORT_LOSSES, train_sorting  # noqa: E402


def train_diffsort(torch_python, path, *, n, steps, lr, seed, evals, steepness):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sorting_torch.py")
    cmd = [torch_python, script, path, "--steps", str(steps), "--lr", str(lr), "--seed", str(seed)]
    cmd += ["--steepness", str(steepness), "--evals", *map(str, sorted(evals))]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    got = json.loads(res.stdout.strip().splitlines()[-1])
    return [tuple(r) for r in got["evals"]], got["versions"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke run)")
    p.add_argument("--sizes", type=int, nargs="+", default=[3, 5, 9, 15])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=32, help="sequences per step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--num-test", type=int, default=1000, help="test sequences")
    p.add_argument("--steepness", type=float, default=10.0, help="diffsort's steepness")
    p.add_argument("--methods", nargs="+", default=[*SORT_LOSSES, "diffsort"])
    p.add_argument("--torch-python", default=os.environ.get("SOFTOPS_TORCH_PYTHON"))
    p.add_argument("--mnist", default=None, help="a local MNIST .npz instead of the digits")
    p.add_argument("--json", default=None, help="write the results there")
    a = p.parse_args()
    if a.quick:
        a.sizes, a.seeds, a.steps, a.num_test = [4], 1, 40, 200
    evals = {max(1, a.steps * i // 4) for i in range(1, 5)}
    methods = [m for m in a.methods if m != "diffsort" or a.torch_python]
    if "diffsort" in a.methods and not a.torch_python:
        print("diffsort: not run (give --torch-python, an interpreter with torch and diffsort)")
    rows, versions = [], {}
    print(f"{'n':>3} {'method':<10} {'seed':>4} {'exact':>7} {'elementwise':>11} {'s':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(a.seeds):
            images = digit_images(a.mnist, seed=seed)
            for n in a.sizes:
                path = os.path.join(tmp, f"n{n}_s{seed}.npz")
                kw = dict(n=n, seed=seed, steps=a.steps, batch=a.batch, num_test=a.num_test)
                data = sorting_data.make(path, images, **kw)
                for m in methods:
                    t0 = time.perf_counter()
                    run = dict(steps=a.steps, lr=a.lr, seed=seed, evals=evals)
                    if m == "diffsort":
                        curve, versions = train_diffsort(
                            a.torch_python, path, n=n, steepness=a.steepness, **run
                        )
                    else:
                        curve = train_sorting(m, data, **run)
                    secs = time.perf_counter() - t0
                    rows.append(dict(n=n, method=m, seed=seed, curve=curve, seconds=secs))
                    print(
                        f"{n:>3} {m:<10} {seed:>4} {curve[-1][1]:7.3f} {curve[-1][2]:11.3f}"
                        f" {secs:6.1f}"
                    )
    if a.json:
        data_name = "mnist" if a.mnist else "digits"
        skip = ("json", "torch_python", "mnist")
        write_json(a.json, a, dict(rows=rows), skip=skip, data=data_name, peers=versions)


if __name__ == "__main__":
    main()
