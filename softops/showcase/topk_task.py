"""Top-k classification: cross-entropy against softops' top-k losses, each at its defaults.

**Data.** ``digits``: scikit-learn's 8x8 digits (10 classes, a stratified 70/30 split per seed).
``groups`` (`groups_data`): a generated task where top-5 is the natural target, as on CIFAR-100:
100 classes in 20 groups of 5; an example of class ``c`` in group ``g`` is
``x = 3 mu_g + 0.6 nu_c + z`` in R^32 (``mu``, ``nu`` random unit directions, ``z`` standard
normal), so the group is far easier to tell than the class within it; 20 % of the *training*
labels are replaced by another class of the same group (label noise), the test labels are clean.

**Model and training** (every loss alike): an MLP with one hidden layer of 128 (ReLU), Adam
3e-3, batches of 64, the same initialization and batches for every loss. ``mix_1_5`` is the
mix of top-1 and top-5 objectives weighted by P_K = (1/2, 1/2), as in Petersen et al.,
"Differentiable Top-k Classification Learning" (ICML 2022), built from the mask loss.
``benchmarks/tasks/topk_classification.py`` runs the recorded comparison.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from softops.losses import soft_topk_mask_loss, soft_topk_rank_loss


def _rank(k: int):
    return lambda z, y, **kw: soft_topk_rank_loss(z, y, k=k, **kw)


def _mask(k: int):
    return lambda z, y, **kw: soft_topk_mask_loss(z, y, k=k, **kw)


def _mix(z, y, **kw):
    return (soft_topk_mask_loss(z, y, **kw) + soft_topk_mask_loss(z, y, k=5, **kw)) / 2


# name -> (per-example loss(logits, labels, **strength), the strength's keyword or None)
LOSSES = {
    "cross_entropy": (optax.softmax_cross_entropy_with_integer_labels, None),
    "rank_k1": (_rank(1), "regularization_strength"),
    "rank_k5": (_rank(5), "regularization_strength"),
    "mask_k1": (_mask(1), "epsilon"),
    "mask_k5": (_mask(5), "epsilon"),
    "mix_1_5": (_mix, "epsilon"),
}
GRID = (0.01, 0.03, 0.1, 0.3)  # the strengths `tuned` tries (both defaults are 0.1)


def init_mlp(key, sizes) -> list:
    """Dense layers ``sizes[0] -> ... -> sizes[-1]``: uniform weights (bound 1/sqrt(fan-in))."""
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        lim = 1 / np.sqrt(a)
        params.append((jax.random.uniform(sub, (a, b), minval=-lim, maxval=lim), jnp.zeros(b)))
    return params


def mlp(params: list, x: jax.Array) -> jax.Array:
    """The MLP's logits (ReLU between layers)."""
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b[None, :])  # explicit ranks: no rank promotion
    w, b = params[-1]
    return x @ w + b[None, :]


def groups_data(seed: int, *, classes=100, group=5, dim=32, train=6000, test=4000, noise=0.2):
    """The generated ``groups`` task: float32 ``(x_train, y_train, x_test, y_test)``."""
    rng = np.random.default_rng(seed)

    def unit(m):
        v = rng.normal(size=(m, dim))
        return v / np.linalg.norm(v, axis=1, keepdims=True)

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


def topk_accuracy(logits, y, k: int) -> float:
    """The share of rows whose label is among the ``k`` largest logits."""
    top = lax.top_k(logits, k)[1]
    return float(jnp.mean(jnp.any(top == y[:, None], axis=-1)))


def train(
    loss: str, data, seed: int, *, steps: int, strength=None, batch=64, lr=3e-3, hidden=128
) -> dict:
    """One model trained with ``LOSSES[loss]`` (at ``strength``, or its defaults).

    Returns its test top-1 and top-5 accuracy and largest logit.
    """
    xtr, ytr, xte, yte = (jnp.asarray(a) for a in data)
    classes = int(max(ytr.max(), yte.max())) + 1
    params = init_mlp(jax.random.key(seed), [xtr.shape[1], hidden, classes])
    opt = optax.adam(lr)
    rng = np.random.default_rng(seed)
    order = jnp.asarray(rng.integers(0, xtr.shape[0], (steps, batch)))
    fn, keyword = LOSSES[loss]
    kw = {} if strength is None or keyword is None else {keyword: strength}
    per_example = lambda z, y: fn(z, y, **kw)  # noqa: E731

    def step(carry, idx):
        p, s = carry
        g = jax.grad(lambda p: jnp.mean(per_example(mlp(p, xtr[idx]), ytr[idx])))(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.jit(lambda p, ids: lax.scan(step, (p, opt.init(p)), ids))(params, order)
    logits = mlp(params, xte)
    return {
        "top1": topk_accuracy(logits, yte, 1),
        "top5": topk_accuracy(logits, yte, 5),
        "max_abs_logit": float(jnp.abs(logits).max()),
    }


def tuned(loss: str, data, seed: int, *, steps: int, metric: str, grid=GRID) -> dict:
    """The loss at the strength of ``grid`` whose model scores best on a validation split.

    A fifth of the training examples (drawn with ``seed``) is held out for validation; every
    strength trains on the rest; the chosen model's test accuracies are returned, with the
    strength (``metric``: ``"top1"`` or ``"top5"``, the validation score that chooses).
    """
    xtr, ytr, xte, yte = data
    order = np.random.default_rng([seed, 1]).permutation(len(xtr))
    val, fit = order[: len(xtr) // 5], order[len(xtr) // 5 :]
    candidates = grid if LOSSES[loss][1] is not None else (None,)
    held_out = (xtr[fit], ytr[fit], xtr[val], ytr[val])
    scores = [train(loss, held_out, seed, steps=steps, strength=s)[metric] for s in candidates]
    i = max(range(len(candidates)), key=scores.__getitem__)  # the first best on a tie
    test = train(loss, (xtr[fit], ytr[fit], xte, yte), seed, steps=steps, strength=candidates[i])
    return {**test, "strength": candidates[i], "val": scores[i]}
