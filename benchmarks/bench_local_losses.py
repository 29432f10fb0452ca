"""Backprop vs weight-perturbed, activity-perturbed and local-loss forward gradients (Ren et al.).

On scikit-learn's digits (or a local MNIST ``.npz`` with ``--mnist PATH``), with the Flax nnx MLP
of ``softops.showcase.fg_training`` (two blocks Dense-LayerNorm-ReLU of width 128, Adam
with cosine decay, learning rate per method from a grid by final training loss), it prints:

1. Training: test accuracy (mean ± std over seeds), steps and wall-clock time to reach
   backprop's final test accuracy minus one point (medians over seeds), and the per-step cost.
   All runs train side by side, one chunk of steps each in a shuffled order, so that machine load
   hits all methods alike; only compiled training steps are timed; ratios are to backprop in the
   same run.
2. Variance: the cosine similarity of each estimate with the true gradient of the same objective,
   per layer (mean over draws), at equal numbers of tangents: the global loss (weight- vs
   activity-perturbed) and the local losses (weight-perturbed vs activity-perturbed, with and
   without groups), at initialization and after training with backprop.
3. Memory: compiled temporary memory of one gradient evaluation per method, and of backprop vs
   local losses as the number of blocks grows.

With ``--out DIR`` it writes the loss-against-time plot and a JSON of the results there.

Usage: ``python benchmarks/bench_local_losses.py [--quick] [--seeds N] [--batch N] [--mnist PATH]
[--out DIR]``.

Reference: Ren, Kornblith, Liao, Hinton, Scaling Forward Gradient with Local Losses, ICLR 2023,
arXiv:2210.03310.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from _record import run_meta  # the scripts' folder is on sys.path when run as a script
from flax import nnx

from softops.forward_grad import (
    activity_value_and_grad,
    forward_value_and_grad,
    local_value_and_grad,
    no_tap,
)
from softops.showcase import fg_training as ex
from softops.showcase.fg_report import report


def groups_sweep(groups, *, seeds, batch, steps, mnist=None, hidden=128, chunk=10):
    """Local losses with ``G`` groups (``hidden / G`` units each) against backprop, side by side.

    One unit per group (``G = hidden``) makes the estimate exact for these one-layer blocks: local
    learning without forward-gradient noise, the reference for what the noise costs.
    """
    data = ex.load_data(mnist)
    sizes = (data[0].shape[1], hidden, hidden)
    compiled = {
        "backprop": ex.compile_method(
            "backprop", data, sizes=sizes, steps=steps, chunk=chunk, batch=batch
        )
    }
    lrs = {"backprop": ex.LRS["backprop"]}
    for g in groups:
        compiled[f"G={g}"] = ex.compile_method(
            "fgd_local", data, sizes=sizes, steps=steps, chunk=chunk, batch=batch, num_groups=g
        )
        lrs[f"G={g}"] = ex.LRS["fgd_local"]
    runs = [(m, lr, s) for m in compiled for lr in lrs[m] for s in seeds]
    curves, _ = ex.train_side_by_side(compiled, runs, steps=steps, chunk=chunk)
    return ex.summarize(curves, tuple(compiled), lrs, seeds)


def _cosines(estimate, true, draws):
    """Mean and standard error over draws of the cosine of each kernel's estimate with the truth."""
    keys = jax.random.split(jax.random.key(123), draws)
    ests = jax.jit(jax.vmap(estimate))(keys)
    out = {}
    for (path, t), (_, e) in zip(
        jax.tree_util.tree_leaves_with_path(true), jax.tree_util.tree_leaves_with_path(ests)
    ):
        name = jax.tree_util.keystr(path).replace(".value", "")
        if "kernel" not in name or not jnp.any(t != 0):  # e.g. a head unused by this objective
            continue
        e, t = e.reshape(draws, -1), t.reshape(-1)
        c = (e @ t) / (jnp.linalg.norm(e, axis=1) * jnp.linalg.norm(t))
        out[name] = (float(jnp.mean(c)), float(jnp.std(c) / np.sqrt(draws)))
    return out


