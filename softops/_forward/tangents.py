"""Random tangents for forward gradients and the K-tangent JVP (private).

Parameter tangents (``sample_float_leaves``) are shaped like parameter leaves; every element is a
pure function of (leaf seed, element index) (see ``noise``). Per-example activity tangents
(``example_tangents``) index their elements by the *global* example index, so a batch split over
devices (``shard_map``, or ``jit`` with a sharded batch) draws, on each device, exactly the slice
of the tangent that one device would draw for the whole batch: no communication, and the same
estimate as on one device. ``jvp_tangents`` pushes ``K`` tangents through one function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from softops import _checks
from softops._checks import compute_dtype
from softops._forward import noise

#: The distributions of parameter tangents: the i.i.d. laws of ``noise``, or orthogonal directions.
Distribution = Literal[noise.IidDistribution, "orthogonal"]
DISTRIBUTIONS: tuple[str, ...] = get_args(Distribution)


def check_num_tangents(num_tangents: Any) -> int:
    """Returns ``num_tangents`` as an int >= 1, else raises naming the argument."""
    return _checks.integer(num_tangents, "num_tangents", minimum=1)


def sample_float_leaves(
    key: jax.Array,
    leaves: Sequence[Any],
    float_ids: Sequence[int],
    num_leaves: int,
    num_tangents: int,
    distribution: Distribution,
) -> list[jax.Array]:
    """Tangents ``[K, *leaf.shape]`` for the float ``leaves`` at positions ``float_ids`` of a tree.

    Leaf ``i`` of the tree (of ``num_leaves``) draws from stream ``i``; orthogonal directions from
    stream ``num_leaves``.
    """
    seeds = jax.random.bits(key, (num_leaves + 1, 2), jnp.uint32)
    k = num_tangents
    if distribution != "orthogonal":
        return [
            noise.sample(seeds[i], (k,) + np.shape(x), jnp.result_type(x), distribution)
            for i, x in zip(float_ids, leaves)
        ]
    sizes = [math.prod(np.shape(x)) for x in leaves]
    d = sum(sizes)
    if k > d:
        raise ValueError(
            f"`num_tangents` must be <= d = {d} (the number of float parameters) for "
            f"distribution='orthogonal', got num_tangents={k}"
        )
    dtype = compute_dtype(max((jnp.result_type(x) for x in leaves), key=lambda t: t.itemsize))
    gauss = noise.sample(seeds[num_leaves], (d, k), dtype, "normal")
    q, r = jnp.linalg.qr(gauss)  # Haar column space; signs of diag(r) fixed below.
    sign = jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(dtype)[None, :]
    v = (q * sign * math.sqrt(d)).T  # [K, d]
    out, start = [], 0
    for x, n in zip(leaves, sizes):
        out.append(v[:, start : start + n].reshape((k,) + np.shape(x)).astype(jnp.result_type(x)))
        start += n
    return out


def example_tangents(
    seeds: jax.Array,
    like: jax.ShapeDtypeStruct,
    num_tangents: int,
    distribution: noise.IidDistribution,
    *,
    batch_offset: int | jax.Array = 0,
    depends_on: jax.Array | None = None,
    batch_total: int | None = None,
    sharding: jax.sharding.PartitionSpec | None = None,
) -> jax.Array:
    """Tangents ``[K, B, *rest]`` for an activity ``like`` of shape ``[B, *rest]``.

    Element ``(k, n, j)`` is noise at index ``(k * batch_total + batch_offset + n) * R + j`` (``R``
    the size of ``rest``): with ``batch_offset = 0`` and ``batch_total = B`` this equals
    ``noise.sample``'s draw for the shape ``[K, B, *rest]``; a shard of examples ``[o, o + B)`` of
    a batch of ``batch_total`` gets exactly its slice of the whole-batch draw.
    """
    shape = (num_tangents,) + tuple(like.shape)
    b = shape[1]
    rest = math.prod(shape[2:])
    total = b if batch_total is None else batch_total
    if num_tangents * total * rest > noise.MAX_STREAM:
        raise ValueError(
            f"an activity times `num_tangents` must have at most 2**32 elements, got "
            f"{num_tangents} x {total} x {rest}"
        )
    kwargs = {} if sharding is None else {"out_sharding": sharding}

    def iota(dim: int) -> jax.Array:
        return lax.broadcasted_iota(jnp.uint32, shape, dim, **kwargs)

    example = iota(1) + jnp.asarray(batch_offset).astype(jnp.uint32)
    if depends_on is not None:  # zeros, a data dependency only: see nan_flags
        example = example + depends_on.reshape((1, b) + (1,) * (len(shape) - 2))
    idx = (iota(0) * jnp.uint32(total) + example) * jnp.uint32(rest)
    if len(shape) > 2:
        within = iota(2)
        for dim in range(3, len(shape)):
            within = within * jnp.uint32(shape[dim]) + iota(dim)
        idx = idx + within
    return noise.at_indices(idx, seeds, distribution).astype(like.dtype)


def nan_flags(x: Any, batch: int) -> jax.Array | None:
    """A ``uint32[B]`` of zeros (ones where example ``n`` of ``x`` starts with a NaN).

    Added to the example index of the tangents, it makes a block's tangents data-dependent on its
    input, per example (no communication when the batch is sharded): XLA then samples them only
    once the block starts, instead of hoisting the sampling of every block to the beginning and
    keeping all blocks' tangents alive (temporary memory growing with depth).
    """
    if not isinstance(x, jax.Array) or x.ndim == 0 or x.shape[0] != batch:
        return None
    first = x[(slice(None),) + (0,) * (x.ndim - 1)]
    return (first != first).astype(jnp.uint32)


def jvp_tangents(
    fn: Callable[..., tuple[Any, Any]],
    primals: Sequence[Any],
    tangents: Sequence[jax.Array],
    num_tangents: int,
) -> tuple[Any, jax.Array, Any]:
    """``fn(*primals) -> (out, aux)`` and the derivatives of ``out`` along ``K`` tangents.

    ``tangents[i]`` is ``[K, *primals[i].shape]``. Returns ``(out, out_dots, aux)`` with
    ``out_dots`` of shape ``[K, *out.shape]``: one ``jax.jvp`` for ``K = 1``, else ``jax.vmap``
    of it over the tangents (the primal computed once).
    """

    def along(*tans: jax.Array) -> tuple[Any, Any, Any]:
        return jax.jvp(fn, tuple(primals), tuple(tans), has_aux=True)

    if num_tangents == 1:
        out, out_dot, aux = along(*(t[0] for t in tangents))
        return out, out_dot[None], aux
    return jax.vmap(along, out_axes=(None, 0, None))(*tangents)
