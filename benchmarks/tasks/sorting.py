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

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _sorting_data as sorting_data  # noqa: E402
from _common import digit_images, predict, write_json  # noqa: E402

import softops  # noqa: E402
from softops.losses import spearman_loss  # noqa: E402

CHANNELS = (8, 16)
HIDDEN = 64


def _uniform(key, shape, fan_in):
    bound = 1.0 / np.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def init(key, side: int):
    """The scorer's parameters (PyTorch's default initialization)."""
    keys = iter(jax.random.split(key, 8))
    params, c_in = {}, 1
    for i, c in enumerate(CHANNELS):
        fan = c_in * 9
        params[f"conv{i}"] = (
            _uniform(next(keys), (3, 3, c_in, c), fan),
            _uniform(next(keys), (c,), fan),
        )
        c_in = c
    flat = c_in * (side // 4) * (sorting_data.DIGITS * side // 4)
    for name, (a, b) in {"fc0": (flat, HIDDEN), "fc1": (HIDDEN, 1)}.items():
        params[name] = (_uniform(next(keys), (a, b), a), _uniform(next(keys), (b,), a))
    return params


def scores(params, x):
    """Scores ``[..., n]`` of number images ``[..., n, s, 4s]``."""
    lead = x.shape[:-2]
    h = x.reshape(-1, *x.shape[-2:], 1)
    for i in range(len(CHANNELS)):
        w, b = params[f"conv{i}"]
        h = jax.lax.conv_general_dilated(
            h, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        h = jax.nn.relu(h + b)
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    # flatten channels first, as PyTorch's NCHW view does
    h = jnp.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], -1)
    w, b = params["fc0"]
    h = jax.nn.relu(h @ w + b)
    w, b = params["fc1"]
    return (h @ w + b).reshape(lead)


def perm_bce(s, v):
    """Binary cross-entropy of softops' soft permutation matrix against the true one."""
    p = softops.soft_permutation(s)  # p[..., j, i]: weight of item i at sorted position j
    true = jax.nn.one_hot(jnp.argsort(v, axis=-1), v.shape[-1], dtype=p.dtype)
    tiny = 1e-7
    return -jnp.mean(true * jnp.log(p + tiny) + (1 - true) * jnp.log(1 - p + tiny))


def spearman(s, v):
    return jnp.mean(spearman_loss(s, v, target_regularization_strength=0))


LOSSES = {"perm_bce": perm_bce, "spearman": spearman}


def train_softops(loss_name, data, *, steps, lr, seed, evals):
    """Trains one scorer; ``[(step, exact, elementwise), ...]`` at the evaluation steps."""
    loss_fn = LOSSES[loss_name]
    side = data["train_images"].shape[-1]
    params = init(jax.random.key(seed), side)
    opt = optax.adam(lr)
    state = opt.init(params)

    @jax.jit
    def step(params, state, x, v):
        loss, g = jax.value_and_grad(lambda p: loss_fn(scores(p, x), v))(params)
        upd, state = opt.update(g, state, params)
        return optax.apply_updates(params, upd), state, loss

    test_x = sorting_data.numbers(data["test_images"], data["test_idx"])
    test_v = sorting_data.values(data["test_labels"], data["test_idx"])
    score_fn = jax.jit(scores)
    out = []
    for t in range(steps):
        idx = data["train_idx"][t]
        x = sorting_data.numbers(data["train_images"], idx)
        v = sorting_data.values(data["train_labels"], idx)
        params, state, _ = step(params, state, x, v)
        if t + 1 in evals:
            s = predict(score_fn, params, test_x)
            out.append((t + 1, *sorting_data.accuracies(s, test_v)))
    return out


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
    p.add_argument("--methods", nargs="+", default=[*LOSSES, "diffsort"])
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
            images = digit_images(a.mnist, seed)
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
                        curve = train_softops(m, data, **run)
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