def variance_table(data, *, hidden, num_groups, batch, tangents, draws, trained_steps):
    """Cosine similarities per layer for the global and the local objectives."""
    x, y = jnp.asarray(data[0][:batch]), jnp.asarray(data[1][:batch])
    n_classes = int(data[1].max()) + 1
    sizes = (data[0].shape[1], hidden, hidden)
    rows = []
    for when in ("init", "trained") if trained_steps else ("init",):
        model = ex.MLP(sizes, n_classes, seed=0, local_heads=True)
        if when == "trained":
            model = _train_backprop(model, data, trained_steps, batch)
        # Global objective: the model without the auxiliary head (its gradient is 0).
        graphdef, state = nnx.split(model)

        def loss(p, x, y, graphdef=graphdef):
            return jnp.mean(ex.xent(nnx.merge(graphdef, p)(x), y))

        true = jax.grad(loss)(state, x, y)
        act = {}
        for k in tangents:
            fw = forward_value_and_grad(loss, num_tangents=k)
            fa = activity_value_and_grad(
                lambda p, x, tap, g=graphdef: nnx.merge(g, p).features(x, tap),
                lambda p, h, g=graphdef: nnx.merge(g, p).blocks[-1].head(h),
                ex.xent,
                num_tangents=k,
            )
            fab = activity_value_and_grad(
                lambda p, x, tap, g=graphdef: nnx.merge(g, p).features(x, tap),
                lambda p, h, g=graphdef: nnx.merge(g, p).blocks[-1].head(h),
                ex.xent,
                num_tangents=k,
                estimator="batch",
            )
            act[k] = {
                "weight": _cosines(lambda key, f=fw: f(key, state, x, y)[1], true, draws),
                "activity": _cosines(lambda key, f=fa: f(key, state, x, y)[1], true, draws),
                "activity, batch estimator": _cosines(
                    lambda key, f=fab: f(key, state, x, y)[1], true, draws
                ),
            }
        rows.append((when, "global loss", act))
        # Local objective: per-block states, each block on its own head, gradient stopped between.
        graphdefs, states = zip(*(nnx.split(b) for b in model.blocks))
        states = list(states)
        blocks = [lambda p, x, tap, g=g: nnx.merge(g, p)(x, tap) for g in graphdefs]
        heads = [lambda p, h, g=g: nnx.merge(g, p).head(h) for g in graphdefs]

        def local_loss(ps, x, y):
            total = 0.0
            for b, h, p in zip(blocks, heads, ps):
                x = b(p, jax.lax.stop_gradient(x), no_tap)
                total = total + jnp.mean(ex.xent(h(p, x), y))
            return total

        true = jax.grad(local_loss)(states, x, y)
        loc = {}
        for k in tangents:
            fw = forward_value_and_grad(local_loss, num_tangents=k)
            f1 = local_value_and_grad(blocks, heads, ex.xent, num_tangents=k)
            fg = local_value_and_grad(blocks, heads, ex.xent, num_tangents=k, num_groups=num_groups)
            loc[k] = {
                "weight": _cosines(lambda key, f=fw: f(key, states, x, y)[1], true, draws),
                "activity": _cosines(lambda key, f=f1: f(key, states, x, y)[1], true, draws),
                f"activity, {num_groups} groups": _cosines(
                    lambda key, f=fg: f(key, states, x, y)[1], true, draws
                ),
            }
        rows.append((when, "local losses", loc))
    return rows


