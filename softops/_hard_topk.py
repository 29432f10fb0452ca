"""Hard top-k for the ``straight_through=True`` option of the top-k operators (private).

The straight-through output is ``hard + soft - stop_gradient(soft)``: its value is the hard
operator's (exactly, since ``soft - stop_gradient(soft)`` is exactly 0), its derivative the soft
operator's (the hard one is held constant). A row whose soft result is NaN stays NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from softops import _sort


def straight_through(hard: jax.Array, soft: jax.Array) -> jax.Array:
    """``hard`` in value, the derivative of ``soft``."""
    return lax.stop_gradient(hard) + (soft - lax.stop_gradient(soft))


def mask_rows(x: jax.Array, k: jax.Array, valid: jax.Array | None, largest: bool) -> jax.Array:
    """Indicator of the top-k valid items of rows ``x`` [..., n]: stable order rank < ``k`` [...].

    Ties are broken by index (the lower index first, as ``lax.top_k``); a fractional ``k``
    selects the items of 0-based rank below it (e.g. 2.5 selects three).
    """
    x = lax.stop_gradient(x)
    last = None if valid is None else ~valid
    order = _sort.argsort(x, descending=largest, last=last)
    n = x.shape[-1]
    flat = order.reshape(-1, n)
    chosen = jnp.arange(n, dtype=k.dtype)[None, :] < k.reshape(-1, 1)  # by sorted position
    rows = jnp.arange(flat.shape[0])[:, None]
    mask = jnp.zeros(flat.shape, bool).at[rows, flat].set(chosen)
    mask = mask.reshape(x.shape)
    if valid is not None:
        mask = mask & valid
    return mask.astype(x.dtype)


def sorted_rows(x: jax.Array, k: int, valid: jax.Array | None, largest: bool):
    """``(values [..., k], assignment [..., k, n])`` of the hard sorted top-k of rows ``x``.

    ``lax.top_k`` of the scores (negated for the smallest), invalid items last; the assignment is
    the one-hot matrix of the chosen indices.
    """
    x = lax.stop_gradient(x)
    s = x if largest else -x
    if valid is not None:
        s = jnp.where(valid, s, -jnp.inf)
    _, index = lax.top_k(s, k)
    values = jnp.take_along_axis(x, index, axis=-1)
    return values, jax.nn.one_hot(index, x.shape[-1], dtype=x.dtype)
