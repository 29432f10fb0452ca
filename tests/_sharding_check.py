"""Runs every op on a batch sharded over 8 simulated CPU devices (a subprocess of test_sharding).

``python -m tests._sharding_check MODE`` with MODE ``explicit``, ``auto`` or ``shard_map``
(``errors``: the item-axis refusal and a 2-D mesh; ``outside``: Explicit-sharded inputs used
outside ``jax.set_mesh``) prints one JSON line: per op, whether the sharded value and
gradient equal the unsharded ones, the collectives in the compiled HLO, and the output sharding.
"""

from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import json  # noqa: E402
import re  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import softops  # noqa: E402
from tests._sharding_check_ops import AUX, OPS, SHARD_LOCAL_RANDOM, X  # noqa: E402

COLLECTIVES = ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter")


def _value_and_grad(op):
    def f(x, a):
        out = op(x, a)
        cot = a["u"][:, : out.shape[-1]] if out.ndim == 2 else a["u"][:, 0]
        return out, jax.grad(lambda x: jnp.sum(op(x, a) * cot))(x)

    return f


def _spec(x) -> str:
    """``x``'s partition spec as ``P('b', None)`` (jax 0.8 prints ``PartitionSpec(...)``)."""
    return "P" + repr(tuple(x.sharding.spec))


def _collectives(text):
    return {c: len(re.findall(re.escape(c) + r"[-a-z]*\(", text)) for c in COLLECTIVES}


def _item_axis_error() -> dict:
    """Sharding the item axis (not a batch axis) is refused with a ValueError naming it under an
    Explicit mesh; under an Auto mesh it is gathered, with a warning, and the values are right."""
    out: dict = {"item_axis_error": None}
    mesh = jax.make_mesh((8,), ("b",), axis_types=(AxisType.Explicit,))
    x = jax.device_put(np.zeros((2, 16), np.float32), NamedSharding(mesh, P(None, "b")))
    with jax.set_mesh(mesh):
        try:
            jax.jit(softops.soft_rank)(x)
        except ValueError as e:
            out["item_axis_error"] = str(e)
    auto = jax.make_mesh((8,), ("b",), axis_types=(AxisType.Auto,))
    x = X[:2, :8]
    xi = jax.device_put(x, NamedSharding(auto, P(None, "b")))
    with jax.set_mesh(auto), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = jax.jit(softops.soft_rank)(xi)
    out["auto_item_axis"] = {
        "value_equal": bool(np.allclose(got, softops.soft_rank(x), rtol=1e-6, atol=1e-6)),
        "warning": next((str(w.message) for w in caught), None),
    }
    return out


def _outside_mesh_context() -> dict:
    """An input sharded over an Explicit mesh, used outside ``jax.set_mesh``: every op runs
    where the batch lives (eager and jitted) and equals the unsharded result."""
    mesh = jax.make_mesh((8,), ("b",), axis_types=(AxisType.Explicit,))
    xs = jax.device_put(X, NamedSharding(mesh, P("b", None)))
    aux = {k: jax.device_put(v, NamedSharding(mesh, P("b"))) for k, v in AUX.items()}
    results = {}
    for name, op in OPS.items():
        want = op(X, AUX)
        got, got_jit = op(xs, aux), jax.jit(op)(xs, aux)
        results[name] = {
            "value_equal": bool(np.allclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=True))
            and bool(np.allclose(got_jit, want, rtol=1e-5, atol=1e-6, equal_nan=True)),
            "out_spec": str(got.sharding.spec),
        }
    return results


def _two_dim_mesh() -> dict:
    """A 3-D batch over both axes of a 4 x 2 mesh: equal values and no collectives."""
    mesh = jax.make_mesh((4, 2), ("x", "y"), axis_types=(AxisType.Explicit,) * 2)
    x = X[:, :12].reshape(4, 4, 12)
    xs = jax.device_put(x, NamedSharding(mesh, P("x", "y", None)))
    f = jax.jit(lambda x: jax.grad(lambda x: jnp.sum(softops.soft_rank(x) ** 2))(x))
    with jax.set_mesh(mesh):
        compiled = f.lower(xs).compile()
        got = compiled(xs)
    return {
        "mesh2d": {
            "value_equal": bool(np.array_equal(got, f(x))),
            "collectives": _collectives(compiled.as_text()),
            "out_spec": _spec(got),
        }
    }


def main(mode: str) -> None:
    if mode == "errors":
        print(json.dumps({**_item_axis_error(), **_two_dim_mesh()}))
        return
    if mode == "outside":
        print(json.dumps(_outside_mesh_context()))
        return
    results = {}
    types = (AxisType.Auto,) if mode == "auto" else (AxisType.Explicit,)
    mesh = jax.make_mesh((8,), ("b",), axis_types=types)
    x_sharded = jax.device_put(X, NamedSharding(mesh, P("b", None)))
    aux_sharded = {k: jax.device_put(v, NamedSharding(mesh, P("b"))) for k, v in AUX.items()}
    for name, op in OPS.items():
        f = _value_and_grad(op)
        want_out, want_grad = jax.jit(f)(X, AUX)
        if mode == "shard_map" and name in SHARD_LOCAL_RANDOM:
            # Inside shard_map the op draws the noise of its shard's shape from the key it is
            # given, as jax.random does: the reference is the op on each shard's rows.
            per = X.shape[0] // 8
            parts = [
                jax.jit(f)(X[i : i + per], {k: v[i : i + per] for k, v in AUX.items()})
                for i in range(0, X.shape[0], per)
            ]
            want_out = np.concatenate([np.asarray(o) for o, _ in parts])
            want_grad = np.concatenate([np.asarray(g) for _, g in parts])
        with jax.set_mesh(mesh):
            g = (
                jax.shard_map(f, in_specs=(P("b"), P("b")), out_specs=P("b"))
                if mode == "shard_map"
                else f
            )
            compiled = jax.jit(g).lower(x_sharded, aux_sharded).compile()
            out, grad = compiled(x_sharded, aux_sharded)
        results[name] = {
            "value_equal": bool(np.allclose(out, want_out, rtol=1e-5, atol=1e-6, equal_nan=True)),
            "grad_equal": bool(np.allclose(grad, want_grad, rtol=1e-5, atol=1e-6)),
            "collectives": _collectives(compiled.as_text()),
            "out_spec": _spec(out),
        }
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
