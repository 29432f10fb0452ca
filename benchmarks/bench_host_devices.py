"""Batched rows on every CPU core: the batch sharded over host devices against one device.

    python benchmarks/bench_host_devices.py --json benchmarks/results/bench_host_devices.json
    python benchmarks/bench_host_devices.py --quick       # one small shape (CI smoke)

XLA's CPU runtime runs one device's loops one after another, so softops' sequential solver uses
one core for a batch of rows however many the machine has. Given several host devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=D``, set before JAX starts) and a batch
sharded over them, every device runs its own rows, on its own thread, with no collective
(softops' ops are batch-local).

Each configuration runs in a fresh interpreter (the device count is fixed when JAX starts): one
device (XLA's default threads) and ``D`` devices for each ``--devices`` count, on every core the
process has. Per point: the median of interleaved timings (``block_until_ready``, after a
warm-up) of the jitted forward+backward, ``jax.grad`` of ``sum(op(x) * u)``, with ``x`` placed
with ``NamedSharding(mesh, P("batch"))``; and a SHA-256 of the gradient's bytes, so the table can
say whether every configuration computed the same bits.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ((256, 1000), (32, 10_000), (4096, 16))
OPS = (("soft_rank", "l2"), ("soft_rank", "kl"), ("soft_sort", "l2"), ("soft_sort", "kl"))


def child(devices: int, shapes, repeats: int) -> list[dict]:
    """Time every point in this interpreter (``devices`` host devices already configured)."""
    sys.path.insert(0, str(ROOT))  # this checkout's softops
    import jax
    import jax.numpy as jnp
    import numpy as np
    from _timing import medians  # benchmarks/, the script's folder
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import softops

    mesh = jax.make_mesh((devices,), ("batch",))
    rows = []
    for batch, n in shapes:
        rng = np.random.default_rng(0)
        x = jax.device_put(
            jnp.asarray(rng.standard_normal((batch, n)), jnp.float32),
            NamedSharding(mesh, P("batch")),
        )
        u = jnp.asarray(rng.standard_normal((batch, n)), jnp.float32)
        fns = {}
        for op, reg in OPS:
            f = getattr(softops, op)
            fns[(op, reg)] = jax.jit(
                jax.grad(lambda x, f=f, reg=reg: jnp.sum(f(x, regularization=reg) * u))
            )
        digests = {
            key: hashlib.sha256(np.asarray(g(x)).tobytes()).hexdigest() for key, g in fns.items()
        }
        for (op, reg), seconds in medians(fns, (x,), repeats, warmup=1).items():
            rows.append(
                {
                    "batch": batch,
                    "n": n,
                    "op": op,
                    "reg": reg,
                    "devices": devices,
                    "ms": 1e3 * seconds,
                    "sha256": digests[(op, reg)],
                }
            )
    return rows


def run_config(devices: int, shapes, repeats: int) -> list[dict]:
    env = dict(os.environ)
    flags = env.get("XLA_FLAGS", "")
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    spec = json.dumps({"devices": devices, "shapes": shapes, "repeats": repeats})
    out = subprocess.run(
        [sys.executable, __file__, "--child", spec],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small shape, few repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed samples per callable")
    parser.add_argument(
        "--devices", type=int, nargs="+", default=None,
        help="host device counts to compare with one device (default: the process's cores)",
    )  # fmt: skip
    parser.add_argument("--json", default=None, metavar="PATH", help="write the results here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        spec = json.loads(args.child)
        rows = child(spec["devices"], [tuple(s) for s in spec["shapes"]], spec["repeats"])
        print(json.dumps(rows))
        return
    cores = len(os.sched_getaffinity(0))
    counts = sorted({1, *(args.devices or [cores])})
    repeats = args.repeats or (3 if args.quick else 21)
    shapes = [(8, 64)] if args.quick else [list(s) for s in SHAPES]
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": cores,
        "python": platform.python_version(),
        "repeats": repeats,
        "devices": counts,
        "load_avg": os.getloadavg()[0],
    }
    rows = []
    for devices in counts:
        rows += run_config(devices, shapes, repeats)
    meta["load_avg_end"] = os.getloadavg()[0]
    import jax  # the parent's version (the children import the same one)

    meta["jax"] = jax.__version__
    base = {(r["batch"], r["n"], r["op"], r["reg"]): r for r in rows if r["devices"] == 1}
    for r in rows:
        b = base[(r["batch"], r["n"], r["op"], r["reg"])]
        r["speedup"] = b["ms"] / r["ms"]
        r["same_bits"] = r["sha256"] == b["sha256"]
        print(
            f"{r['batch']}x{r['n']} {r['op']} {r['reg']}: {r['devices']} device(s)"
            f" {r['ms']:.2f} ms, {r['speedup']:.2f}x one device, same bits: {r['same_bits']}",
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
