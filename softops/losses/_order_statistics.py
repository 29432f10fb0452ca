r"""Order statistics and trimmed losses on the soft sort (private; see `softops.losses`)."""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from softops import _checks, _sharding
from softops.losses import _common
from softops.projection import REGULARIZATIONS, Regularization, soft_sort


def _quantile_levels(q, dtype) -> jax.Array:
    """``q``: a number or a 1-D array in [0, 1] (known values checked)."""
    if isinstance(q, (bool, np.bool_)) or q is None:
        raise TypeError(f"`q` must be a number or a 1-D array, got q={q!r}")
    arr = (
        _checks.real(q, "q", dtype) if not isinstance(q, numbers.Number) else _checks.array(q, "q")
    )
    if arr.ndim > 1:
        raise ValueError(f"`q` must be a number or 1-D, got shape {arr.shape}")
    known = _checks.concrete(q)
    if known is not None and not np.all((known >= 0) & (known <= 1)):
        raise ValueError(f"`q` must lie in [0, 1], got q={np.asarray(known).tolist()!r}")
    return arr.astype(dtype)


def soft_quantile(
    x: ArrayLike,
    q: float | ArrayLike,
    *,
    regularization_strength: ArrayLike = 1.0,
    regularization: Regularization = "l2",
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft quantiles: linear interpolation between the order statistics of the soft sort.

    With $s = \mathrm{soft\_sort}_\varepsilon(x)$ (ascending, over the $n_v$ valid
    items) and $h = q\,(n_v - 1)$,

    $$
    Q_\varepsilon(q) = (1 - (h - \lfloor h\rfloor))\, s_{\lfloor h\rfloor}
    + (h - \lfloor h\rfloor)\, s_{\lfloor h\rfloor + 1},
    $$

    NumPy's default ``method="linear"``. ε → 0 gives ``np.quantile(x, q)``; under ``"l2"``,
    ε → ∞ gives ``mean(x)``. The L2 soft sort pools sorted neighbours whose gap exceeds 1/ε, so ε
    acts on the inverse scale of ``x``. Several quantiles (a 1-D ``q``) cost one soft sort.

    Args:
        x: ``[..., n]`` floating array.
        q: a quantile in [0, 1], or a 1-D array ``[m]`` of them (known values are checked).
            Differentiable in ``q``.
        regularization_strength: ε > 0, a number or an array of the batch shape.
        regularization: ``"l2"``, ``"kl"``, ``"p=3/2"`` or ``"p=4/3"``.
        where: optional boolean ``[..., n]`` of the items to use.

    Returns:
        Shape ``[...]`` for a scalar ``q``, ``[..., m]`` for a 1-D ``q`` (NumPy puts the ``q``
        axis first instead). NaN for a row with no valid item or a NaN item.

    Raises:
        TypeError: for non-floating ``x``, non-real ``q`` or non-boolean ``where``.
        ValueError: for ``q`` outside [0, 1] or of rank > 1, a bad strength or option.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops.losses import soft_quantile
        >>> soft_quantile(jnp.array([4.0, 1.0, 3.0, 2.0]), 0.25, regularization_strength=1e-3)
        Array(1.75, dtype=float32)
    """
    _checks.choice(regularization, REGULARIZATIONS, "regularization")
    x_in = _common.items(x, "x")
    dtype = _checks.compute_dtype(x_in.dtype)
    qa = _quantile_levels(q, dtype)
    valid = _checks.where(where, x_in.shape)
    eps = _common.strength(regularization_strength, x_in)
    if x_in.shape[-1] == 0:
        return jnp.full(x_in.shape[:-1] + qa.shape, jnp.nan, x_in.dtype)
    batch = x_in.shape[:-1]
    qb = jnp.broadcast_to(qa.reshape((1,) * len(batch) + (-1,)), batch + (qa.size,))
    out = _quantile(x_in.astype(dtype), qb, eps, valid, regularization=regularization)
    return (out if qa.ndim else out[..., 0]).astype(x_in.dtype)


@functools.partial(jax.jit, static_argnames=("regularization",))
def _quantile(x, q, eps, valid, *, regularization):
    def body(x, q, eps, valid):
        s = soft_sort(x, regularization=regularization, regularization_strength=eps, where=valid)
        nv = _common.count(s, valid)  # [..., 1]
        h = q * (nv - 1)
        top = jnp.maximum(nv - 1, 0)
        lo = jnp.clip(jnp.floor(lax.stop_gradient(h)), 0, top)
        hi = jnp.minimum(lo + 1, top)
        frac = h - lo
        s_lo = jnp.take_along_axis(s, lo.astype(jnp.int32), axis=-1)
        s_hi = jnp.take_along_axis(s, hi.astype(jnp.int32), axis=-1)
        return jnp.where(nv > 0, (1 - frac) * s_lo + frac * s_hi, jnp.nan)

    return _sharding.on_batch_shards(body, x, q, eps, valid)


def soft_median(
    x: ArrayLike,
    *,
    regularization_strength: ArrayLike = 1.0,
    regularization: Regularization = "l2",
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft median: [`soft_quantile`][softops.losses.soft_quantile] at q = 1/2.

    The mean of the two middle values for even n.

    ε → 0 gives ``np.median``; under ``"l2"``, ε → ∞ gives the mean.

    Args:
        x: ``[..., n]`` floating array.
        regularization_strength: ε > 0, a number or an array of the batch shape.
        regularization: ``"l2"``, ``"kl"``, ``"p=3/2"`` or ``"p=4/3"``.
        where: optional boolean ``[..., n]`` of the items to use.

    Returns:
        The soft medians, shape ``[...]`` (NaN for a row with a NaN or without valid items).

    Raises:
        TypeError: as [`soft_quantile`][softops.losses.soft_quantile].
        ValueError: as [`soft_quantile`][softops.losses.soft_quantile].

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops.losses import soft_median
        >>> soft_median(jnp.array([4.0, 1.0, 3.0, 2.0]), regularization_strength=1e-3)
        Array(2.5, dtype=float32)
    """
    return soft_quantile(
        x,
        0.5,
        regularization_strength=regularization_strength,
        regularization=regularization,
        where=where,
    )


def soft_lts_loss(
    residuals: ArrayLike,
    *,
    trim: float | ArrayLike = 0.25,
    regularization_strength: ArrayLike = 1.0,
    regularization: Regularization = "l2",
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft least trimmed squares: mean of the smallest soft-sorted squared residuals.

    With $s = \mathrm{soft\_sort}_\varepsilon(r^2)$ (ascending, over the $n_v$ valid
    residuals) and $h = n_v - \lfloor \mathrm{trim} \cdot n_v\rfloor$,

    $$
    \ell_\varepsilon(r) = \frac1h \sum_{i=1}^{h} s_i .
    $$

    ε → 0 gives least trimmed squares (the mean of the h smallest $r_i^2$); under ``"l2"``,
    ε → ∞ gives least squares (``mean(r**2)``): the soft sort pools every value with the large
    ones. Blondel et al. (2020), Section 6. The L2 soft sort pools sorted squared residuals whose
    gap exceeds 1/ε, so choose ε relative to the inverse scale of ``r**2``.

    Args:
        residuals: ``[..., n]`` floating array (one regression problem per row).
        trim: fraction of the residuals to trim, ``0 <= trim < 1`` (a number or a scalar array;
            known values are checked).
        regularization_strength: ε > 0, a number or an array of the batch shape.
        regularization: ``"l2"``, ``"kl"``, ``"p=3/2"`` or ``"p=4/3"``.
        where: optional boolean ``[..., n]`` of the residuals to use.

    Returns:
        The losses, shape ``[...]``: NaN for a row with a NaN residual, no valid residual, or a
        traced ``trim`` outside [0, 1) (a known one raises).

    Raises:
        TypeError: for non-floating residuals, a non-real ``trim`` or a non-boolean ``where``.
        ValueError: for ``trim`` outside [0, 1), a bad strength or option.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops.losses import soft_lts_loss
        >>> r = jnp.array([0.1, -0.2, 0.1, 5.0])
        >>> soft_lts_loss(r, trim=0.25, regularization_strength=1e-3).round(4)
        Array(0.02, dtype=float32)
    """
    _checks.choice(regularization, REGULARIZATIONS, "regularization")
    r_in = _common.items(residuals, "residuals")
    dtype = _checks.compute_dtype(r_in.dtype)
    trim_a = _checks.per_row(trim, "trim", (), dtype, positive=False)
    known = _checks.concrete(trim)
    if known is not None and not 0 <= float(known) < 1:
        raise ValueError(f"`trim` must satisfy 0 <= trim < 1, got trim={float(known)!r}")
    valid = _checks.where(where, r_in.shape)
    eps = _common.strength(regularization_strength, r_in)
    trim_rows = jnp.broadcast_to(trim_a, r_in.shape[:-1])
    out = _lts(r_in.astype(dtype), trim_rows, eps, valid, regularization=regularization)
    return out.astype(r_in.dtype)


@functools.partial(jax.jit, static_argnames=("regularization",))
def _lts(r, trim, eps, valid, *, regularization):
    def body(r, trim, eps, valid):
        if valid is not None:  # a masked NaN or inf must not reach r * r's derivative
            r = jnp.where(valid, r, 0)
        good = _checks.finite_rows(r, valid)  # a bad row: NaN, 0 derivative (r * r too)
        r = _checks.clean_rows(good, r)
        s = soft_sort(
            r * r, regularization=regularization, regularization_strength=eps, where=valid
        )
        nv = _common.count(r, valid)
        keep = nv - jnp.floor(trim[..., None] * nv + 1e-6)
        pos = jax.lax.broadcasted_iota(s.dtype, s.shape, s.ndim - 1)
        kept = jnp.where(pos < keep, s, 0)
        # NaN for a row with no valid residual or a traced trim outside [0, 1) (known ones
        # raise): the mean of nothing, as NumPy's.
        ok = good & (keep[..., 0] > 0) & (trim >= 0) & (trim < 1)
        return jnp.where(ok, _common.safe_div(jnp.sum(kept, axis=-1), keep[..., 0]), jnp.nan)

    return _sharding.on_batch_shards(body, r, trim, eps, valid, name="residuals")
