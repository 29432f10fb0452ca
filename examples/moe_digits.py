"""A small mixture-of-experts classifier on scikit-learn's digits, three routers compared.

The model: a dense embedding (64 -> 32, ReLU), one mixture-of-experts layer (8 experts, each an
MLP 32 -> 64 -> 32, added to the embedding) and a linear head. The tokens of a batch are routed
to expert buffers of static capacity (1.25 x their fair share), the experts run on their buffers
only, and the outputs are combined back:

- ``hard``: top-2 of the router's softmax (``lax.top_k``), combine weights renormalized over the
  two, plus Switch Transformer's auxiliary load-balancing loss (``softops.routing``);
- ``dense``: every expert on every token, weighted by the softmax (no routing, no capacity);
- ``sparse``: ``softops.routing.token_choice``: the router's exactly sparse soft top-2 gates
  (the Euclidean projection onto the capped simplex, ``regularization="l2"``, at a temperature
  of half each token's spread of scores), differentiable in the scores, with the same buffers,
  capacity and auxiliary loss;
- ``sparse_p43``: the same with ``regularization="p=4/3"``.

``run()`` returns per router the test accuracy per seed, the expert load on the test set (the
fraction of tokens each expert processes), the fraction of assignments dropped by the capacity,
and the median time of a compiled training step. Nothing is downloaded; files are written only
with ``--out DIR`` (``results.json`` and ``report.txt`` there).

    python examples/moe_digits.py            # 3 seeds x 1500 steps
    python examples/moe_digits.py --quick    # a smoke run
    python examples/moe_digits.py --out DIR  # also writes results.json and report.txt
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _report import write_outputs
from jax import lax
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from softops import routing

ROUTERS = ("hard", "dense", "sparse", "sparse_p43")
EXPERTS, K, WIDTH, HIDDEN = 8, 2, 32, 64
AUX_WEIGHT = 0.01
TEMPERATURE = 0.5  # of the sparse gates, times each token's spread of router scores


def init(key, n_in: int, n_out: int) -> dict:
    keys = jax.random.split(key, 5)

    def dense(key, shape):
        return jax.random.normal(key, shape) * math.sqrt(2.0 / shape[-2])

    return {
        "embed": dense(keys[0], (n_in, WIDTH)),
        "router": 0.1 * dense(keys[1], (WIDTH, EXPERTS)),
        "w1": dense(keys[2], (EXPERTS, WIDTH, HIDDEN)),
        "w2": 0.5 * dense(keys[3], (EXPERTS, HIDDEN, WIDTH)),
        "head": dense(keys[4], (WIDTH, n_out)),
    }


def experts(params, x):
    """Every expert on its own tokens: ``x`` [E, C, WIDTH] -> [E, C, WIDTH]."""
    h = jax.nn.relu(jnp.einsum("ecd,edh->ech", x, params["w1"]))
    return jnp.einsum("ech,ehd->ecd", h, params["w2"])


def hard_topk(scores, capacity: int):
    """Top-k routing by ``lax.top_k``: (expert_index, position, kept, combine) as token_choice."""
    probs = jax.nn.softmax(scores, axis=-1)
    top, index = lax.top_k(probs, K)
    one_hot = jax.nn.one_hot(index, EXPERTS, dtype=jnp.int32)  # [T, K, E]
    before = jnp.cumsum(one_hot, axis=0) - one_hot
    totals = one_hot.sum(axis=0)
    earlier = jnp.cumsum(totals, axis=0) - totals
    position = ((before + earlier[None]) * one_hot).sum(-1)
    kept = position < capacity
    weight = top / top.sum(-1, keepdims=True)
    combine = (
        jnp.zeros_like(probs)
        .at[jnp.arange(scores.shape[0])[:, None], index]
        .add(jnp.where(kept, weight, 0))
    )
    return index, jnp.where(kept, position, capacity), kept, combine


def route(params, h, router: str):
    """The MoE layer: (output [T, WIDTH], auxiliary loss, expert load [E], dropped fraction)."""
    scores = h @ params["router"]
    n = h.shape[0]
    if router == "dense":
        probs = jax.nn.softmax(scores, axis=-1)
        out = experts(params, jnp.broadcast_to(h, (EXPERTS, n, WIDTH)))  # [E, T, W]
        return jnp.einsum("te,etd->td", probs, out), 0.0, jnp.ones(EXPERTS), 0.0
    capacity = math.ceil(1.25 * n * K / EXPERTS)
    if router == "hard":
        index, position, kept, combine = hard_topk(scores, capacity)
        dispatch = jax.nn.one_hot(index, EXPERTS).sum(1)  # [T, E] 0/1, before capacity
        aux = AUX_WEIGHT * routing.load_balancing_loss(scores, dispatch)
        nonzero = K * n
    else:
        reg = "l2" if router == "sparse" else "p=4/3"
        temp = TEMPERATURE * lax.stop_gradient(jnp.std(scores, axis=-1))  # scale-free
        r = routing.token_choice(scores, K, capacity=capacity, regularization=reg, temperature=temp)
        index, position, kept, combine = r.expert_index, r.position, r.kept, r.combine
        aux = AUX_WEIGHT * routing.load_balancing_loss(scores, r.gates > 0)
        nonzero = (r.gates > 0).sum()
    buffers = jnp.zeros((EXPERTS, capacity + 1, WIDTH), h.dtype)  # slot `capacity`: dropped
    tokens = jnp.broadcast_to(jnp.arange(n)[:, None], index.shape)
    buffers = buffers.at[index, position].set(h[tokens])
    out = experts(params, buffers)[index, position]  # [T, S, W]
    weight = jnp.take_along_axis(combine, index, axis=-1) * kept
    load = jnp.zeros(EXPERTS).at[index].add(kept) / n
    return jnp.einsum("ts,tsd->td", weight, out), aux, load, 1 - kept.sum() / nonzero


def forward(params, x, router: str):
    h = jax.nn.relu(x @ params["embed"])
    moe, aux, load, dropped = route(params, h, router)
    return (h + moe) @ params["head"], aux, load, dropped


def loss_fn(params, x, y, router: str):
    logits, aux, _, _ = forward(params, x, router)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean() + aux


def load_data(seed: int = 0):
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    return train_test_split(x, digits.target, test_size=0.3, random_state=seed)


def train(router: str, data, *, seed: int, steps: int, batch: int, lr: float = 3e-3):
    """(test accuracy, test expert load [E], test dropped fraction, median step seconds)."""
    x_train, x_test, y_train, y_test = data
    params = init(jax.random.key(seed), x_train.shape[1], 10)
    opt = optax.adam(lr)
    state = opt.init(params)

    @jax.jit
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y, router)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    rng = np.random.default_rng(seed)
    times = []
    for _ in range(steps):
        idx = rng.choice(len(x_train), batch, replace=False)
        t0 = time.perf_counter()
        params, state, loss = step(params, state, x_train[idx], y_train[idx])
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - t0)
    logits, _, load, dropped = jax.jit(forward, static_argnums=2)(params, x_test, router)
    acc = float((np.asarray(logits).argmax(-1) == y_test).mean())
    return acc, np.asarray(load), float(dropped), float(np.median(times[1:]))


def run(*, quick: bool = False, seeds: int | None = None, steps: int | None = None,
        batch: int = 128, routers=ROUTERS) -> dict:  # fmt: skip
    """Every router on the same seeds, interleaved seed by seed; a dict of results."""
    seeds = seeds or (1 if quick else 3)
    steps = steps or (30 if quick else 1500)
    data = load_data()
    res: dict = {"steps": steps, "batch": batch, "seeds": seeds, "experts": EXPERTS, "k": K}
    for seed in range(seeds):
        for router in routers:
            acc, load, dropped, sec = train(router, data, seed=seed, steps=steps, batch=batch)
            r = res.setdefault(router, {"acc": [], "load": [], "dropped": [], "step_s": []})
            r["acc"].append(acc)
            r["load"].append(load.tolist())
            r["dropped"].append(dropped)
            r["step_s"].append(sec)
    return res


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--quick", action="store_true", help="one seed, 30 steps")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--out", default=None, help="folder for results.json and report.txt")
    args = parser.parse_args(argv)
    res = run(quick=args.quick, seeds=args.seeds, steps=args.steps)
    head = f"digits, {res['experts']} experts, top-{res['k']}"
    lines = [f"{head}, {res['steps']} steps, {res['seeds']} seeds"]
    for router in ROUTERS:
        r = res[router]
        load = np.asarray(r["load"])
        lines.append(
            f"  {router:10s} test accuracy {np.mean(r['acc']):.4f} ± {np.std(r['acc']):.4f}  "
            f"load min/max {load.min():.3f}/{load.max():.3f}  dropped {np.mean(r['dropped']):.3f}"
            f"  step {1e3 * np.median(r['step_s']):.2f} ms"
        )
    text = "\n".join(lines) + "\n"
    print(text, end="")
    write_outputs(args.out, res, text)


if __name__ == "__main__":
    main()
