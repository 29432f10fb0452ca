"""Which default strength of ``soft_ndcg`` trains: a tiny linear ranker, several strengths.

Data: the graded lists of ``benchmarks/tasks/ltr.py`` (``make_lists``: 16 features, grades 0-4,
lists of L/2 to L items, padded with a mask). Model: ``score = <x, theta>``, Adam (lr 0.05) on
``1 - soft_ndcg(k)`` for ``--steps`` steps from a small random start (scores near 0: the case
where an absolute strength pools everything). Measured: hard test NDCG@k (``soft_ndcg`` at
strength 1e-6, absolute) over ``--seeds`` seeds, mean and min..max, and the fraction of steps
whose gradient was exactly zero.

Usage: ``python benchmarks/tasks/ndcg_strength.py [--lengths 16 100] [--seeds 3] [--steps 150]
[--json PATH]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ltr import DIM, Task, make_lists  # noqa: E402

from softops import losses  # noqa: E402

SETTINGS = {  # name: (regularization_strength, relative)
    "relative 1.0 (default)": (1.0, True),
    "relative 0.3": (0.3, True),
    "relative 3.0": (3.0, True),
    "absolute 1.0 (old default)": (1.0, False),
    "absolute 0.1": (0.1, False),
}


def run(length, k, seeds, steps, batch=32):
    rows = {name: {"ndcg": [], "zero_grad_steps": []} for name in SETTINGS}
    opt = optax.adam(0.05)
    for seed in range(seeds):
        task = Task(seed)
        rng = np.random.default_rng(100 + seed)
        train = [make_lists(task, rng, batch, length)[:3] for _ in range(20)]
        xt, gt, mt, _ = make_lists(task, np.random.default_rng(200 + seed), 400, length)
        for name, (eps, rel) in SETTINGS.items():

            @jax.jit
            def step(theta, state, x, g, m, eps=eps, rel=rel):
                def loss(theta):
                    nd = losses.soft_ndcg(x @ theta, g, k=k, where=m, regularization_strength=eps,
                                          relative=rel)  # fmt: skip
                    return 1 - jnp.mean(nd)

                value, grad = jax.value_and_grad(loss)(theta)
                updates, state = opt.update(grad, state, theta)
                return optax.apply_updates(theta, updates), state, jnp.all(grad == 0)

            theta = 0.01 * jax.random.normal(jax.random.key(seed), (DIM,))
            state = opt.init(theta)
            zeros = 0
            for i in range(steps):
                theta, state, z = step(theta, state, *map(jnp.asarray, train[i % len(train)]))
                zeros += int(z)
            hard = losses.soft_ndcg(jnp.asarray(xt) @ theta, jnp.asarray(gt), k=k,
                                    where=jnp.asarray(mt), regularization_strength=1e-6,
                                    relative=False)  # fmt: skip
            rows[name]["ndcg"].append(float(jnp.mean(hard)))
            rows[name]["zero_grad_steps"].append(zeros / steps)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[16, 100])
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--json", default=None)
    p.add_argument("--quick", action="store_true", help="L = 16, one seed, 20 steps (CI smoke)")
    a = p.parse_args()
    if a.quick:
        a.lengths, a.seeds, a.steps = [16], 1, 20
    out = {
        "meta": {
            "date": datetime.date.today().isoformat(),
            "jax": jax.__version__,
            "k": a.k,
            "seeds": a.seeds,
            "steps": a.steps,
            "cpu_count": os.cpu_count(),
        },
        "results": {},
    }
    for length in a.lengths:
        rows = run(length, a.k, a.seeds, a.steps)
        out["results"][str(length)] = rows
        for name, r in rows.items():
            nd = np.asarray(r["ndcg"])
            print(f"L={length:4d} {name:28s} NDCG@{a.k} {nd.mean():.4f} "
                  f"[{nd.min():.4f}, {nd.max():.4f}]  zero-gradient steps "
                  f"{np.mean(r['zero_grad_steps']):.0%}", flush=True)  # fmt: skip
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
