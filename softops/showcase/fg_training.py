"""Backprop and three kinds of forward gradients, trained side by side on one Flax nnx MLP.

Methods (same model, data, optimizer and step budget; only the gradient differs):

- ``backprop``: ``jax.value_and_grad``;
- ``fgd``: weight-perturbed forward gradients, ``forward_value_and_grad`` (Baydin et al. 2022);
- ``fgd_activity``: activity-perturbed forward gradients, ``activity_value_and_grad`` with the
  whole network as one block (per-example tangents on every hidden layer, exact output layer);
- ``fgd_local``: activity-perturbed forward gradients with local losses,
  ``local_value_and_grad``: every block (Dense, layer norm, ReLU) has its own head and loss, split
  in 16 groups of 8 units (Ren, Kornblith, Liao, Hinton, ICLR 2023, arXiv:2210.03310).

Model: MLP ``in-H-H-classes`` (two blocks). Optimizer: Adam with a cosine decay over the budget;
each method's learning rate is the one of its grid with the lowest final training loss (mean over
seeds). All runs train side by side, one chunk of steps each in turn (shuffled), so that changes in
machine load hit every method alike; only the compiled training steps are timed. Reported: test
accuracy, the wall-clock time and steps each method needs to reach backprop's final test accuracy
minus one point, and the per-step cost.

Used by ``python -m softops``, ``examples/forward_gradient_training.py`` and
``benchmarks/bench_local_losses.py``; plots and tables are in `softops.showcase.fg_report`.
"""

from __future__ import annotations

import random
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from softops.forward_grad import (
    activity_value_and_grad,
    forward_value_and_grad,
    local_value_and_grad,
    no_tap,
)
from softops.showcase.data import load_data
from softops.showcase.fg_report import LABELS as LABELS  # re-exported: a method's name
from softops.showcase.fg_report import METHODS, plot, plot_path

LRS = {
    "backprop": (0.003, 0.01, 0.03),
    "fgd": (0.001, 0.003, 0.01),
    "fgd_activity": (0.001, 0.002, 0.005),
    "fgd_local": (0.005, 0.01, 0.02),
}
#: The learning rate ``benchmarks/bench_local_losses.py`` picked from each grid above (digits,
#: 1,500 steps, 5 seeds; docs/forward_grad.md): what the showcase trains with.
TUNED_LRS = {"backprop": 0.03, "fgd": 0.01, "fgd_activity": 0.002, "fgd_local": 0.02}


# ---------------------------------------------------------------- the model (Flax nnx)


class Block(nnx.Module):
    """Dense, layer norm (no parameters), ReLU; with a ``head`` (Dense to the classes) if asked."""

    def __init__(self, n_in, n_out, n_classes, *, key, with_head):
        k_linear, k_head = jax.random.split(key)
        self.linear = nnx.Linear(n_in, n_out, rngs=nnx.Rngs(k_linear))
        self.head = nnx.Linear(n_out, n_classes, rngs=nnx.Rngs(k_head)) if with_head else None

    def __call__(self, x, tap=no_tap):
        """The block's output; ``tap`` marks the layer that learns (``no_tap`` just applies it)."""
        return tap(self.linear, x, norm=jax.nn.standardize, activation=jax.nn.relu)


class MLP(nnx.Module):
    """Blocks; the last one's head is the classifier. ``local_heads``: a head on every block."""

    def __init__(self, sizes, n_classes, *, seed, local_heads=False):
        keys = jax.random.split(jax.random.key(seed), len(sizes) - 1)
        last = len(sizes) - 2
        self.blocks = nnx.List(
            [
                Block(a, b, n_classes, key=k, with_head=local_heads or i == last)
                for i, (a, b, k) in enumerate(zip(sizes[:-1], sizes[1:], keys))
            ]
        )

    def features(self, x, tap=no_tap):
        """The last block's output (before the classifier head)."""
        for block in self.blocks:
            x = block(x, tap)
        return x

    def __call__(self, x):
        """Class logits."""
        return self.blocks[-1].head(self.features(x))


