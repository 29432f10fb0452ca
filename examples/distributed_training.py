"""Data-parallel training over all devices of all processes (``jax.distributed``) on a softops loss.

A learning-to-rank task: each example is a list of ``--items`` items with ``--features`` features
and a relevance target per item; a Flax nnx MLP scores every item and is trained with optax's Adam
on ``softops.losses.spearman_loss`` (one minus the soft Spearman correlation between the scores
and the hard ranks of the targets), averaged over the batch of lists.

Data parallelism: one global mesh ``("batch",)`` over ``jax.devices()`` (every device of every
process); the batch of lists is sharded over it, the parameters and the optimizer state are
replicated, and one jitted step does forward, backward and update. The mesh axis is Explicit
(``jax.make_mesh``'s default) or, with ``--axis-type auto``, Auto; softops ops run on each batch
shard either way. Each device computes its own rows only; the one communication is the
all-reduce of the mean loss and the gradient. Each process builds just its own rows of a
deterministic global batch (every row comes from ``(seed, step, row)``), so the result does not
depend on how many processes or devices share the work. ``--method forward`` replaces backprop
by a forward-gradient estimate, ``softops.forward_grad.forward_value_and_grad``, under the
same ``jit``: the key is replicated, so every device draws the same tangents, and the all-reduce
carries the loss and the directional derivatives only.

    # one process, its local devices (a CPU, a GPU, a TPU host, ...)
    python examples/distributed_training.py
    # one process, 8 simulated CPU devices
    python examples/distributed_training.py --cpu-devices 8
    # 2 processes x 4 CPU devices on this machine (process 0 runs the coordinator)
    python examples/distributed_training.py --cpu-devices 4 --coordinator-address localhost:12355 \\
        --num-processes 2 --process-id 0 &
    python examples/distributed_training.py --cpu-devices 4 --coordinator-address localhost:12355 \\
        --num-processes 2 --process-id 1
    # a cluster (SLURM, Open MPI, Cloud TPU pods): everything detected
    srun python examples/distributed_training.py --distributed

The arguments of ``jax.distributed.initialize`` can also come from the environment:
``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``. Process 0 prints the loss.
Nothing is written unless ``--out DIR`` is given: then every process writes its copy of the final
parameters (``params_<process>.npz``), process 0 a summary (``result.json``) and the compiled
train step (``train_step.hlo.txt``, where the collectives can be read). See
``docs/distributed.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from softops.forward_grad import forward_value_and_grad
from softops.losses import spearman_loss

METHODS = ("backprop", "forward")


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    g = p.add_argument_group("processes (jax.distributed.initialize)")
    g.add_argument("--coordinator-address", default=env("JAX_COORDINATOR_ADDRESS"))
    g.add_argument("--num-processes", type=int, default=_int(env("JAX_NUM_PROCESSES")))
    g.add_argument("--process-id", type=int, default=_int(env("JAX_PROCESS_ID")))
    g.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize() and let it detect the cluster (SLURM, Open MPI, "
        "Cloud TPU); implied by --coordinator-address",
    )
    g.add_argument(
        "--cpu-devices",
        type=int,
        default=None,
        help="run on this many simulated CPU devices per process (no accelerator needed)",
    )
    t = p.add_argument_group("training")
    t.add_argument("--method", choices=METHODS, default="backprop")
    t.add_argument("--steps", type=int, default=30)
    t.add_argument("--batch", type=int, default=64, help="global number of lists per step")
    t.add_argument("--items", type=int, default=32, help="items per list")
    t.add_argument("--features", type=int, default=8)
    t.add_argument("--hidden", type=int, default=32)
    t.add_argument("--lr", type=float, default=None, help="default: 1e-2 backprop, 1e-3 forward")
    t.add_argument("--num-tangents", type=int, default=8, help="--method forward only")
    t.add_argument("--strength", type=float, default=0.1, help="soft rank regularization ε")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--x64", action="store_true", help="train in float64")
    t.add_argument(
        "--axis-type",
        choices=("explicit", "auto"),
        default="explicit",
        help="mesh axis type: Explicit (jax.make_mesh's default: shardings are part of the types) "
        "or Auto (jit's partitioner propagates them)",
    )
    t.add_argument(
        "--shard-params",
        action="store_true",
        help="split parameters and optimizer state over the devices too (FSDP-style)",
    )
    p.add_argument("--out", type=pathlib.Path, default=None, help="write results to this folder")
    return p.parse_args(argv)


def _int(value):
    return None if value in (None, "") else int(value)


def initialize(args: argparse.Namespace) -> None:
    """Configures JAX and joins the other processes; call before anything touches a device."""
    if args.cpu_devices is not None:
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    if args.coordinator_address is not None or args.num_processes not in (None, 1):
        jax.distributed.initialize(
            coordinator_address=args.coordinator_address,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    elif args.distributed:
        jax.distributed.initialize()


class Scorer(nnx.Module):
    """An MLP that scores each item of a list: ``[..., n, d] -> [..., n]``.

    The output layer has no bias: ranks, hence the loss, do not change when every score moves by
    the same amount, so a bias would get a zero gradient (and Adam would amplify rounding noise
    into steps).
    """

    def __init__(self, d: int, hidden: int, *, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(d, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, 1, use_bias=False, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.gelu(self.l1(x))
        h = jax.nn.gelu(self.l2(h))
        return self.out(h)[..., 0]


def make_rows(rows: range, *, step: int, items: int, features: int, seed: int, dtype):
    """Rows ``rows`` of the global batch of ``step``: features ``[r, n, d]``, targets ``[r, n]``.

    Every row comes from its own generator seeded by ``(seed, step, row)``, so any process can
    build any rows, and a row is the same whoever builds it. The target of an item is a noisy,
    nonlinear function of its features (only its order within the list matters to the loss).
    """
    w = np.random.default_rng((seed, 2**31)).standard_normal(features) / np.sqrt(features)
    xs, ys = [], []
    for r in rows:
        rng = np.random.default_rng((seed, step, r))
        x = rng.standard_normal((items, features))
        z = x @ w + 0.5 * np.sin(2.0 * x[:, 0]) * x[:, 1] + 0.1 * rng.standard_normal(items)
        xs.append(x)
        ys.append(np.exp(z))
    shape = (len(xs), items, features)
    x = np.stack(xs) if xs else np.zeros(shape)
    y = np.stack(ys) if ys else np.zeros(shape[:2])
    return x.astype(dtype), y.astype(dtype)


def local_rows(sharding: NamedSharding, global_rows: int) -> range:
    """The rows of a batch-sharded ``[global_rows, ...]`` array held by this process's devices."""
    starts, stops = [], []
    for index in sharding.addressable_devices_indices_map((global_rows,)).values():
        start, stop, _ = index[0].indices(global_rows)
        starts.append(start)
        stops.append(stop)
    lo, hi = min(starts), max(stops)
    # make_mesh orders the devices process by process: each process holds one block of rows.
    if sum(b - a for a, b in set(zip(starts, stops))) != hi - lo:
        raise ValueError(f"this process's rows are not contiguous: {sorted(zip(starts, stops))}")
    return range(lo, hi)


