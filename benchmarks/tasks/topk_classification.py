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

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # the tasks' helpers, then benchmarks/
from _common import write_json  # noqa: E402
from bench_topk_losses import init_mlp, mlp  # noqa: E402  (the same MLP as that benchmark)

from softops.losses import soft_topk_mask_loss, soft_topk_rank_loss  # noqa: E402
from softops.showcase.data import load_data  # noqa: E402

LOSSES = {
    "cross_entropy": optax.softmax_cross_entropy_with_integer_labels,
    "rank_k1": soft_topk_rank_loss,
    "rank_k5": lambda z, y: soft_topk_rank_loss(z, y, k=5),
    "mask_k1": soft_topk_mask_loss,
    "mask_k5": lambda z, y: soft_topk_mask_loss(z, y, k=5),
    "mix_1_5": lambda z, y: (soft_topk_mask_loss(z, y) + soft_topk_mask_loss(z, y, k=5)) / 2,
}


def groups_data(seed: int, *, classes=100, group=5, dim=32, train=6000, test=4000, noise=0.2):
    """The generated ``groups`` task: float32 ``(x_train, y_train, x_test, y_test)``."""
    rng = np.random.default_rng(seed)
    unit = lambda m: (v := rng.normal(size=(m, dim))) / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    mu, nu = unit(classes // group), unit(classes)

    def sample(m):
        y = rng.integers(0, classes, m)
        x = 3 * mu[y // group] + 0.6 * nu[y] + rng.normal(size=(m, dim))
        return x.astype(np.float32), y.astype(np.int32)

    xtr, ytr = sample(train)
    flip = rng.random(train) < noise
    other = (ytr // group) * group + (ytr % group + rng.integers(1, group, train)) % group
    ytr = np.where(flip, other, ytr).astype(np.int32)
    return (xtr, ytr, *sample(test))


def _topk_acc(logits, y, k):
    top = lax.top_k(logits, k)[1]
    return float(jnp.mean(jnp.any(top == y[:, None], axis=-1)))


def train(loss, data, seed, *, steps, batch=64, lr=3e-3, hidden=128):
    """One model trained with ``LOSSES[loss]``: test top-1 and top-5 accuracy, largest logit."""
    xtr, ytr, xte, yte = (jnp.asarray(a) for a in data)
    classes = int(max(ytr.max(), yte.max())) + 1
    params = init_mlp(jax.random.key(seed), [xtr.shape[1], hidden, classes])
    opt = optax.adam(lr)
    rng = np.random.default_rng(seed)
    order = jnp.asarray(rng.integers(0, xtr.shape[0], (steps, batch)))
    per_example = LOSSES[loss]

    def step(carry, idx):
        p, s = carry
        g = jax.grad(lambda p: jnp.mean(per_example(mlp(p, xtr[idx]), ytr[idx])))(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.jit(lambda p, ids: lax.scan(step, (p, opt.init(p)), ids))(params, order)
    logits = mlp(params, xte)
    return {
        "top1": _topk_acc(logits, yte, 1),
        "top5": _topk_acc(logits, yte, 5),
        "max_abs_logit": float(jnp.abs(logits).max()),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="groups, one seed, 100 steps (CI smoke)")
    p.add_argument("--data", nargs="+", default=["digits", "groups"], choices=["digits", "groups"])
    p.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=3000)
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
                r = dict(data=name, loss=loss, seed=seed, **train(loss, data, seed, steps=a.steps))
                rows.append(r)
                print(
                    f"{name:<7} {loss:<14} {seed:>4} {r['top1']:6.3f} {r['top5']:6.3f}", flush=True
                )
    if a.json:
        seconds = round(time.perf_counter() - start)
        write_json(a.json, a, dict(rows=rows), skip=("json",), seconds=seconds)


if __name__ == "__main__":
    main()