def xent(logits, labels):
    """Per-example softmax cross-entropy."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def setup(method, sizes, n_classes, *, seed, num_groups=16):
    """``(params, predict(params, x), grad_fn(key, params, x, y) -> (loss, grads))``."""
    model = MLP(sizes, n_classes, seed=seed, local_heads=method == "fgd_local")
    if method == "fgd_local":
        return _setup_local(model, num_groups)
    graphdef, state = nnx.split(model)

    def predict(params, x):
        return nnx.merge(graphdef, params)(x)

    def loss(params, x, y):
        return jnp.mean(xent(predict(params, x), y))

    if method == "backprop":
        return state, predict, lambda key, p, x, y: jax.value_and_grad(loss)(p, x, y)
    if method == "fgd":
        return state, predict, forward_value_and_grad(loss)
    if method != "fgd_activity":
        raise ValueError(f"unknown method {method!r}, expected one of {METHODS}")
    activity_grad = activity_value_and_grad(
        lambda p, x, tap: nnx.merge(graphdef, p).features(x, tap),  # the whole net is one block
        lambda p, h: nnx.merge(graphdef, p).blocks[-1].head(h),
        xent,
    )

    def grad_fn(key, params, x, y):
        (value, _), grads = activity_grad(key, params, x, y)
        return value, grads

    return state, predict, grad_fn


def _setup_local(model, num_groups):
    """``setup`` for ``fgd_local``: parameters, predictions and estimates block by block."""
    # The glue: one (graphdef, state) per block; a block is `block(x, tap)`, its head `head`.
    graphdefs, states = zip(*(nnx.split(block) for block in model.blocks))
    blocks = [lambda p, x, tap, g=g: nnx.merge(g, p)(x, tap) for g in graphdefs]
    heads = [lambda p, h, g=g: nnx.merge(g, p).head(h) for g in graphdefs]
    local_grads = local_value_and_grad(blocks, heads, xent, num_groups=num_groups)

    def grad_fn(key, params, x, y):
        values, grads = local_grads(key, params, x, y)
        return values[-1], grads  # the last block's loss is the model's loss

    def predict_chain(params, x):
        for g, p in zip(graphdefs, params):
            x = nnx.merge(g, p)(x)
        return nnx.merge(graphdefs[-1], params[-1]).head(x)

    return list(states), predict_chain, grad_fn


# ---------------------------------------------------------------- training, side by side


def compile_method(method, data, *, sizes, steps, chunk, batch, num_groups=16):
    """Compiled pieces of one method, shared by its runs (the learning rate is an argument)."""
    xtr, ytr, xte, yte = (jnp.asarray(a) for a in data)
    n_classes = int(max(data[1].max(), data[3].max())) + 1
    _, predict, grad_fn = setup(method, sizes, n_classes, seed=0, num_groups=num_groups)

    def optimizer(lr):
        return optax.adam(optax.cosine_decay_schedule(lr, steps))

    def step(carry, key, lr):
        params, state = carry
        k_batch, k_grad = jax.random.split(key)
        idx = jax.random.randint(k_batch, (batch,), 0, xtr.shape[0])
        value, grads = grad_fn(k_grad, params, xtr[idx], ytr[idx])
        updates, state = optimizer(lr).update(grads, state, params)
        return (optax.apply_updates(params, updates), state), value

    @jax.jit
    def run_chunk(params, state, key, lr):
        keys = jax.random.split(key, chunk)
        (params, state), _ = jax.lax.scan(lambda c, k: step(c, k, lr), (params, state), keys)
        return params, state

    @jax.jit
    def evaluate(params):
        train_loss = jnp.mean(xent(predict(params, xtr), ytr))
        acc = jnp.mean((jnp.argmax(predict(params, xte), -1) == yte).astype(jnp.float32))
        return train_loss, acc

    def init(seed):
        params = setup(method, sizes, n_classes, seed=seed, num_groups=num_groups)[0]
        return params, optimizer(1.0).init(params)

    return {"init": init, "run_chunk": run_chunk, "evaluate": evaluate, "grad_fn": grad_fn}


def train_side_by_side(compiled, runs, *, steps, chunk, progress=None, order_seed=0):
    """Trains ``runs`` [(method, lr, seed)] in turns, one chunk each; returns their curves.

    A curve is ``[(seconds of timed steps, step, train loss, test accuracy, chunk seconds)]``.
    """
    training = {}  # (method, lr, seed) -> its parameters, optimizer state, key and curve
    for trial in runs:
        method, lr, seed = trial
        c = compiled[method]
        params, opt_state = c["init"](seed)
        jax.block_until_ready(c["run_chunk"](params, opt_state, jax.random.key(0), lr))  # warm-up
        loss, acc = c["evaluate"](params)
        training[trial] = {
            "params": params,
            "opt": opt_state,
            "key": jax.random.key(1000 + seed),
            "curve": [(0.0, 0, float(loss), float(acc), 0.0)],
        }
    rng = random.Random(order_seed)
    order = list(runs)
    for i in range(steps // chunk):
        rng.shuffle(order)
        for trial in order:
            s, c = training[trial], compiled[trial[0]]
            s["key"], sub = jax.random.split(s["key"])
            t0 = time.perf_counter()
            s["params"], s["opt"] = jax.block_until_ready(
                c["run_chunk"](s["params"], s["opt"], sub, trial[1])
            )
            dt = time.perf_counter() - t0
            loss, acc = c["evaluate"](s["params"])
            s["curve"].append(
                (s["curve"][-1][0] + dt, (i + 1) * chunk, float(loss), float(acc), dt)
            )
        if progress is not None:
            progress.update(1)
    curves = {trial: training[trial]["curve"] for trial in runs}
    return curves, {trial: training[trial]["params"] for trial in runs}


def reach(curve, target):
    """``(seconds, steps)`` at the first evaluation with test accuracy >= target (inf, None)."""
    for t, step, _, acc, _ in curve:
        if acc >= target:
            return t, step
    return float("inf"), None


def summarize(curves, methods, lrs, seeds):
    """Chooses each method's learning rate and measures accuracy and time to the target."""
    best = {}
    for m in methods:
        final = {lr: np.mean([curves[(m, lr, s)][-1][2] for s in seeds]) for lr in lrs[m]}
        final = {lr: (v if np.isfinite(v) else np.inf) for lr, v in final.items()}
        best[m] = min(final, key=final.get)
    acc = {m: np.array([curves[(m, best[m], s)][-1][3] for s in seeds]) for m in methods}
    target = float(acc["backprop"].mean()) - 0.01
    res = {"target_acc": target}
    tb = [reach(curves[("backprop", best["backprop"], s)], target) for s in seeds]
    for m in methods:
        runs = [curves[(m, best[m], s)] for s in seeds]
        reached = [reach(c, target) for c in runs]
        t = float(np.median([r[0] for r in reached]))
        steps = [r[1] for r in reached]
        # Per-step cost: the chunk times of this method over backprop's, same seed and round.
        ratios = [
            a[4] / b[4]
            for c, s in zip(runs, seeds)
            for a, b in zip(c[1:], curves[("backprop", best["backprop"], s)][1:])
        ]
        res[f"lr_{m}"] = best[m]
        res[f"test_acc_{m}"] = float(acc[m].mean())
        res[f"test_acc_std_{m}"] = float(acc[m].std())
        res[f"final_loss_{m}"] = float(np.mean([c[-1][2] for c in runs]))
        res[f"time_to_target_s_{m}"] = t
        res[f"time_ratio_{m}"] = t / float(np.median([r[0] for r in tb]))
        res[f"steps_to_target_{m}"] = float(
            np.median([s if s is not None else np.inf for s in steps])
        )
        res[f"step_cost_ratio_{m}"] = float(np.median(ratios))
        # Per seed (same seed's backprop run): the spread behind the medians above.
        res[f"test_acc_values_{m}"] = [float(a) for a in acc[m]]
        res[f"time_ratio_values_{m}"] = [float(r[0] / b[0]) for r, b in zip(reached, tb)]
    return res