def global_batch(step: int, sharding: NamedSharding, args, dtype):
    """The global batch ``(x [B, n, d], y [B, n])`` sharded by rows; this process makes its own."""
    rows = local_rows(sharding, args.batch)
    x, y = make_rows(
        rows, step=step, items=args.items, features=args.features, seed=args.seed, dtype=dtype
    )
    x = jax.make_array_from_process_local_data(sharding, x, (args.batch, *x.shape[1:]))
    y = jax.make_array_from_process_local_data(sharding, y, (args.batch, *y.shape[1:]))
    return x, y


def build(args, mesh):
    """Initial parameters and optimizer state, placed on the mesh, and the jitted train step.

    Parameters and Adam's moments are replicated, or with ``--shard-params`` split along their
    first axis over the devices where it divides evenly (as FSDP / ZeRO-3 do; the step then
    all-gathers each weight before using it).
    """
    lr = args.lr if args.lr is not None else (1e-2 if args.method == "backprop" else 1e-3)
    tx = optax.adam(lr)
    graphdef = nnx.graphdef(
        nnx.eval_shape(lambda: Scorer(args.features, args.hidden, rngs=nnx.Rngs(0)))
    )
    replicated = NamedSharding(mesh, P())

    def init():
        model = Scorer(args.features, args.hidden, rngs=nnx.Rngs(args.seed))
        params = nnx.state(model, nnx.Param)
        return params, tx.init(params)

    def place(leaf):
        split = args.shard_params and leaf.ndim and leaf.shape[0] % mesh.size == 0
        return NamedSharding(mesh, P("batch")) if split else replicated

    shardings = jax.tree.map(place, jax.eval_shape(init))
    params, opt_state = jax.jit(init, out_shardings=shardings)()

    def gather(params):
        # With --shard-params each weight is gathered before use (the all-gathers of FSDP).
        if not args.shard_params:
            return params
        if mesh.axis_types[0] == AxisType.Explicit:
            return jax.tree.map(lambda p: jax.sharding.reshard(p, P()), params)
        return jax.lax.with_sharding_constraint(params, replicated)

    def loss_fn(params, x, y):
        scores = nnx.merge(graphdef, gather(params))(x)  # [B, n]
        losses = spearman_loss(
            scores, y, regularization_strength=args.strength, target_regularization_strength=0
        )
        return jnp.mean(losses)

    if args.method == "backprop":
        value_and_grad = jax.value_and_grad(loss_fn)

        def grad_fn(key, params, x, y):
            return value_and_grad(params, x, y)

    else:  # the same signature, a forward-gradient estimate
        grad_fn = forward_value_and_grad(loss_fn, num_tangents=args.num_tangents)

    @functools.partial(jax.jit, out_shardings=(*shardings, replicated))
    def train_step(params, opt_state, x, y, key):
        loss, grads = grad_fn(key, params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return params, opt_state, train_step


COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")


def count_collectives(hlo: str) -> dict:
    """How many of each collective a compiled HLO module has (async ``-start`` forms included)."""
    return {c: len(re.findall(rf"\b{c}(?:-start)?\(", hlo)) for c in COLLECTIVES}


def train(args) -> dict:
    """Trains for ``args.steps`` steps; returns the losses, the final parameters and timings."""
    dtype = np.float64 if args.x64 else np.float32
    if args.batch % jax.device_count():
        raise ValueError(
            f"--batch must be a multiple of the number of devices, got --batch={args.batch} "
            f"for {jax.device_count()} devices"
        )
    # Explicit axes (jax.make_mesh's default): every softops op runs on each batch shard. With
    # Auto axes jit's partitioner does the same from the shardings of the arguments.
    axis_type = AxisType.Explicit if args.axis_type == "explicit" else AxisType.Auto
    mesh = jax.make_mesh((jax.device_count(),), ("batch",), axis_types=(axis_type,))
    rows = NamedSharding(mesh, P("batch"))
    with jax.set_mesh(mesh):
        params, opt_state, train_step = build(args, mesh)
        key = jax.random.key(args.seed)  # replicated: the same tangents on every device
        t0 = time.perf_counter()
        x, y = global_batch(0, rows, args, dtype)
        step_fn = train_step.lower(params, opt_state, x, y, key).compile()
        t1 = time.perf_counter()
        losses = []
        for step in range(args.steps):
            if step:
                x, y = global_batch(step, rows, args, dtype)
            params, opt_state, loss = step_fn(
                params, opt_state, x, y, jax.random.fold_in(key, step)
            )
            losses.append(float(loss))  # the loss is replicated: every process can read it
            if jax.process_index() == 0 and (step % 10 == 0 or step == args.steps - 1):
                print(f"step {step:4d}  loss {losses[-1]:.4f}", flush=True)
        t2 = time.perf_counter()
        # Every process gets a full copy (a no-op for replicated parameters).
        params = jax.jit(lambda p: p, out_shardings=NamedSharding(mesh, P()))(params)
    flat = {
        jax.tree_util.keystr(path, simple=True, separator="/"): np.asarray(leaf)
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    }
    return {
        "losses": losses,
        "params": flat,
        "compile_seconds": t1 - t0,
        "train_seconds": t2 - t1,
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "method": args.method,
        "collectives": count_collectives(step_fn.as_text()),
        "hlo": step_fn.as_text(),
    }


def main(argv=None) -> dict:
    """Runs the example from the command line."""
    args = parse_args(argv)
    initialize(args)
    if jax.process_index() == 0:
        print(
            f"{jax.process_count()} process(es), {jax.device_count()} devices "
            f"({jax.local_device_count()} local, {jax.devices()[0].platform}), "
            f"method {args.method}, global batch {args.batch} lists of {args.items} items",
            flush=True,
        )
    res = train(args)
    if jax.process_index() == 0:
        comm = ", ".join(f"{v} {k}" for k, v in res["collectives"].items() if v) or "none"
        print(
            f"compiled in {res['compile_seconds']:.2f} s, {args.steps} steps in "
            f"{res['train_seconds']:.2f} s; collectives in the step: {comm}"
        )
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        np.savez(args.out / f"params_{jax.process_index()}.npz", **res["params"])
        if jax.process_index() == 0:
            keys = ("losses", "compile_seconds", "train_seconds", "processes", "devices")
            keys += ("method", "collectives")
            summary = {k: res[k] for k in keys}
            (args.out / "result.json").write_text(json.dumps(summary, indent=1))
            (args.out / "train_step.hlo.txt").write_text(res["hlo"])
    return res


if __name__ == "__main__":
    main()
