"""Sorting supervision and the soft median at digits scale: the scorer and softops' trainers.

NeuralSort's and diffsort's tasks (the data: `softops.showcase.sorting_data`). A scorer maps each
number image (four digit images side by side) to one value:

- **sorting**: trained from the *order* of each training sequence alone; measured by exact
  match (the whole order right) and element-wise accuracy on sequences of held-out images;
- **median** (quantile regression): trained from the *median value* of each set alone (divided
  by 10,000); measured by the test MSE and R².

**Scorer** (ported alike to PyTorch by ``benchmarks/tasks/_sorting_torch.py``): conv 3x3 (8) -
ReLU - max-pool 2 - conv 3x3 (16) - ReLU - max-pool 2 - dense 64 - ReLU - dense 1, PyTorch's
default initialization (uniform, bound 1/sqrt(fan-in)). ``benchmarks/tasks/sorting.py`` and
``quantile.py`` run the recorded comparisons; the showcase runs them at quick sizes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import softops
from softops.losses import soft_median, spearman_loss
from softops.showcase import sorting_data

CHANNELS = (8, 16)
HIDDEN = 64
SCALE = 1e4  # the median task's targets: values / SCALE


def _uniform(key, shape, fan_in):
    bound = 1.0 / np.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def init(key, side: int) -> dict:
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


def scores(params: dict, x: jax.Array) -> jax.Array:
    """Scores ``[..., n]`` of number images ``[..., n, s, 4s]``."""
    lead = x.shape[:-2]
    h = x.reshape(-1, *x.shape[-2:], 1)
    for i in range(len(CHANNELS)):
        w, b = params[f"conv{i}"]
        h = jax.lax.conv_general_dilated(
            h, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        h = jax.nn.relu(h + b[None, None, None, :])  # explicit ranks: no rank promotion
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    # flatten channels first, as PyTorch's NCHW view does
    h = jnp.transpose(h, (0, 3, 1, 2)).reshape(h.shape[0], -1)
    w, b = params["fc0"]
    h = jax.nn.relu(h @ w + b[None, :])
    w, b = params["fc1"]
    return (h @ w + b[None, :]).reshape(lead)


def perm_bce(s: jax.Array, v: jax.Array) -> jax.Array:
    """Binary cross-entropy of softops' soft permutation matrix against the true one."""
    p = softops.soft_permutation(s)  # p[..., j, i]: weight of item i at sorted position j
    true = jax.nn.one_hot(jnp.argsort(v, axis=-1), v.shape[-1], dtype=p.dtype)
    tiny = 1e-7
    return -jnp.mean(true * jnp.log(p + tiny) + (1 - true) * jnp.log(1 - p + tiny))


def spearman(s: jax.Array, v: jax.Array) -> jax.Array:
    """``spearman_loss`` at its default strength against the hard ranks of the values."""
    return jnp.mean(spearman_loss(s, v, target_regularization_strength=0))


SORT_LOSSES = {"perm_bce": perm_bce, "spearman": spearman}

# name -> (the set's predicted median from its numbers' values [..., n], the training loss)
MEDIANS = {
    "soft_median": (soft_median, "squared"),
    "soft_median_10": (lambda v: soft_median(v, regularization_strength=10.0), "squared"),
    "hard_median": (lambda v: jnp.median(v, axis=-1), "squared"),
    "pinball": (lambda v: jnp.median(v, axis=-1), "pinball"),
    "set_mean": (lambda v: jnp.mean(v, axis=-1), "squared"),
}


def predict(fn, params, x: np.ndarray, chunks: int = 4) -> np.ndarray:
    """``fn(params, x)`` over ``x``'s leading axis in ``chunks`` pieces (bounded memory)."""
    return np.concatenate([np.asarray(fn(params, c)) for c in np.array_split(x, chunks)])


def _fit(loss_fn, target, data: dict, *, steps: int, lr: float, seed: int, on_eval=None):
    """Adam on ``loss_fn(params, x, target(labels, idx))`` over the data's training batches.

    ``on_eval(step, params)`` runs after each step (the callers evaluate at some steps).
    """
    params = init(jax.random.key(seed), data["train_images"].shape[-1])
    opt = optax.adam(lr)
    state = opt.init(params)

    @jax.jit
    def step(p, s, x, y):
        g = jax.grad(loss_fn)(p, x, y)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    for t in range(steps):
        idx = data["train_idx"][t]
        x = sorting_data.numbers(data["train_images"], idx)
        params, state = step(params, state, x, target(data["train_labels"], idx))
        if on_eval is not None:
            on_eval(t + 1, params)
    return params


def train_sorting(loss: str, data: dict, *, steps: int, lr: float, seed: int, evals) -> list:
    """Trains one scorer with ``SORT_LOSSES[loss]``; ``[(step, exact, elementwise), ...]``."""
    loss_fn = SORT_LOSSES[loss]
    test_x = sorting_data.numbers(data["test_images"], data["test_idx"])
    test_v = sorting_data.values(data["test_labels"], data["test_idx"])
    score_fn = jax.jit(scores)
    out: list = []

    def on_eval(t, params):
        if t in evals:
            out.append((t, *sorting_data.accuracies(predict(score_fn, params, test_x), test_v)))

    _fit(
        lambda p, x, v: loss_fn(scores(p, x), v),
        sorting_data.values,
        data,
        steps=steps,
        lr=lr,
        seed=seed,
        on_eval=on_eval,
    )
    return out


def _median(labels, idx):
    return np.median(sorting_data.values(labels, idx), axis=-1) / SCALE


def train_median(model: str, data: dict, *, steps: int, lr: float, seed: int):
    """``(test MSE, test R²)`` of one model trained on the medians of the training sets."""
    median_of, kind = MEDIANS[model]

    def loss_fn(p, x, m):
        err = median_of(scores(p, x)) - m
        return jnp.mean(err**2 if kind == "squared" else jnp.abs(err))

    params = _fit(loss_fn, _median, data, steps=steps, lr=lr, seed=seed)
    test_x = sorting_data.numbers(data["test_images"], data["test_idx"])
    test_m = _median(data["test_labels"], data["test_idx"])
    pred = predict(jax.jit(lambda p, x: median_of(scores(p, x))), params, test_x)
    mse = float(np.mean((pred - test_m) ** 2))
    return mse, 1.0 - mse / float(np.var(test_m))
