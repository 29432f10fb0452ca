"""Training with the top-k losses at their defaults: digits, one MLP, Adam, every loss alike.

    python benchmarks/bench_topk_losses.py --json PATH   # prints the rows, writes PATH
    python benchmarks/bench_topk_losses.py --quick       # one seed, 100 steps (CI smoke)
    python benchmarks/bench_topk_losses.py --losses cross_entropy rank_default  # a subset
    python scripts/update_tables.py       # renders the recorded run into docs/losses.md

The recorded run is ``benchmarks/results/bench_topk_losses.json``;
``bench_topk_losses_defaults.json`` there is the defaults only
(``--seeds 2 --losses cross_entropy mask_default rank_default``).

scikit-learn's 8x8 digits (nothing is downloaded; 70/30 stratified split per seed), an MLP
64-64-10 (ReLU), Adam (learning rate 3e-3), batches of 64, the same steps, initialization and
batches for every loss; float32, JAX's defaults. Per loss and seed: the test top-1 accuracy at
a few steps and the largest absolute test logit at the end. The variants: cross-entropy; the
two top-k losses at their defaults; ``soft_topk_mask_loss`` with the derivative of softops
0.x before the fix (``M = max C`` held constant, emulated by passing the same temperature
``0.1 M / 2`` with its gradient stopped); and other strengths of the mask loss.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import softops
from softops.losses import soft_topk_mask_loss, soft_topk_rank_loss
from softops.showcase.topk_task import init_mlp, mlp


def _cost_max(z):
    """The paper's M = max_ij (z_i - y_j)^2 over the anchors {0, 1}, per row."""
    hi, lo = z.max(-1), z.min(-1)
    return jnp.maximum(jnp.maximum(hi**2, (hi - 1) ** 2), jnp.maximum(lo**2, (lo - 1) ** 2))


def _spread(z):
    return z.max(-1) - z.min(-1)


# name -> (description, per-example loss)
LOSSES = {
    "cross_entropy": (
        "cross-entropy",
        optax.softmax_cross_entropy_with_integer_labels,
    ),
    "mask_default": ("soft_topk_mask_loss, defaults (epsilon=0.1)", soft_topk_mask_loss),
    "mask_held_m": (
        "soft_topk_mask_loss, epsilon=0.1 with M held constant (the previous derivative)",
        lambda z, y: soft_topk_mask_loss(z, y, temperature=lax.stop_gradient(0.05 * _cost_max(z))),
    ),
    "mask_eps_0.01": (
        "soft_topk_mask_loss, epsilon=0.01",
        lambda z, y: soft_topk_mask_loss(z, y, epsilon=0.01),
    ),
    "mask_t_0.1": (
        "soft_topk_mask_loss, temperature=0.1",
        lambda z, y: soft_topk_mask_loss(z, y, temperature=0.1),
    ),
    "mask_t_1": (
        "soft_topk_mask_loss, temperature=1",
        lambda z, y: soft_topk_mask_loss(z, y, temperature=1.0),
    ),
    "mask_t_spread": (
        "soft_topk_mask_loss, temperature=0.1 (max - min) per row",
        lambda z, y: soft_topk_mask_loss(z, y, temperature=0.1 * _spread(z)),
    ),
    "rank_default": (
        "soft_topk_rank_loss, defaults (regularization_strength=0.1, squash=True)",
        soft_topk_rank_loss,
    ),
}


def load_digits_split(seed: int):
    """float32 (x_train, y_train, x_test, y_test), pixels in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.data.astype(np.float32) / 16
    xtr, xte, ytr, yte = train_test_split(
        x, d.target, test_size=0.3, random_state=seed, stratify=d.target
    )
    return xtr, ytr.astype(np.int32), xte, yte.astype(np.int32)


def train(
    loss: str,
    seed: int = 0,
    *,
    steps: int = 1500,
    evals: tuple[int, ...] = (300, 600, 1500),
    batch: int = 64,
    lr: float = 3e-3,
    hidden: int = 64,
) -> dict:
    """Trains one model with ``LOSSES[loss]``; test top-1 accuracy after each of ``evals``."""
    per_example = LOSSES[loss][1]
    xtr, ytr, xte, yte = (jnp.asarray(a) for a in load_digits_split(seed))
    params = init_mlp(jax.random.PRNGKey(seed), [xtr.shape[1], hidden, 10])
    opt = optax.adam(lr)
    state = opt.init(params)
    rng = np.random.default_rng(seed)
    order = np.stack([rng.choice(xtr.shape[0], batch, replace=False) for _ in range(steps)])

    def step(carry, idx):
        p, s = carry
        value, grads = jax.value_and_grad(
            lambda p: jnp.mean(per_example(mlp(p, xtr[idx]), ytr[idx]))
        )(p)
        updates, s = opt.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), value

    run = jax.jit(lambda p, s, ids: lax.scan(step, (p, s), ids))
    out: dict = {"loss": loss, "seed": seed, "steps": steps, "top1": {}}
    done, values = 0, []
    for e in sorted(set(evals) | {steps}):
        (params, state), v = run(params, state, jnp.asarray(order[done:e]))
        done = e
        values.append(np.asarray(v))
        logits = mlp(params, xte)
        out["top1"][str(e)] = float(jnp.mean(jnp.argmax(logits, -1) == yte))
    out["max_abs_logit"] = float(jnp.abs(logits).max())
    trace = np.concatenate(values)
    out["loss_last"] = float(trace[-50:].mean())
    out["finite"] = bool(np.isfinite(trace).all())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seed 0, 100 steps")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--json", default=None, metavar="PATH", help="write the results here")
    parser.add_argument(
        "--losses", nargs="+", choices=list(LOSSES), default=list(LOSSES), help="a subset"
    )
    args = parser.parse_args()
    seeds = range(1 if args.quick else args.seeds)
    steps = 100 if args.quick else args.steps
    evals = tuple(e for e in (300, 600, 1500) if e < steps) + (steps,)
    start = time.perf_counter()
    rows = []
    for name in args.losses:
        for seed in seeds:
            row = train(name, seed, steps=steps, evals=evals)
            row["description"] = LOSSES[name][0]
            print(row, flush=True)
            rows.append(row)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "jax": jax.__version__,
        "softops": softops.__version__, "seconds": round(time.perf_counter() - start, 1),
        "model": "MLP 64-64-10, Adam 3e-3, batch 64, float32", "steps": steps,
        "seeds": len(seeds),
    }  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
