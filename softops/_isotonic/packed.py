"""Packed lists: several lists in one row, told apart by an integer segment id (private).

The row kernels (``rows``) sort each row once. With segment ids they sort by
``(segment, masked, value)`` instead (`softops._sort.argsort_segments`), so every segment is a
contiguous run of the sorted row, its valid items first. A barrier at every segment start keeps
the isotonic blocks inside their segment, and the weights are the ranks of each segment,
``(n_s, n_s - 1, ..., 1)`` over its ``n_s`` valid items (0 at masked ones). Everything else, the
closed-form outputs and all their derivatives, is unchanged: O(n log n) for the whole row.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from softops._sharding import count_last, scatter_last, take_last


class Groups(NamedTuple):
    """Segments of a sorted row: where each starts, and the ranks' offset of each item.

    At sorted position ``i`` the rank weight is ``max(top[i] - i, 0)``: ``top`` is the segment's
    start plus its number of valid items.
    """

    starts: jax.Array  # bool [..., n]
    top: jax.Array  # int32 [..., n]


def groups(ids_sorted: jax.Array, valid_sorted: jax.Array | None) -> Groups:
    """The segments of rows whose items are sorted by segment id (``ids_sorted`` [..., n])."""
    n = ids_sorted.shape[-1]
    iota = lax.broadcasted_iota(jnp.int32, ids_sorted.shape, ids_sorted.ndim - 1)
    change = ids_sorted[..., 1:] != ids_sorted[..., :-1]
    starts = jnp.concatenate([jnp.ones_like(ids_sorted[..., :1], bool), change], axis=-1)
    gid = count_last(starts) - 1
    first = scatter_last(starts.shape, jnp.int32, jnp.where(starts, gid, n), iota)
    ones = jnp.ones(starts.shape, jnp.int32)
    counted = ones if valid_sorted is None else valid_sorted.astype(jnp.int32)
    count = scatter_last(starts.shape, jnp.int32, gid, counted, op="add")
    return Groups(starts, take_last(first + count, gid))


def ranks_desc(g: Groups, dtype) -> jax.Array:
    """The ranks ``(n_s, ..., 1)`` of every segment at its valid sorted positions, 0 after them."""
    iota = lax.broadcasted_iota(jnp.int32, g.top.shape, g.top.ndim - 1)
    return jnp.maximum(g.top - iota, 0).astype(dtype)