def _train_backprop(model, data, steps, batch):
    """The model after ``steps`` of backprop (Adam 3e-3): a point where gradients are small."""
    import optax

    graphdef, state = nnx.split(model)
    x, y = jnp.asarray(data[0]), jnp.asarray(data[1])
    tx = optax.adam(3e-3)

    def loss(p, xb, yb):
        return jnp.mean(ex.xent(nnx.merge(graphdef, p)(xb), yb))

    @jax.jit
    def train(state):
        def step(c, key):
            p, s = c
            idx = jax.random.randint(key, (batch,), 0, x.shape[0])
            g = jax.grad(loss)(p, x[idx], y[idx])
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(
            step, (state, tx.init(state)), jax.random.split(jax.random.key(7), steps)
        )
        return p

    return nnx.merge(graphdef, train(state))


def memory_table(data, *, hidden, num_groups, batch):
    """Compiled temporary memory (bytes) of one gradient evaluation per method."""
    x, y = jnp.asarray(data[0][:batch]), jnp.asarray(data[1][:batch])
    n_classes = int(data[1].max()) + 1
    sizes = (data[0].shape[1], hidden, hidden)
    out = {}
    for m in ex.METHODS:
        params, _, grad_fn = ex.setup(m, sizes, n_classes, seed=0, num_groups=num_groups)
        compiled = jax.jit(grad_fn).lower(jax.random.key(0), params, x, y).compile()
        out[m] = compiled.memory_analysis().temp_size_in_bytes
    return out


def depth_table(depths, *, hidden=128, batch=64, n_in=64):
    """Temporary memory of backprop vs local losses for ``depth`` blocks of width ``hidden``."""
    x = jnp.ones((batch, n_in), jnp.float32)
    y = jnp.zeros(batch, jnp.int32)
    rows = []
    for depth in depths:
        sizes = (n_in,) + (hidden,) * depth
        temp = {}
        for m in ("backprop", "fgd_local"):
            params, _, grad_fn = ex.setup(m, sizes, 10, seed=0)
            c = jax.jit(grad_fn).lower(jax.random.key(0), params, x, y).compile()
            temp[m] = c.memory_analysis().temp_size_in_bytes
        rows.append((depth, temp["backprop"], temp["fgd_local"]))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (CI): tiny budgets")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--groups", type=int, default=16, help="groups of the local loss")
    parser.add_argument("--mnist", default=None, help="path to a local MNIST .npz")
    parser.add_argument("--out", default=None, help="folder for the plot and JSON (default: none)")
    parser.add_argument("--sweep-groups", default="4,8,32,128", help="groups for the sweep")
    parser.add_argument(
        "--sections",
        default="training,groups,cosine,memory",
        help="comma-separated subset of training,groups,cosine,memory",
    )
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    seeds = (0,) if args.quick else tuple(range(args.seeds))
    data = ex.load_data(args.mnist)
    hidden = 128
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, float32\n")
    results = {}
    if "training" in sections:
        res = ex.run(
            quick=args.quick,
            seeds=seeds,
            mnist=args.mnist,
            out=args.out,
            steps=args.steps,
            batch=args.batch,
            num_groups=args.groups,
            progress=False,
        )
        print("## Training\n")
        print(report(res))
        curves = ("curves", "curves_by_seed")
        results["training"] = {k: v for k, v in res.items() if k not in curves}
        if "plot" in res:  # the file's name: the folder given by --out is the user's machine's
            results["training"]["plot"] = pathlib.Path(res["plot"]).name
        results["curves"] = res["curves_by_seed"]  # per method, one curve per seed
        print()
    if args.quick:  # a smoke run: one compilation per method and estimator, tiny budgets
        sections.discard("groups")
    if "groups" in sections:
        groups = tuple(int(g) for g in args.sweep_groups.split(","))
        print(f"### Local losses: units per group (width {hidden}), same protocol\n")
        sweep = groups_sweep(
            groups,
            seeds=seeds,
            batch=args.batch,
            steps=args.steps or 1500,
            mnist=args.mnist,
            hidden=hidden,
            chunk=10,
        )
        print(f"target {sweep['target_acc']:.4f} (backprop's test accuracy - 1 pt)\n")
        print(
            "| groups | units/group | lr | test accuracy | steps to target | time ratio "
            "| step cost ratio |\n|---:|---:|---:|---:|---:|---:|---:|"
        )
        for g in groups:
            m = f"G={g}"
            print(
                f"| {g} | {hidden // g} | {sweep[f'lr_{m}']:g} | {sweep[f'test_acc_{m}']:.4f} "
                f"± {sweep[f'test_acc_std_{m}']:.4f} | {sweep[f'steps_to_target_{m}']:.0f} "
                f"| {sweep[f'time_ratio_{m}']:.2f} | {sweep[f'step_cost_ratio_{m}']:.2f} |"
            )
        print(
            f"\n(backprop here: {sweep['test_acc_backprop']:.4f}, "
            f"{sweep['steps_to_target_backprop']:.0f} steps to the target)\n"
        )
        results["groups_sweep"] = sweep
    if "cosine" in sections:
        cosine_section(data, args, hidden, results)
    if "memory" in sections:
        memory_section(data, args, hidden, results)
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        results["meta"] = run_meta()
        (out / "bench_local_losses.json").write_text(json.dumps(results, indent=1, default=str))
        print(f"\nwrote {out / 'bench_local_losses.json'}")


