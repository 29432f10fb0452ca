"""A fast, exact, stable argsort along the last axis (private).

XLA's CPU sort is slow for floating-point keys and slower still with a second (index) operand.
A single unsigned-integer operand is 5-10x faster, so on CPU the rows are sorted as integers:

- a float is mapped to an unsigned key with the same order (flip every bit of a negative float,
  the sign bit of a non-negative one), after ``-0.0 -> +0.0`` and ``NaN -> +NaN``;
- float32: ``key << 32 | index`` in one uint64 operand: one sort gives the stable argsort;
- float64: two stable passes of the same packed sort (least significant 32 bits of the key
  first, then the most significant 32 bits), an LSD radix sort with two 32-bit digits.

Semantics, identical to ``jnp.argsort(x, stable=True)`` for ``descending=False``: ties keep their
index order, ``-0.0`` and ``+0.0`` are equal, NaN sorts after ``+inf``. ``descending=True`` is
the stable descending order: ties still keep their index order, NaN still sorts last. Entries
with ``last=True`` sort after every other entry of their row (in index order).

Other backends use one two-operand ``lax.sort`` of the float keys, which is fast there.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

MAX_ROW = 2**32


def _unsigned_key(x: jax.Array) -> jax.Array:
    """Order-preserving unsigned integer key of a float32/float64 array (same width)."""
    bits = 32 if x.dtype == jnp.float32 else 64
    utype = jnp.uint32 if bits == 32 else jnp.uint64
    x = jnp.where(x == 0, jnp.zeros_like(x), x)  # -0.0 -> +0.0
    x = jnp.where(jnp.isnan(x), jnp.full_like(x, jnp.nan), x)  # one NaN, positive
    u = lax.bitcast_convert_type(x, utype)
    sign = utype(1 << (bits - 1))
    return jnp.where(u >= sign, ~u, u | sign)


def _packed_sort(hi: jax.Array, lo: jax.Array) -> jax.Array:
    """Sorts rows by ``(hi, lo)`` (uint32 each, ``lo`` an index) with one uint64 operand."""
    packed = (hi.astype(jnp.uint64) << 32) | lo.astype(jnp.uint64)
    return (lax.sort(packed, dimension=packed.ndim - 1) & 0xFFFFFFFF).astype(jnp.int32)


def _argsort_cpu(x: jax.Array, last: jax.Array | None, descending: bool) -> jax.Array:
    # uint64 exists only in x64 mode; the packed sort needs it whatever the user's setting.
    with jax.enable_x64(True):
        return _argsort_cpu_x64(x, last, descending)


def _argsort_cpu_x64(x: jax.Array, last: jax.Array | None, descending: bool) -> jax.Array:
    key = _unsigned_key(x)
    nan = jnp.isnan(x)
    if descending:  # reversed order, but NaN (the largest key) stays last
        key = jnp.where(nan, key, ~key)
    if last is not None:
        key = jnp.where(last, jnp.full_like(key, jnp.iinfo(key.dtype).max), key)  # after all
    iota = lax.broadcasted_iota(jnp.uint32, x.shape, x.ndim - 1)
    if key.dtype == jnp.uint32:
        return _packed_sort(key, iota)
    low = (key & 0xFFFFFFFF).astype(jnp.uint32)
    high = (key >> 32).astype(jnp.uint32)
    first = _packed_sort(low, iota)
    high = jnp.take_along_axis(high, first, axis=-1)
    second = _packed_sort(high, iota)
    return jnp.take_along_axis(first, second, axis=-1)


def _argsort_default(x: jax.Array, last: jax.Array | None, descending: bool) -> jax.Array:
    key = x
    if descending:
        key = jnp.where(jnp.isnan(x), x, -x)
    key = jnp.where(key == 0, jnp.zeros_like(key), key)
    if last is not None:
        rank = last.astype(jnp.int32)
        iota = lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
        _, _, perm = lax.sort((rank, key, iota), dimension=x.ndim - 1, num_keys=2)
        return perm
    iota = lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    _, perm = lax.sort((key, iota), dimension=x.ndim - 1, num_keys=1)
    return perm


def argsort(x: jax.Array, *, descending: bool = False, last: jax.Array | None = None) -> jax.Array:
    """Stable argsort of a float32/float64 array along its last axis; int32 indices.

    Args:
        x: float32 or float64 array, sorted along the last axis (any leading axes).
        descending: sort from the largest to the smallest (ties still in index order).
        last: optional boolean array of ``x``'s shape; ``True`` entries go after all others.

    Returns:
        The permutation, int32, of ``x``'s shape (no gradient).
    """
    if x.shape[-1] >= MAX_ROW:
        raise ValueError(
            f"rows longer than 2**32 - 1 items are not supported, got {x.shape[-1]} items"
        )
    x = lax.stop_gradient(x)
    if x.shape[-1] <= 1:
        return jnp.zeros(x.shape, jnp.int32)
    return lax.platform_dependent(
        x,
        last,
        cpu=functools.partial(_argsort_cpu, descending=descending),
        default=functools.partial(_argsort_default, descending=descending),
    )


# ------------------------------------------------------------------ packed lists (segment ids)
def _integer_key(ids: jax.Array) -> jax.Array:
    """Order-preserving unsigned key of integer ids (uint32, or uint64 for 64-bit ids)."""
    if jnp.dtype(ids.dtype).itemsize < 8:
        signed, utype, bits = jnp.int32, jnp.uint32, 32
    else:
        signed, utype, bits = jnp.int64, jnp.uint64, 64
    if jnp.issubdtype(ids.dtype, jnp.unsignedinteger):
        return ids.astype(utype)
    return lax.bitcast_convert_type(ids.astype(signed), utype) ^ utype(1 << (bits - 1))


def _refine(perm: jax.Array, key: jax.Array) -> jax.Array:
    """``perm`` reordered stably by ``key[perm]`` (unsigned keys, one packed sort per 32 bits)."""
    key = jnp.take_along_axis(key, perm, axis=-1)
    iota = lax.broadcasted_iota(jnp.uint32, key.shape, key.ndim - 1)
    if key.dtype == jnp.uint32:
        order = _packed_sort(key, iota)
    else:
        first = _packed_sort((key & 0xFFFFFFFF).astype(jnp.uint32), iota)
        high = jnp.take_along_axis((key >> 32).astype(jnp.uint32), first, axis=-1)
        order = jnp.take_along_axis(first, _packed_sort(high, iota), axis=-1)
    return jnp.take_along_axis(perm, order, axis=-1)


def _by_segment_cpu(x, ids, last, descending):
    with jax.enable_x64(True):
        return _refine(_argsort_cpu_x64(x, last, descending), _integer_key(ids))


def _by_segment_default(x, ids, last, descending):
    key = x
    if descending:
        key = jnp.where(jnp.isnan(x), x, -x)
    key = jnp.where(key == 0, jnp.zeros_like(key), key)
    rank = jnp.zeros(x.shape, jnp.int32) if last is None else last.astype(jnp.int32)
    iota = lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    return lax.sort((ids, rank, key, iota), dimension=x.ndim - 1, num_keys=3)[-1]


def argsort_segments(
    x: jax.Array, ids: jax.Array, *, descending: bool = False, last: jax.Array | None = None
) -> jax.Array:
    """Stable argsort by ``(ids, last, x)``: each segment's items contiguous, in ``x`` order.

    Segments come in increasing id order; within a segment the items follow the order of
    ``argsort(x, descending=descending, last=last)``, so ``last`` entries end their segment.
    On CPU: that argsort, then one stable packed sort by the segment id (two for 64-bit ids).
    """
    if x.shape[-1] >= MAX_ROW:
        raise ValueError(
            f"rows longer than 2**32 - 1 items are not supported, got {x.shape[-1]} items"
        )
    x = lax.stop_gradient(x)
    if x.shape[-1] <= 1:
        return jnp.zeros(x.shape, jnp.int32)
    return lax.platform_dependent(
        x,
        ids,
        last,
        cpu=functools.partial(_by_segment_cpu, descending=descending),
        default=functools.partial(_by_segment_default, descending=descending),
    )


def argsort_ids(ids: jax.Array) -> jax.Array:
    """Stable argsort of integer ids along the last axis (int32 indices)."""
    if ids.shape[-1] <= 1:
        return jnp.zeros(ids.shape, jnp.int32)
    iota = lax.broadcasted_iota(jnp.int32, ids.shape, ids.ndim - 1)

    def cpu(ids):
        with jax.enable_x64(True):
            return _refine(iota, _integer_key(ids))

    def default(ids):
        return lax.sort((ids, iota), dimension=ids.ndim - 1, num_keys=1, is_stable=True)[1]

    return lax.platform_dependent(ids, cpu=cpu, default=default)
