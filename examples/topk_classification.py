"""Top-k classification on scikit-learn's digits: soft-rank and soft-top-k losses vs cross-entropy.

Three identical MLPs (``flax.nnx``) are trained with Adam on the 8x8 digits (nothing is
downloaded), one per loss:

- cross-entropy (``optax.softmax_cross_entropy_with_integer_labels``);
- ``softops.losses.soft_topk_rank_loss`` (Blondel et al., 2020, Sec. 6: logistic squash, soft
  descending rank of the true class, hinge at k);
- ``softops.losses.soft_topk_mask_loss`` (``-log`` of the optimal-transport soft top-k mask
  on the true class, Xie et al., 2020).

Reported: test top-1 and top-k accuracy of each.

    python examples/topk_classification.py            # ~30 s on a CPU
    python examples/topk_classification.py --quick    # a few seconds
    python examples/topk_classification.py --out DIR  # also writes results.json and report.txt
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _report import write_outputs
from flax import nnx
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from softops.losses import soft_topk_mask_loss, soft_topk_rank_loss


def load_data(*, seed: int = 0):
    """Returns float32 (x_train, y_train, x_test, y_test) with pixels in [0, 1]."""
    digits = load_digits()
    x = digits.data.astype(np.float32) / 16.0
    xtr, xte, ytr, yte = train_test_split(
        x, digits.target, test_size=0.3, random_state=seed, stratify=digits.target
    )
    return xtr, ytr.astype(np.int32), xte, yte.astype(np.int32)


class MLP(nnx.Module):
    """A two-layer MLP giving class logits."""

    def __init__(self, d_in: int, hidden: int, n_classes: int, *, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(d_in, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, n_classes, rngs=rngs)

    def __call__(self, x):
        return self.l2(jax.nn.relu(self.l1(x)))


def topk_accuracy(logits, labels, k: int) -> float:
    """Fraction of examples whose label is among the k largest logits."""
    top = np.argsort(-np.asarray(logits), axis=-1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=-1)))


def run(
    *,
    quick: bool = False,
    seed: int = 0,
    k: int = 1,
    report_k: int = 3,
    steps: int | None = None,
    batch: int = 64,
    hidden: int = 64,
    lr: float = 3e-3,
    strength: float = 0.1,
    mask_epsilon: float = 0.01,
) -> dict:
    """Trains the three models; returns top-1 and top-``report_k`` test accuracies."""
    t0 = time.perf_counter()
    steps = steps if steps is not None else (100 if quick else 1500)
    xtr, ytr, xte, yte = load_data(seed=seed)
    n_classes = 10

    losses = {
        "cross_entropy": lambda z, y: optax.softmax_cross_entropy_with_integer_labels(z, y),
        "soft_rank": lambda z, y: soft_topk_rank_loss(z, y, k=k, regularization_strength=strength),
        "soft_topk_mask": lambda z, y: soft_topk_mask_loss(z, y, k=k, epsilon=mask_epsilon),
    }
    res = {"n_train": len(xtr), "n_test": len(xte), "steps": steps, "k": k, "report_k": report_k}
    for name, per_example in losses.items():
        model = MLP(xtr.shape[1], hidden, n_classes, rngs=nnx.Rngs(seed))
        opt = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)

        @nnx.jit
        def step(model, opt, x, y, per_example=per_example):
            loss, grads = nnx.value_and_grad(lambda m: jnp.mean(per_example(m(x), y)))(model)
            opt.update(model, grads)
            return loss

        rng = np.random.default_rng(seed)
        first = None
        for _ in range(steps):
            idx = rng.choice(len(xtr), batch, replace=False)
            loss = float(step(model, opt, xtr[idx], ytr[idx]))
            first = loss if first is None else first
        logits = model(jnp.asarray(xte))
        res[f"{name}_top1"] = topk_accuracy(logits, yte, 1)
        res[f"{name}_top{report_k}"] = topk_accuracy(logits, yte, report_k)
        res[f"{name}_loss_first"] = first
        res[f"{name}_loss_last"] = loss
    res["seconds"] = time.perf_counter() - t0
    return res


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=1, help="the k the soft losses train for")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--strength", type=float, default=0.1)
    parser.add_argument("--out", default=None, help="folder for results.json and report.txt")
    args = parser.parse_args(argv)
    res = run(quick=args.quick, seed=args.seed, k=args.k, steps=args.steps, strength=args.strength)
    rk = res["report_k"]
    lines = [
        f"digits: {res['n_train']} train / {res['n_test']} test, {res['steps']} steps, "
        f"k={res['k']}, {res['seconds']:.1f} s",
        f"  {'loss':18s}{'top-1':>8s}{f'top-{rk}':>8s}",
    ]
    for name in ("cross_entropy", "soft_rank", "soft_topk_mask"):
        lines.append(f"  {name:18s}{res[f'{name}_top1']:8.4f}{res[f'{name}_top{rk}']:8.4f}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    write_outputs(args.out, res, text)


if __name__ == "__main__":
    main()