def run(
    *,
    quick=False,
    seeds=(0,),
    mnist=None,
    out=None,
    steps=None,
    chunk=None,
    batch=64,
    hidden=128,
    num_groups=16,
    methods=METHODS,
    lrs=None,
    progress=True,
):
    """Runs the comparison; returns a dict of results (see the module docstring).

    ``out``: a folder for the plot (``forward_grad_<dataset>.png``), a ``.png`` path, or ``None``
    to write nothing.
    """
    data = load_data(mnist)
    steps = steps or (200 if quick else 1500)
    chunk = chunk or (20 if quick else 10)
    lrs = dict(lrs or ({m: LRS[m][1:2] for m in METHODS} if quick else LRS))
    sizes = (data[0].shape[1], hidden, hidden)
    methods = tuple(m for m in METHODS if m in methods or m == "backprop")
    compiled = {
        m: compile_method(
            m, data, sizes=sizes, steps=steps, chunk=chunk, batch=batch, num_groups=num_groups
        )
        for m in methods
    }
    runs = [(m, lr, s) for m in methods for lr in lrs[m] for s in seeds]
    bar = tqdm(total=steps // chunk, desc="training side by side", disable=not progress)
    curves, _ = train_side_by_side(compiled, runs, steps=steps, chunk=chunk, progress=bar)
    bar.close()
    res = {
        "dataset": "mnist" if mnist is not None else "digits",
        "steps": steps,
        "batch": batch,
        "hidden": hidden,
        "num_groups": num_groups,
        "seeds": len(seeds),
    }
    res.update(summarize(curves, methods, lrs, seeds))
    res["curves"] = {m: curves[(m, res[f"lr_{m}"], seeds[0])] for m in methods}
    res["curves_by_seed"] = {m: [curves[(m, res[f"lr_{m}"], s)] for s in seeds] for m in methods}
    if out:
        res["plot"] = str(plot(res, methods, plot_path(out, res["dataset"])))
    return res
