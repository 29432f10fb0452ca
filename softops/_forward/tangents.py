"""Random tangents for forward gradients (private): parameter tangents and per-example tangents.

Parameter tangents (`sample_float_leaves`) are shaped like parameter leaves; every element is
a pure function of (leaf seed, element index) (see ``noise``). Per-example activity tangents
(`example_tangents`) index their elements by the *global* example index, so a batch split
over devices (``shard_map``, or ``jit`` with a sharded batch) draws, on each device, exactly the
slice of the tangent that one device would draw for the whole batch: no communication, and the
same estimate as on one device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from softops import _checks
from softops._checks import compute_dtype
from softops._forward import noise

Distribution = Literal["rademacher", "normal", "orthogonal"]
DISTRIBUTIONS = ("rademacher", "normal", "orthogonal")
KURTOSIS = {"rademacher": 1, "normal": 3}


def is_float(leaf) -> bool:
    """Whether a leaf is a real floating-point array; raises for complex leaves."""
    dtype = jnp.result_type(leaf)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            f"forward gradients support real parameters only, got a leaf of dtype {dtype}"
        )
    return jnp.issubdtype(dtype, jnp.floating)


def check_num_tangents(num_tangents) -> int:
    """Returns ``num_tangents`` as an int >= 1, else raises naming the argument."""
    return _checks.integer(num_tangents, "num_tangents", minimum=1)


def float0_zeros(leaf, prefix=()) -> np.ndarray:
    """The ``float0`` zero tangent of a non-float leaf (with optional leading axes)."""
    return np.zeros(prefix + np.shape(leaf), dtype=jax.dtypes.float0)


def sample_float_leaves(
    key, leaves: Sequence, ids: Sequence[int], num_leaves: int, num_tangents: int, distribution: str
) -> list[jax.Array]:
    """Tangents ``[K, *leaf.shape]`` for the float ``leaves`` (``ids``: positions in the tree)."""
    seeds = jax.random.bits(key, (num_leaves + 1, 2), jnp.uint32)
    k = num_tangents
    if distribution != "orthogonal":
        gen = noise.rademacher if distribution == "rademacher" else noise.normal
        return [gen(seeds[i], (k,) + np.shape(x), jnp.result_type(x)) for i, x in zip(ids, leaves)]
    sizes = [math.prod(np.shape(x)) for x in leaves]
    d = sum(sizes)
    if k > d:
        raise ValueError(
            f"`num_tangents` must be <= d = {d} (the number of float parameters) for "
            f"distribution='orthogonal', got num_tangents={k}"
        )
    dtype = compute_dtype(max((jnp.result_type(x) for x in leaves), key=lambda t: t.itemsize))
    gauss = noise.normal(seeds[num_leaves], (d, k), dtype)
    q, r = jnp.linalg.qr(gauss)  # Haar column space; signs of diag(r) fixed below.
    sign = jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(dtype)[None, :]
    v = (q * sign * math.sqrt(d)).T  # [K, d]
    out, start = [], 0
    for x, n in zip(leaves, sizes):
        out.append(v[:, start : start + n].reshape((k,) + np.shape(x)).astype(jnp.result_type(x)))
        start += n
    return out


def _uniform_grid(bits: jax.Array, nbits: int) -> jax.Array:
    return (bits.astype(jnp.float32) + 0.5) * jnp.float32(2.0**-nbits)


def _noise(idx: jax.Array, seeds: jax.Array, distribution: str) -> jax.Array:
    """float32 noise from uint32 element indices: the same law and bits as ``noise``."""
    h1 = noise.hash_u32(idx, seeds[0], seeds[1])
    one = jnp.uint32(0x3F800000)  # bit pattern of float32 1.0
    if distribution == "rademacher":
        return lax.bitcast_convert_type((h1 & jnp.uint32(0x80000000)) | one, jnp.float32)
    h2 = noise.hash_u32(idx, seeds[1], seeds[0] ^ jnp.uint32(noise._GOLDEN))
    u1 = _uniform_grid(h1 >> 8, 24)
    u = _uniform_grid((h2 >> 8) & jnp.uint32(0x7FFFFF), 23)
    sign = lax.bitcast_convert_type((h2 & jnp.uint32(0x80000000)) | one, jnp.float32)
    r = jnp.sqrt(jnp.float32(-2.0) * jnp.log(u1))
    return r * sign * noise._cos_quarter(jnp.float32(math.pi / 2) * u)


def example_tangents(
    seeds: jax.Array,
    like: jax.ShapeDtypeStruct,
    num_tangents: int,
    distribution: str,
    *,
    batch_offset=0,
    depends_on=None,
    batch_total: int | None = None,
    sharding=None,
) -> jax.Array:
    """Tangents ``[K, B, *rest]`` for an activity ``like`` of shape ``[B, *rest]``.

    Element ``(k, n, j)`` is noise at index ``(k * batch_total + batch_offset + n) * R + j`` (``R``
    the size of ``rest``): with ``batch_offset = 0`` and ``batch_total = B`` this equals
    ``noise``'s draw for the shape ``[K, B, *rest]``; a shard of examples ``[o, o + B)`` of a
    batch of ``batch_total`` gets exactly its slice of the whole-batch draw.
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

    def iota(dim):
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
    return _noise(idx, seeds, distribution).astype(like.dtype)


def key_seeds(key) -> jax.Array:
    """A ``uint32[2]`` seed pair from a PRNG key (typed or raw), by the integer hash (no threefry).

    Distinct keys give distinct seed pairs with overwhelming probability; streams derived with
    `derive_seeds` from one pair are independent hash streams.
    """
    if jnp.issubdtype(jnp.result_type(key), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    data = jnp.ravel(jnp.asarray(key)).astype(jnp.uint32)
    s0, s1 = jnp.uint32(0x243F6A88), jnp.uint32(0x85A308D3)  # digits of pi
    for i in range(data.shape[0]):
        s0, s1 = (
            noise.hash_u32(data[i], s0, s1),
            noise.hash_u32(data[i], s1, s0 ^ jnp.uint32(noise._GOLDEN)),
        )
    return jnp.stack([s0, s1])


def derive_seeds(seeds: jax.Array, count: int) -> jax.Array:
    """``count`` seed pairs ``uint32[count, 2]`` derived from one pair."""
    idx = lax.iota(jnp.uint32, 2 * count)
    return noise.hash_u32(idx, seeds[0], seeds[1]).reshape(count, 2)


def nan_flags(x, batch: int):
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
