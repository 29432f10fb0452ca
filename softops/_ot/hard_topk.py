"""Hard top-k for the ``straight_through=True`` option of the top-k operators (private).

The straight-through output is ``softops._straight_through.with_soft_derivative(hard, soft)``,
shared with soft sort/rank: the hard operator's value (exactly), the soft operator's derivative.
A row whose soft result is NaN stays NaN.
"""

from __future__ import annotations

import jax
from jax import lax

from softops import _sort
from softops._sharding import scatter_last, take_last

__all__ = ["mask_rows", "sorted_rows"]


def mask_rows(x: jax.Array, k: jax.Array, valid: jax.Array | None, largest: bool) -> jax.Array:
    """Indicator of the top-k valid items of rows ``x`` [..., n]: stable order rank < ``k`` [...].

    Ties are broken by index (the lower index first, as ``lax.top_k``); a fractional ``k``
    selects the items of 0-based rank below it (e.g. 2.5 selects three).
    """
    x = lax.stop_gradient(x)
    last = None if valid is None else ~valid
    order = _sort.argsort(x, descending=largest, last=last)
    position = lax.broadcasted_iota(k.dtype, x.shape, x.ndim - 1)
    chosen = (position < k[..., None]).astype(x.dtype)  # by sorted position
    # A scatter with batching dimensions: it runs where each batch shard lives.
    mask = scatter_last(x.shape, x.dtype, order, chosen) > 0
    if valid is not None:
        mask = mask & valid
    return mask.astype(x.dtype)


def sorted_rows(x: jax.Array, k: int, valid: jax.Array | None, largest: bool):
    """``(values [..., k], assignment [..., k, n])`` of the hard sorted top-k of rows ``x``.

    The first k items of the stable order (the largest, or smallest, first; ties by index; invalid
    items last): ``lax.top_k``'s choice. The assignment is the one-hot matrix of their indices.
    (softops' own argsort, not ``lax.top_k``: XLA's partitioner gathers the latter's rows.)
    """
    x = lax.stop_gradient(x)
    last = None if valid is None else ~valid
    index = _sort.argsort(x, descending=largest, last=last)[..., :k]
    values = take_last(x, index)
    return values, jax.nn.one_hot(index, x.shape[-1], dtype=x.dtype)
