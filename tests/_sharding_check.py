"""Runs every op on a batch sharded over 8 simulated CPU devices (a subprocess of test_sharding).

``python -m tests._sharding_check MODE`` with MODE ``explicit``, ``auto`` or ``shard_map``
prints one JSON line: per op, whether the sharded value and gradient equal the unsharded ones,
the collectives in the compiled HLO, and the output sharding.
"""

from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import json  # noqa: E402
import re  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import softops  # noqa: E402
from softops import losses, routing  # noqa: E402

COLLECTIVES = ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter")

rng = np.random.default_rng(0)
X = rng.standard_normal((16, 12)).astype(np.float32)
T = rng.standard_normal((16, 12)).astype(np.float32)
W = rng.uniform(0.5, 2.0, (16, 12)).astype(np.float32)
MASK = rng.random((16, 12)) > 0.2
MASK[:, :3] = True
LABELS = rng.integers(0, 12, 16).astype(np.int32)
U = rng.standard_normal((16, 12)).astype(np.float32)

OPS = {
    "soft_rank_l2": lambda x, a: softops.soft_rank(x, regularization_strength=0.3),
    "soft_rank_kl_where": lambda x, a: softops.soft_rank(x, regularization="kl", where=a["mask"]),
    "soft_sort_l2": lambda x, a: softops.soft_sort(x, regularization_strength=0.5),
    "soft_sort_kl_desc": lambda x, a: softops.soft_sort(x, regularization="kl", descending=True),
    "soft_rank_straight_through": lambda x, a: softops.soft_rank(x, straight_through=True),
    "projection_kl": lambda x, a: softops.projection_permutahedron(x, a["w"], regularization="kl"),
    "isotonic_l2": lambda x, a: softops.isotonic_l2(x, a["t"]),
    "isotonic_kl": lambda x, a: softops.isotonic_kl(x, a["t"]),
    "isotonic_regression": lambda x, a: softops.isotonic_regression(x, weights=a["w"]),
    "soft_topk_mask": lambda x, a: softops.soft_topk_mask(x, 3, temperature=0.3),
    "soft_topk_mask_epsilon_where": lambda x, a: softops.soft_topk_mask(x, 2, where=a["mask"]),
    "soft_topk_mask_straight_through": lambda x, a: softops.soft_topk_mask(
        x, 2, straight_through=True
    ),
    "soft_topk_straight_through": lambda x, a: softops.soft_topk(
        x, 2, epsilon=0.05, straight_through=True
    )[0],
    "spearman_loss": lambda x, a: losses.spearman_loss(x, a["t"]),
    "soft_ndcg": lambda x, a: losses.soft_ndcg(x, jnp.abs(a["t"]), k=5),
    "soft_topk_rank_loss": lambda x, a: losses.soft_topk_rank_loss(x, a["labels"], k=2),
    "soft_topk_mask_loss": lambda x, a: losses.soft_topk_mask_loss(x, a["labels"], k=2),
    "soft_quantile": lambda x, a: losses.soft_quantile(x, jnp.asarray([0.25, 0.5])),
    "soft_lts_loss": lambda x, a: losses.soft_lts_loss(x, where=a["mask"]),
    "soft_topk_newton": lambda x, a: softops.soft_topk(x, 3, epsilon=0.05)[0],
    "soft_topk_newton_where": lambda x, a: softops.soft_topk(
        x, 2, temperature=0.2, largest=False, where=a["mask"]
    )[1].sum(-2),
    # tol well below the comparison's rtol 1e-5: float32 sums round differently on 2 rows
    # than on 16, and at the default tol (3.5e-4) a row stops one iteration apart (6e-5 off).
    "soft_topk_sinkhorn": lambda x, a: softops.soft_topk(
        x, 3, epsilon=0.5, solver="sinkhorn", tol=1e-5
    )[0],
    "soft_topk_mask_l2_where": lambda x, a: softops.soft_topk_mask(
        x, 3, temperature=0.5, where=a["mask"], regularization="l2"
    ),
    "soft_topk_mask_p43_straight_through": lambda x, a: softops.soft_topk_mask(
        x, 2, temperature=0.4, regularization="p=4/3", straight_through=True
    ),
    "soft_topk_magnitude_p32": lambda x, a: softops.soft_topk_magnitude(
        x, 3, temperature=0.3, regularization="p=3/2"
    ),
    # routing: 8 groups of 2 tokens (one group per device), or 16 groups of one token
    "token_choice": lambda x, a: routing.token_choice(
        x.reshape(8, 2, 12), 2, capacity=1, temperature=0.5
    ).combine.reshape(16, 12),
    "expert_choice": lambda x, a: routing.expert_choice(
        x.reshape(8, 2, 12), 1, temperature=0.5
    ).combine.reshape(16, 12),
    "routing_losses": lambda x, a: (
        routing.load_balancing_loss(x.reshape(16, 1, 12), a["mask"].reshape(16, 1, 12))
        + routing.router_z_loss(x.reshape(16, 1, 12))
    ),
    "sinkhorn_plan": lambda x, a: softops.sinkhorn(
        (x[..., :, None] - jnp.linspace(-1, 1, 4)) ** 2, epsilon=0.5
    ).plan.sum(-1),
}


AUX = {"t": T, "w": W, "mask": MASK, "labels": LABELS, "u": U}


def _value_and_grad(op):
    def f(x, a):
        out = op(x, a)
        cot = a["u"][:, : out.shape[-1]] if out.ndim == 2 else a["u"][:, 0]
        return out, jax.grad(lambda x: jnp.sum(op(x, a) * cot))(x)

    return f


def _collectives(text):
    return {c: len(re.findall(re.escape(c) + r"[-a-z]*\(", text)) for c in COLLECTIVES}


def _item_axis_error() -> dict:
    """Sharding the item axis (not a batch axis) is refused with a ValueError naming it."""
    mesh = jax.make_mesh((8,), ("b",), axis_types=(AxisType.Explicit,))
    x = jax.device_put(np.zeros((2, 16), np.float32), NamedSharding(mesh, P(None, "b")))
    with jax.set_mesh(mesh):
        try:
            jax.jit(softops.soft_rank)(x)
        except ValueError as e:
            return {"item_axis_error": str(e)}
    return {"item_axis_error": None}


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
            "out_spec": str(got.sharding.spec),
        }
    }


def main(mode: str) -> None:
    if mode == "errors":
        print(json.dumps({**_item_axis_error(), **_two_dim_mesh()}))
        return
    results = {}
    types = (AxisType.Auto,) if mode == "auto" else (AxisType.Explicit,)
    mesh = jax.make_mesh((8,), ("b",), axis_types=types)
    x_sharded = jax.device_put(X, NamedSharding(mesh, P("b", None)))
    aux_sharded = {k: jax.device_put(v, NamedSharding(mesh, P("b"))) for k, v in AUX.items()}
    for name, op in OPS.items():
        f = _value_and_grad(op)
        want_out, want_grad = jax.jit(f)(X, AUX)
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
            "out_spec": str(out.sharding.spec),
        }
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
