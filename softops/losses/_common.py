"""Helpers shared by the losses (private): labels, safe divisions, per-row strengths."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from softops import _checks


def items(x, name: str) -> jax.Array:
    """A floating array with at least one axis (the items, last)."""
    x = _checks.floating(x, name)
    if x.ndim == 0:
        raise ValueError(f"`{name}` must have at least one axis (the items), got a scalar {name}")
    return x


def strength(value, x: jax.Array, name: str = "regularization_strength") -> jax.Array:
    """A per-example strength of the batch shape ``x.shape[:-1]``."""
    return _checks.per_row(value, name, x.shape[:-1], _checks.compute_dtype(x.dtype))


def labels(value, batch_shape) -> jax.Array:
    """Integer class labels of the batch shape."""
    arr = _checks.array(value, "labels")
    if not jnp.issubdtype(arr.dtype, jnp.integer):
        raise TypeError(f"`labels` must have an integer dtype, got dtype {arr.dtype}")
    if arr.shape != tuple(batch_shape):
        raise ValueError(
            f"`labels` must have the batch shape {tuple(batch_shape)} (logits.shape[:-1]), "
            f"got shape {arr.shape}"
        )
    return arr


def known_labels(labels, where, n: int) -> None:
    """Labels known at trace time must name a class in ``[0, n)`` that takes part.

    ``labels`` and ``where`` as the caller received them (traced ones are not checked: the
    losses give NaN for such an example, see `label_ok`).
    """
    known = _checks.concrete(labels)
    if known is None or not known.size:
        return
    outside = (known < 0) | (known >= n)
    if np.any(outside):
        bad = known[outside].ravel()[0].item()
        raise ValueError(f"`labels` must be in [0, {n}) (the classes), got labels={bad!r}")
    mask = None if where is None else _checks.concrete(where)
    if mask is None:
        return
    on = np.take_along_axis(
        np.broadcast_to(mask, known.shape + (n,)), known[..., None].astype(np.intp), axis=-1
    )[..., 0]
    if not np.all(on):
        at = tuple(int(i) for i in np.argwhere(~on)[0])
        raise ValueError(
            f"`labels` must name a class with where=True, got labels={known[at].item()!r} "
            f"(example {at}), a masked-out class"
        )


def label_ok(label: jax.Array, valid: jax.Array | None, n: int) -> jax.Array:
    """The examples whose label is in ``[0, n)`` and on a class with ``valid`` True."""
    inside = (label >= 0) & (label < n)
    if valid is None:
        return inside
    return inside & take_label(valid, label)


def take_label(x: jax.Array, label: jax.Array) -> jax.Array:
    """``x[..., label]`` per example, for labels in ``[0, n)`` (others are clipped)."""
    n = x.shape[-1]
    safe = jnp.clip(label, 0, n - 1).astype(jnp.int32)
    return jnp.take_along_axis(x, safe[..., None], axis=-1)[..., 0]


def safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` where ``den > 0``, else 0, with finite gradients everywhere."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, jnp.ones_like(den)), jnp.zeros_like(num))


def count(x: jax.Array, valid: jax.Array | None) -> jax.Array:
    """Number of valid items per row, ``[..., 1]``, in the dtype of ``x``."""
    if valid is None:
        return jnp.full(x.shape[:-1] + (1,), x.shape[-1], x.dtype)
    return jnp.sum(valid, axis=-1, keepdims=True).astype(x.dtype)


@jax.jit
def one_minus(x: jax.Array) -> jax.Array:
    """``1 - x``, jitted: the constant is part of the program (no host transfer per call)."""
    return 1 - x
