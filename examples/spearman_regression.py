"""Regression for ranking: a Flax model trained on the soft Spearman loss vs on MSE.

Synthetic data where MSE is misled: heavy-tailed features, a latent score ``z = w . x``, and
targets ``y = exp(2 z)`` (a monotone transform, very skewed) with a few percent of the training
targets multiplied by 50 (gross outliers). Only the order of the targets matters to the metric, the
Spearman correlation on clean test data. Two identical MLPs (``flax.nnx``) are trained with Adam:
one on MSE (on the raw targets), one on ``softops.losses.spearman_loss``, applied per
mini-batch (the batch is the list being ranked; targets are hard-ranked).

    python examples/spearman_regression.py            # ~20 s on a CPU
    python examples/spearman_regression.py --quick    # a few seconds
    python examples/spearman_regression.py --out DIR  # also writes results.json and report.txt
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
from scipy.stats import spearmanr

from softops.losses import spearman_loss


def make_data(*, n_train: int, n_test: int, d: int, corrupt: float, seed: int):
    """Returns float32 (x_train, y_train, x_test, y_test); test targets are clean."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(d) / np.sqrt(d)

    def sample(m):
        x = rng.standard_t(3.0, size=(m, d))
        z = x @ w + 0.3 * np.tanh(x[:, 0] * x[:, 1])
        return x.astype(np.float32), np.exp(2.0 * z).astype(np.float32)

    xtr, ytr = sample(n_train)
    xte, yte = sample(n_test)
    bad = rng.choice(n_train, int(round(corrupt * n_train)), replace=False)
    ytr[bad] *= 50.0
    return xtr, ytr, xte, yte


class MLP(nnx.Module):
    """A two-layer MLP with a scalar output."""

    def __init__(self, d_in: int, hidden: int, *, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(d_in, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, 1, rngs=rngs)

    def __call__(self, x):
        return self.l2(jax.nn.gelu(self.l1(x)))[..., 0]


def _train(loss_fn, xtr, ytr, *, steps, batch, hidden, lr, seed):
    model = MLP(xtr.shape[1], hidden, rngs=nnx.Rngs(seed))
    opt = nnx.Optimizer(model, optax.adam(lr), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, x, y):
        loss, grads = nnx.value_and_grad(lambda m: loss_fn(m(x), y))(model)
        opt.update(model, grads)
        return loss

    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        idx = rng.choice(len(xtr), batch, replace=False)
        losses.append(float(step(model, opt, xtr[idx], ytr[idx])))
    return model, losses


def run(
    *,
    quick: bool = False,
    seed: int = 0,
    n_train: int | None = None,
    n_test: int = 2000,
    d: int = 8,
    corrupt: float = 0.03,
    steps: int | None = None,
    batch: int = 128,
    hidden: int = 64,
    lr: float = 3e-3,
    strength: float = 0.1,
) -> dict:
    """Trains the MSE and the soft-Spearman models; returns their test Spearman correlations."""
    t0 = time.perf_counter()
    n_train = n_train if n_train is not None else (1000 if quick else 5000)
    steps = steps if steps is not None else (100 if quick else 1000)
    xtr, ytr, xte, yte = make_data(n_train=n_train, n_test=n_test, d=d, corrupt=corrupt, seed=seed)
    kw = dict(steps=steps, batch=batch, hidden=hidden, lr=lr, seed=seed)

    def mse(pred, y):
        return jnp.mean((pred - y) ** 2)

    def spearman(pred, y):
        # The batch is the ranked list; targets get hard (average) ranks.
        return spearman_loss(
            pred, y, regularization_strength=strength, target_regularization_strength=0
        )

    mse_model, mse_losses = _train(mse, xtr, ytr, **kw)
    sp_model, sp_losses = _train(spearman, xtr, ytr, **kw)

    def test_spearman(model):
        return float(spearmanr(np.asarray(model(jnp.asarray(xte))), yte).statistic)

    return {
        "n_train": n_train,
        "n_test": n_test,
        "steps": steps,
        "strength": strength,
        "mse_test_spearman": test_spearman(mse_model),
        "soft_spearman_test_spearman": test_spearman(sp_model),
        "linear_latent_test_spearman": float(
            spearmanr(xte @ np.linalg.lstsq(xtr, np.log(ytr), rcond=None)[0], yte).statistic
        ),
        "spearman_loss_first": sp_losses[0],
        "spearman_loss_last": float(np.mean(sp_losses[-10:])),
        "mse_loss_last": float(np.mean(mse_losses[-10:])),
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="smaller data, fewer steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--strength", type=float, default=0.1)
    parser.add_argument("--out", default=None, help="folder for results.json and report.txt")
    args = parser.parse_args(argv)
    res = run(quick=args.quick, seed=args.seed, steps=args.steps, strength=args.strength)
    lines = [
        f"{res['n_train']} train / {res['n_test']} test, {res['steps']} steps, "
        f"strength={res['strength']}, {res['seconds']:.1f} s"
    ]
    rows = [
        ("MLP trained on MSE", res["mse_test_spearman"]),
        ("MLP trained on soft Spearman", res["soft_spearman_test_spearman"]),
        ("linear least squares on log y (reference)", res["linear_latent_test_spearman"]),
    ]
    lines += [f"  test Spearman, {label:44s}{value:.4f}" for label, value in rows]
    lines.append(
        f"  soft Spearman loss {res['spearman_loss_first']:.3f} -> {res['spearman_loss_last']:.3f}"
    )
    text = "\n".join(lines) + "\n"
    print(text, end="")
    write_outputs(args.out, res, text)


if __name__ == "__main__":
    main()