def _ratio(a, w):
    """``a / w`` of mean cosines; a lower bound when ``w`` is within 2 standard errors of 0."""
    if w[0] - 2 * w[1] <= 0:
        return f">= {a[0] / (max(w[0], 0.0) + 2 * w[1]):.0f}x (weight-perturbed ~ 0)"
    return f"{a[0] / w[0]:.0f}x"


def cosine_section(data, args, hidden, results):
    print(
        f"## Cosine similarity with the true gradient of the same objective (batch {args.batch})\n"
    )
    tangents = (1,) if args.quick else (1, 8)
    rows = variance_table(
        data,
        hidden=hidden,
        num_groups=args.groups,
        batch=args.batch,
        tangents=tangents,
        draws=10 if args.quick else 500,
        trained_steps=0 if args.quick else 1500,
    )
    results["cosine"] = []
    for when, objective, table in rows:
        print(f"{objective}, at {when} (mean over draws ± standard error):\n")
        for k, by_method in table.items():
            names = list(next(iter(by_method.values())))
            print(f"| K = {k} | " + " | ".join(names) + " |")
            print("|---|" + "---:|" * len(names))
            for method, cos in by_method.items():
                cells = [f"{cos[n][0]:.4f} ± {cos[n][1]:.4f}" for n in names]
                print(f"| {method} | " + " | ".join(cells) + " |")
            weight = by_method["weight"]
            for method, cos in by_method.items():
                if method != "weight":
                    print(
                        f"\n{method} / weight, hidden layers: "
                        + ", ".join(_ratio(cos[n], weight[n]) for n in names if "head" not in n)
                    )
            print()
            results["cosine"].append(
                {"when": when, "objective": objective, "K": k, "cos": by_method}
            )


def memory_section(data, args, hidden, results):
    print(f"## Compiled temporary memory of one gradient evaluation (batch {args.batch})\n")
    mem = memory_table(data, hidden=hidden, num_groups=args.groups, batch=args.batch)
    print("| method | temp (KB) |\n|---|---:|")
    for m, b in mem.items():
        print(f"| {ex.LABELS[m]} | {b / 1e3:.1f} |")
    depths = (2,) if args.quick else (2, 8, 32)
    print("\n| blocks | backprop (KB) | local losses (KB) |\n|---:|---:|---:|")
    rows = depth_table(depths)
    for depth, bp, loc in rows:
        print(f"| {depth} | {bp / 1e3:.1f} | {loc / 1e3:.1f} |")
    results["memory"] = {"per_method": mem, "depth": rows}


if __name__ == "__main__":
    main()
