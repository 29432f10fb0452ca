"""Helpers shared by the losses (private): labels, safe divisions, per-row strengths."""

from __future__ import annotations

import jax
import jax.numpy as jnp

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


def take_label(x: jax.Array, label: jax.Array) -> jax.Array:
    """``x[..., label]`` per example; a label outside ``[0, n)`` gives NaN (no wrap-around)."""
    n = x.shape[-1]
    inside = (label >= 0) & (label < n)
    got = jnp.take_along_axis(x, jnp.clip(label, 0, n - 1)[..., None], axis=-1)[..., 0]
    return jnp.where(inside, got, jnp.nan)


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
