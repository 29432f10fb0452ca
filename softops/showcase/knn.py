"""Differentiable kNN trained end-to-end through ``soft_topk_mask`` (Xie et al., 2020, Sec. 5).

A small Flax (nnx) network embeds images; for each query in a batch, the soft top-k mask over a
random pool of labelled training images (``largest=False`` on the embedding distances) selects the
k nearest neighbours smoothly, and the loss is minus the mass the mask puts on neighbours of the
query's class. After training, a hard kNN on the learned embedding is compared with a kNN on the
raw pixels and with a network of the same body trained with cross-entropy.

Used by ``python -m softops`` and ``examples/knn_digits.py``.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from softops.showcase.data import load_data
from softops.topk_ot import soft_topk_mask


class Body(nnx.Module):
    """The shared body: a two-layer MLP giving a ``dim``-dimensional embedding."""

    def __init__(self, d_in: int, dim: int, hidden: int, *, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(d_in, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, dim, rngs=rngs)

    def __call__(self, x):
        """The embedding of ``x`` (``[batch, d_in] -> [batch, dim]``)."""
        return self.l2(jax.nn.relu(self.l1(x)))


class Classifier(nnx.Module):
    """The same body plus a linear head, for the cross-entropy baseline."""

    def __init__(self, d_in: int, dim: int, hidden: int, n_classes: int, *, rngs: nnx.Rngs):
        self.body = Body(d_in, dim, hidden, rngs=rngs)
        self.head = nnx.Linear(dim, n_classes, rngs=rngs)

    def __call__(self, x):
        """Class logits of ``x``."""
        return self.head(jax.nn.relu(self.body(x)))


def embed(model, x):
    """Unit-norm embedding (distances then lie in [0, 2], a fixed scale for epsilon)."""
    e = model(x)
    return e / jnp.sqrt(jnp.sum(e * e, axis=-1, keepdims=True) + 1e-12)


def soft_knn_loss(model, xq, yq, xp, yp, k: int, epsilon: float):
    """Minus the soft-kNN mass on same-class neighbours, averaged over queries."""
    eq, ep = embed(model, xq), embed(model, xp)
    dist = jnp.sqrt(jnp.maximum(jnp.sum((eq[:, None, :] - ep[None, :, :]) ** 2, -1), 1e-12))
    mask = soft_topk_mask(dist, k, largest=False, epsilon=epsilon)
    same = (yq[:, None] == yp[None, :]).astype(mask.dtype)
    return -jnp.mean(jnp.sum(mask * same, axis=-1)) / k


def knn_accuracy(train_feats, ytr, test_feats, yte, k: int) -> float:
    """Test accuracy of scikit-learn's hard kNN on the given features."""
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=k).fit(np.asarray(train_feats), ytr)
    return float(knn.score(np.asarray(test_feats), yte))


def run(
    *,
    quick: bool = False,
    seed: int = 0,
    mnist: str | None = None,
    steps: int | None = None,
    k: int = 5,
    epsilon: float = 0.01,
    batch: int = 64,
    pool: int = 256,
    dim: int = 32,
    hidden: int = 128,
    lr: float = 3e-3,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains the soft-kNN embedding and the cross-entropy baseline; returns test accuracies."""
    t0 = time.perf_counter()
    steps = steps if steps is not None else (30 if quick else 600)
    max_train = 2000 if quick and mnist else (20000 if mnist else None)
    xtr, ytr, xte, yte = load_data(mnist, seed=seed, test_size=0.3, max_train=max_train)
    if quick:
        xte, yte = xte[:300], yte[:300]
    n_classes = int(max(ytr.max(), yte.max()) + 1)
    rng = np.random.default_rng(seed)

    model = Body(xtr.shape[1], dim, hidden, rngs=nnx.Rngs(seed))
    opt = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)

    @nnx.jit
    def knn_step(model, opt, xq, yq, xp, yp):
        loss, grads = nnx.value_and_grad(soft_knn_loss)(model, xq, yq, xp, yp, k, epsilon)
        opt.update(model, grads)
        return loss

    clf = Classifier(xtr.shape[1], dim, hidden, n_classes, rngs=nnx.Rngs(seed))
    clf_opt = nnx.Optimizer(clf, optax.adam(lr), wrt=nnx.Param)

    @nnx.jit
    def ce_step(model, opt, x, y):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    losses = []
    for _ in tqdm(range(steps), desc="soft-kNN + CE", disable=not progress):
        q = rng.choice(len(xtr), batch, replace=False)
        p = rng.choice(len(xtr), pool, replace=False)
        losses.append(float(knn_step(model, opt, xtr[q], ytr[q], xtr[p], ytr[p])))
        ce_step(clf, clf_opt, xtr[q], ytr[q])

    emb_tr, emb_te = embed(model, jnp.asarray(xtr)), embed(model, jnp.asarray(xte))
    ce_acc = float(np.mean(np.asarray(jnp.argmax(clf(jnp.asarray(xte)), -1)) == yte))
    return {
        "dataset": "mnist" if mnist else "digits",
        "n_train": int(len(xtr)),
        "n_test": int(len(xte)),
        "steps": steps,
        "k": k,
        "knn_pixels": knn_accuracy(xtr, ytr, xte, yte, k),
        "knn_soft_topk_embedding": knn_accuracy(emb_tr, ytr, emb_te, yte, k),
        "cross_entropy": ce_acc,
        "loss_first": losses[0] if losses else float("nan"),
        "loss_last": float(np.mean(losses[-10:])) if losses else float("nan"),
        "seconds": time.perf_counter() - t0,
    }


METRICS = {
    "knn_pixels": "hard kNN on the raw pixels",
    "knn_soft_topk_embedding": "hard kNN on the embedding trained through soft top-k",
    "cross_entropy": "cross-entropy network, same body",
}


def run_seeds(seeds, **kwargs) -> dict[str, Any]:
    """`run` for each seed; per metric the values, their mean and standard deviation."""
    runs = [run(seed=s, **kwargs) for s in seeds]
    out: dict[str, Any] = {k: runs[0][k] for k in ("dataset", "n_train", "n_test", "steps", "k")}
    out["seeds"] = list(seeds)
    out["seconds"] = [r["seconds"] for r in runs]
    for key in METRICS:
        values = [r[key] for r in runs]
        out[key] = {"values": values, "mean": float(np.mean(values)), "std": float(np.std(values))}
    return out
