"""Cost of forward gradients vs backprop under XLA (Baydin et al. 2022, Table 1 setting).

For logistic regression, the MLP 784-1024-1024-10 and the CNN (4 conv 3x3 x 64 channels, two 2x2
max-pools, fc 1024, fc 10) on MNIST-shaped inputs (batch 64, float32) it prints, as ratios to one
forward pass of the loss measured in the same interleaved rounds (median over rounds):

- Rf: ``jax.jvp`` of the loss (value and one directional derivative, tangent given);
- Rb: ``jax.value_and_grad`` of the loss;
- FGD step / SGD step: ``forward_value_and_grad`` (tangent sampling included) + SGD update, vs
  ``value_and_grad`` + the same update;
- sampling: ``sample_tangents`` alone (it writes d floats), next to writing d ones (the floor).

Then the compiled temporary memory of the jvp-based and grad-based value-and-gradient for tanh MLPs
(width 64, batch 256) of growing depth.

Usage: ``python benchmarks/bench_forward_grad.py [--quick] [--rounds N] [--json PATH]`` (the JSON
is what ``scripts/update_tables.py`` renders into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from softops.forward_grad import forward_value_and_grad, sample_tangents

BATCH = 64


def _dense(key, n_in, n_out):
    w = jax.random.normal(key, (n_in, n_out), jnp.float32) * np.float32(np.sqrt(2.0 / n_in))
    return {"w": w, "b": jnp.zeros(n_out, jnp.float32)}


def _conv(key, c_in, c_out):
    w = jax.random.normal(key, (3, 3, c_in, c_out), jnp.float32) * np.float32(
        np.sqrt(2.0 / (9 * c_in))
    )
    return {"w": w, "b": jnp.zeros(c_out, jnp.float32)}


def _xent(logits, y):
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))


def make_logreg(key):
    def loss(p, x, y):
        return _xent(x.reshape(x.shape[0], -1) @ p["w"] + p["b"][None, :], y)

    return _dense(key, 784, 10), loss


def make_mlp(key):
    k = jax.random.split(key, 3)
    params = [_dense(k[0], 784, 1024), _dense(k[1], 1024, 1024), _dense(k[2], 1024, 10)]

    def loss(p, x, y):
        h = x.reshape(x.shape[0], -1)
        for layer in p[:-1]:
            h = jax.nn.relu(h @ layer["w"] + layer["b"][None, :])
        return _xent(h @ p[-1]["w"] + p[-1]["b"][None, :], y)

    return params, loss


def make_cnn(key):
    k = jax.random.split(key, 6)
    convs = [_conv(k[0], 1, 64), _conv(k[1], 64, 64), _conv(k[2], 64, 64), _conv(k[3], 64, 64)]
    params = {"conv": convs, "fc1": _dense(k[4], 7 * 7 * 64, 1024), "fc2": _dense(k[5], 1024, 10)}

    def conv(h, c):
        out = lax.conv_general_dilated(
            h, c["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return jax.nn.relu(out + c["b"][None, None, None, :])

    def pool(h):
        return lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    def loss(p, x, y):
        h = x[..., None]
        h = pool(conv(conv(h, p["conv"][0]), p["conv"][1]))
        h = pool(conv(conv(h, p["conv"][2]), p["conv"][3]))
        h = h.reshape(h.shape[0], -1)
        h = jax.nn.relu(h @ p["fc1"]["w"] + p["fc1"]["b"][None, :])
        return _xent(h @ p["fc2"]["w"] + p["fc2"]["b"][None, :], y)

    return params, loss


MODELS = {"logistic regression": make_logreg, "MLP 784-1024-1024-10": make_mlp, "CNN": make_cnn}


def _block(out):
    jax.block_until_ready(out)


def bench_model(name, make, rounds, lr=1e-3):
    key = jax.random.key(0)
    params, loss = make(key)
    x = jax.random.uniform(jax.random.key(1), (BATCH, 28, 28), jnp.float32)
    y = jax.random.randint(jax.random.key(2), (BATCH,), 0, 10)
    tangent = sample_tangents(jax.random.key(3), params)
    fvg = forward_value_and_grad(loss)

    def sgd(params, g):
        return jax.tree_util.tree_map(lambda p, u: p - lr * u, params, g)

    def fgd_step(key, params, x, y):
        value, g = fvg(key, params, x, y)
        return sgd(params, g), value

    def sgd_step(params, x, y):
        value, g = jax.value_and_grad(loss)(params, x, y)
        return sgd(params, g), value

    fns = {
        "fwd": (jax.jit(loss), (params, x, y)),
        "jvp": (
            jax.jit(lambda p, v, x, y: jax.jvp(lambda q: loss(q, x, y), (p,), (v,))),
            (params, tangent, x, y),
        ),
        "grad": (jax.jit(jax.value_and_grad(loss)), (params, x, y)),
        "fgd_step": (jax.jit(fgd_step), (jax.random.key(4), params, x, y)),
        "sgd_step": (jax.jit(sgd_step), (params, x, y)),
        "sample": (jax.jit(sample_tangents), (jax.random.key(5), params)),
        "ones": (jax.jit(lambda p: jax.tree_util.tree_map(jnp.ones_like, p)), (params,)),
    }
    for f, args in fns.values():  # compile and warm up
        _block(f(*args))
        _block(f(*args))
    times = {n: [] for n in fns}
    order = list(fns)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for n in order:
            f, args = fns[n]
            t0 = time.perf_counter()
            _block(f(*args))
            times[n].append(time.perf_counter() - t0)
    t = {n: np.asarray(v) for n, v in times.items()}

    def ratio(a, b):  # median over rounds of the per-round ratio (same round, interleaved)
        return float(np.median(t[a] / t[b]))

    d = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
    return {
        "model": name,
        "d": d,
        "fwd_ms": 1e3 * float(np.median(t["fwd"])),
        "Rf": ratio("jvp", "fwd"),
        "Rb": ratio("grad", "fwd"),
        "Rf/Rb": ratio("jvp", "grad"),
        "fgd/sgd": ratio("fgd_step", "sgd_step"),
        "sample/fwd": ratio("sample", "fwd"),
        "ones/fwd": ratio("ones", "fwd"),
    }


def memory_table(depths, width=64, batch=256):
    rows = []
    for depth in depths:
        k = jax.random.key(0)
        params = [
            (
                jax.random.normal(jax.random.fold_in(k, i), (width, width), jnp.float32) / 8,
                jnp.zeros(width, jnp.float32),
            )
            for i in range(depth)
        ]
        x = jnp.ones((batch, width), jnp.float32)

        def loss(p, x):
            for w, b in p:
                x = jnp.tanh(x @ w + b[None, :])
            return jnp.mean(x**2)

        def temp(f, *args):
            return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes

        rows.append(
            (
                depth,
                temp(forward_value_and_grad(loss), jax.random.key(1), params, x),
                temp(jax.value_and_grad(loss), params, x),
            )
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds, fewer depths")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per model")
    parser.add_argument("--json", type=Path, default=None, help="write the results there")
    args = parser.parse_args()
    rounds = args.rounds or (5 if args.quick else 30)
    record: dict = {
        "meta": {
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "cpu_count": os.cpu_count(),
            "batch": BATCH,
            "rounds": rounds,
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        },
        "models": [],
        "memory": [],
    }
    print(
        f"jax {jax.__version__}, backend {jax.default_backend()}, batch {BATCH}, float32, "
        f"{rounds} interleaved rounds, medians of per-round ratios\n"
    )
    print(
        "| model | d | forward (ms) | Rf | Rb | Rf/Rb | FGD step / SGD step | sampling / fwd "
        "| write d ones / fwd |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, make in MODELS.items():
        r = bench_model(name, make, rounds)
        record["models"].append(r)
        print(
            f"| {r['model']} | {r['d']:,} | {r['fwd_ms']:.2f} | {r['Rf']:.2f} | {r['Rb']:.2f} "
            f"| {r['Rf/Rb']:.2f} | {r['fgd/sgd']:.2f} | {r['sample/fwd']:.2f} "
            f"| {r['ones/fwd']:.2f} |",
            flush=True,
        )
    depths = (5, 25, 100) if args.quick else (5, 10, 25, 50, 100)
    print("\nCompiled temporary memory, tanh MLP width 64, batch 256 (MB):\n")
    print("| depth | forward_value_and_grad (jvp) | value_and_grad (backprop) | ratio |")
    print("|---:|---:|---:|---:|")
    for depth, fwd, bwd in memory_table(depths):
        record["memory"].append({"depth": depth, "jvp_bytes": fwd, "grad_bytes": bwd})
        print(
            f"| {depth} | {fwd / 1e6:.3f} | {bwd / 1e6:.3f} | {bwd / max(fwd, 1):.1f} |", flush=True
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
