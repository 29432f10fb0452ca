"""Robust linear regression with soft least trimmed squares (Blondel et al., 2020, Sec. 6).

Synthetic data: ``y = X w + noise`` with a fraction of the training targets (25% by default)
replaced by gross outliers (shifted by +8 to +16 noise-free units, on the points with the largest
first feature, so that they also pull the slope). Least squares (closed form) is compared with a
linear model fitted by Adam on ``softops.losses.soft_lts_loss``, which soft-sorts the squared
residuals and averages the smallest ``(1 - trim) n``. Reported: the parameter error
``||w_hat - w||`` and the RMSE on clean test data.

    python examples/robust_regression.py            # a few seconds on a CPU
    python examples/robust_regression.py --quick
    python examples/robust_regression.py --out DIR  # also writes results.json and report.txt
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _report import write_outputs

from softops.losses import soft_lts_loss


def make_data(*, n: int, d: int, outliers: float, noise: float, seed: int):
    """Returns float32 (x_train, y_train, x_test, y_test, w_true, is_outlier)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(d + 1).astype(np.float32)  # last entry: intercept

    def sample(m):
        x = rng.standard_normal((m, d)).astype(np.float32)
        y = x @ w[:-1] + w[-1] + noise * rng.standard_normal(m).astype(np.float32)
        return x, y

    xtr, ytr = sample(n)
    xte, yte = sample(max(n, 500))
    n_out = int(round(outliers * n))
    bad = np.argsort(-xtr[:, 0])[:n_out]  # leverage: corrupt the points with the largest x_0
    ytr[bad] += rng.uniform(8.0, 16.0, n_out).astype(np.float32)
    is_outlier = np.zeros(n, bool)
    is_outlier[bad] = True
    return xtr, ytr, xte, yte, w, is_outlier


def _design(x):
    return np.concatenate([x, np.ones((len(x), 1), x.dtype)], axis=1)


def fit_least_squares(x, y):
    """Ordinary least squares with intercept, by ``np.linalg.lstsq``."""
    return np.linalg.lstsq(_design(x), y, rcond=None)[0].astype(np.float32)


def fit_soft_lts(x, y, *, trim: float, strength: float, steps: int, lr: float):
    """Minimizes the soft LTS loss of the residuals of a linear model with Adam, from zero."""
    a, y = jnp.asarray(_design(x)), jnp.asarray(y)

    def loss_fn(w):
        return soft_lts_loss(a @ w - y, trim=trim, regularization_strength=strength)

    opt = optax.adam(lr)

    @jax.jit
    def step(w, state):
        loss, g = jax.value_and_grad(loss_fn)(w)
        updates, state = opt.update(g, state, w)
        return optax.apply_updates(w, updates), state, loss

    w = jnp.zeros(a.shape[1], a.dtype)
    state = opt.init(w)
    losses = []
    for _ in range(steps):
        w, state, loss = step(w, state)
        losses.append(float(loss))
    return np.asarray(w), losses


def run(
    *,
    quick: bool = False,
    seed: int = 0,
    n: int | None = None,
    d: int = 5,
    outliers: float = 0.25,
    noise: float = 0.3,
    trim: float = 0.35,
    strength: float = 0.01,
    steps: int | None = None,
    lr: float = 0.05,
) -> dict:
    """Fits least squares and soft LTS; returns parameter errors and clean test RMSEs."""
    t0 = time.perf_counter()
    n = n if n is not None else (100 if quick else 400)
    steps = steps if steps is not None else (150 if quick else 600)
    xtr, ytr, xte, yte, w, _ = make_data(n=n, d=d, outliers=outliers, noise=noise, seed=seed)
    w_ls = fit_least_squares(xtr, ytr)
    w_lts, losses = fit_soft_lts(xtr, ytr, trim=trim, strength=strength, steps=steps, lr=lr)

    def rmse(wh):
        return float(np.sqrt(np.mean((_design(xte) @ wh - yte) ** 2)))

    return {
        "n_train": n,
        "outlier_fraction": outliers,
        "trim": trim,
        "strength": strength,
        "steps": steps,
        "ls_param_error": float(np.linalg.norm(w_ls - w)),
        "lts_param_error": float(np.linalg.norm(w_lts - w)),
        "ls_test_rmse": rmse(w_ls),
        "lts_test_rmse": rmse(w_lts),
        "oracle_test_rmse": rmse(w),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="smaller data, fewer steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--outliers", type=float, default=0.25)
    parser.add_argument("--trim", type=float, default=0.35)
    parser.add_argument("--strength", type=float, default=0.01)
    parser.add_argument("--out", default=None, help="folder for results.json and report.txt")
    args = parser.parse_args(argv)
    res = run(
        quick=args.quick,
        seed=args.seed,
        outliers=args.outliers,
        trim=args.trim,
        strength=args.strength,
    )
    lines = [
        f"n={res['n_train']}, outliers={res['outlier_fraction']:.0%}, trim={res['trim']}, "
        f"strength={res['strength']}, {res['steps']} steps, {res['seconds']:.1f} s",
        f"  {'':16s}{'||w - w*||':>12s}{'test RMSE':>12s}",
        f"  {'least squares':16s}{res['ls_param_error']:12.4f}{res['ls_test_rmse']:12.4f}",
        f"  {'soft LTS':16s}{res['lts_param_error']:12.4f}{res['lts_test_rmse']:12.4f}",
        f"  {'true w':16s}{0.0:12.4f}{res['oracle_test_rmse']:12.4f}",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    write_outputs(args.out, res, text)


if __name__ == "__main__":
    main()
