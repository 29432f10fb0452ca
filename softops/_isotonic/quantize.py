r"""Soft quantile normalization and soft quantization on the permutahedron (private).

Both are Euclidean projections of ``x / ε`` onto the permutahedron of an n-vector of sorted values
(Blondel et al., 2020): exact by isotonic regression, O(n log n), piecewise linear in ``x`` and in
those values. They are the parity functions of ``ott.tools.soft_sort.quantile_normalization`` and
``quantize``, which reach the same hard limits by Sinkhorn on squashed inputs.

Reference: Blondel, Teboul, Berthet, Djolonga, Fast Differentiable Sorting and Ranking, ICML 2020,
arXiv:2002.08871.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from softops import _checks, _sharding, _sort
from softops._isotonic import rows

__all__ = ["soft_quantile_normalization", "soft_quantize"]


def _last(v, ndim: int) -> jax.Array:
    """A 1-D array laid along the last of ``ndim`` axes (explicit broadcasting)."""
    return v.reshape((1,) * (ndim - 1) + (-1,))


def _arguments(x, axis, where, strength):
    """The item axis, the validity and the per-row strength (in the compute dtype)."""
    ax = _checks.axis(axis, x.ndim)
    valid = _checks.where(where, x.shape)
    batch, dtype = _checks.batch_shape(x.shape, ax), _checks.compute_dtype(x.dtype)
    return ax, valid, _checks.per_row(strength, "regularization_strength", batch, dtype)


def _count(x, valid) -> jax.Array:
    """The number of valid items per row, [..., 1], in the dtype of ``x``."""
    if valid is None:
        return jnp.full(x.shape[:-1] + (1,), x.shape[-1], x.dtype)
    return jnp.sum(valid, -1, keepdims=True).astype(x.dtype)


def _target_quantiles(targets, weights, n_valid, n: int, dtype):  # n_valid: [..., 1]
    """w_i = n_v * integral of the targets' quantile function over [(i-1)/n_v, i/n_v], [..., n].

    The targets' quantile function is piecewise constant (target j on its cumulative-weight
    interval), so its integral G is piecewise linear, interpolated exactly from its knots.
    """
    order = _sort.argsort(targets)  # stable, NaN last (as jnp.argsort)
    t, w = targets[order], weights[order]
    w = w / jnp.sum(w)
    knots = jnp.concatenate([jnp.zeros(1, dtype), jnp.cumsum(w)])
    area = jnp.concatenate([jnp.zeros(1, dtype), jnp.cumsum(t * w)])
    i = _last(jnp.arange(1, n + 1, dtype=dtype), n_valid.ndim)
    upper = jnp.interp(jnp.minimum(i / n_valid, 1), knots, area)
    lower = jnp.interp(jnp.minimum((i - 1) / n_valid, 1), knots, area)
    return n_valid * (upper - lower)


def soft_quantile_normalization(
    x: ArrayLike,
    targets: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    regularization_strength: ArrayLike = 1.0,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft quantile normalization: maps ``x`` onto a target distribution, keeping its order.

    Hard quantile normalization replaces the item of rank i (of n) by the mean of the targets'
    quantile function over $[(i-1)/n, i/n]$: the n-point version $w$ of the
    distribution ``(targets, weights)`` (for n equally weighted targets, ``sort(targets)``).
    The soft version is the Euclidean projection onto the permutahedron of $w$,

    $$
    Q_\varepsilon(x) = \arg\min_{\mu \in \mathcal{P}(w)} \tfrac12 \|\mu - x/\varepsilon\|^2,
    $$

    exact by isotonic regression
    ([`softops.projection_permutahedron`][softops.projection.projection_permutahedron]): items whose
    gap is below ε times the gap of their targets share their targets' mean. The output preserves
    the order of ``x`` and sums to $\sum w$. As ε → 0 it is the hard quantile normalization (tied
    items share their targets' mean); as ε → ∞ every entry tends to the targets' mean. For
    ``targets = 1..n`` it is [`softops.soft_rank`][softops.projection.soft_rank].

    ott-jax's ``quantile_normalization`` uses the transport plan of the squashed inputs onto the
    targets instead: same hard limit, a different smoothing.

    Args:
        x: ``[..., n, ...]`` with the items along ``axis`` (floating dtype).
        targets: ``[m]`` target values (any order).
        weights: ``[m]`` non-negative target weights (default uniform), normalized to sum 1.
        regularization_strength: ε > 0, scalar or of the batch shape.
        axis: the item axis.
        where: boolean of the shape of ``x``; ``False`` entries are left out (their output is 0)
            and the valid entries use their own count.

    Returns:
        An array of the shape and dtype of ``x``.

    Raises:
        TypeError: non-floating ``x`` or ``targets``, non-boolean ``where``.
        ValueError: ``targets`` not 1-D and non-empty, ``weights`` of another shape or
            negative, bad strength, ``axis`` or ``where`` shape.

    Examples:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([0.3, -1.2, 2.5, 0.1])
        >>> q = soft_quantile_normalization(x, jnp.array([10.0, 20.0, 30.0, 40.0]),
        ...                                 regularization_strength=1e-3)
        >>> q.tolist()
        [30.0, 10.0, 40.0, 20.0]
    """
    x = _checks.floating(x, "x")
    targets = _checks.floating(targets, "targets")
    if targets.ndim != 1 or targets.shape[0] == 0:
        raise ValueError(f"`targets` must be 1-D and non-empty, got shape {targets.shape}")
    if weights is None:
        weights = jnp.broadcast_to(
            _checks.array(np.ones((), targets.dtype), "weights"), targets.shape
        )
    else:
        weights = _checks.floating(weights, "weights")
        _checks.same_shape(weights, targets, ("weights", "targets"))
        known = _checks.concrete(weights)
        if known is not None and np.any(known < 0):
            raise ValueError(f"`weights` must be non-negative, got weights={known.tolist()!r}")
    ax, valid, eps = _arguments(x, axis, where, regularization_strength)
    dtype = eps.dtype
    return _quantile_normalization(x, targets.astype(dtype), weights.astype(dtype), eps, valid,
                                   axis=ax)  # fmt: skip


@partial(jax.jit, static_argnames=("axis",))
def _quantile_normalization(x, targets, weights, eps, valid, *, axis):
    # The targets are shared by every row: their quantiles [..., n] are computed here, outside
    # the per-shard kernel (a kernel under shard_map may not close over arrays).
    n_valid = _count(jnp.moveaxis(x, axis, -1), None if valid is None else
                     jnp.moveaxis(valid, axis, -1)).astype(eps.dtype)  # fmt: skip
    n = x.shape[axis]
    quantiles = _target_quantiles(targets, weights, jnp.maximum(n_valid, 1), n, eps.dtype)

    def kernel(x, quantiles, eps, valid):
        return _project(x, quantiles, _count(x, valid), eps, valid)

    return _sharding.run_items(kernel, axis, (x, jnp.moveaxis(quantiles, -1, axis)), (eps,), valid)


def _project(x, w, n_valid, eps, valid):
    """Projection of x/eps [..., n] onto the permutahedron of w [..., n], rows [..., n].

    With ``valid``: of the valid entries onto the first n_valid entries of w (the others get 0).
    A row with a strength that is not positive and finite (traced) gives NaN.
    """
    good = (eps > 0) & jnp.isfinite(eps)
    eps = jnp.where(good, eps, 1)[..., None]
    if valid is None:
        out = rows.project_rows(x / eps, w, None, regularization="l2", method="auto")
        return _checks.nan_rows(out, good)
    # Masked entries go last with fillers below every w, far enough not to pool: a block of
    # valid entries has mean >= min(z) - max(w) > min(z) - gap - (min(w) - 1).
    inside = _last(jnp.arange(x.shape[-1], dtype=x.dtype), x.ndim) < n_valid
    z = jnp.where(valid, x, 0) / eps
    low_w = jnp.min(jnp.where(inside, w, jnp.inf), axis=-1, keepdims=True)
    high_w = jnp.max(jnp.where(inside, w, -jnp.inf), axis=-1, keepdims=True)
    low_z = jnp.min(jnp.where(valid, z, jnp.inf), axis=-1, keepdims=True)
    finite = jnp.isfinite(low_w)
    gap = lax.stop_gradient(jnp.where(finite, high_w - low_w, 0)) + 2
    low_z = lax.stop_gradient(jnp.where(jnp.isfinite(low_z), low_z, 0))
    z = jnp.where(valid, z, low_z - gap)
    w = jnp.where(inside, w, jnp.where(finite, low_w, 0) - 1)
    out = rows.project_rows(z, w, None, regularization="l2", method="auto")
    return jnp.where(valid, _checks.nan_rows(out, good), 0)


def _interp_index(values, index):
    """Linear interpolation of ``values`` [..., N] at fractional indices ``index`` [..., K]."""
    size = values.shape[-1]
    lo = jnp.clip(jnp.floor(lax.stop_gradient(index)), 0, max(size - 2, 0))
    frac = index - lo
    lo = lo.astype(jnp.int32)
    hi = jnp.minimum(lo + 1, size - 1)
    v_lo = jnp.take_along_axis(values, lo, axis=-1)
    v_hi = jnp.take_along_axis(values, hi, axis=-1)
    return v_lo + frac * (v_hi - v_lo)


def _binned(s, n_valid, levels: int):
    """Equal-mass quantization V [..., n] of the ascending values s (the first n_valid count).

    Position p covers the mass [p, p+1]/n_v and level l the mass [l, l+1]/L; the level is the
    mean of s over its mass and V_p the mean of the levels over position p's mass. Both are
    differences of piecewise-linear cumulative sums, interpolated exactly.
    """
    nd, n, dtype = s.ndim, s.shape[-1], s.dtype
    inside = _last(jnp.arange(n, dtype=dtype), nd) < n_valid
    zero = jnp.zeros(s.shape[:-1] + (1,), dtype)
    prefix = jnp.concatenate([zero, jnp.cumsum(jnp.where(inside, s, 0), -1)], -1)
    cuts = _last(jnp.arange(levels + 1, dtype=dtype) / levels, nd) * n_valid
    cum_s = _interp_index(prefix, cuts)
    level = (cum_s[..., 1:] - cum_s[..., :-1]) * levels / n_valid
    area = jnp.concatenate([zero, jnp.cumsum(level, -1) / levels], -1)
    edges = _last(jnp.arange(n + 1, dtype=dtype), nd) / n_valid * levels
    cum_l = _interp_index(area, jnp.minimum(edges, levels))
    return (cum_l[..., 1:] - cum_l[..., :-1]) * n_valid


def soft_quantize(
    x: ArrayLike,
    num_levels: int,
    *,
    regularization_strength: ArrayLike = 1.0,
    axis: int = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft quantization of ``x`` to ``num_levels`` equal-mass levels, on the permutahedron.

    Hard quantization cuts the sorted values into ``L = num_levels`` bins of equal mass n/L (an
    item on a boundary is split between two bins), takes each bin's mean as its level, and gives
    the item of rank p the mean $V_p$ of the levels over its mass
    $[(p-1)/n, p/n]$. The soft version projects onto the permutahedron of these values,

    $$
    \mathrm{quantize}_\varepsilon(x) = \arg\min_{\mu \in \mathcal{P}(V(x))}
    \tfrac12 \|\mu - x/\varepsilon\|^2,
    $$

    exact by isotonic regression: neighbours in different bins share a value when their gap is
    below ε times the gap of their levels (derivatives flow through both ``x/ε`` and
    $V(x)$). As ε → 0 it is the hard quantization (the limit of ott-jax's ``quantize``;
    tied items share their mean value); as ε → ∞ every entry tends to ``mean(x)``; with
    ``num_levels = 1`` it is ``mean(x)`` at every ε. O(n log n + L).

    ott-jax's ``quantize`` transports the squashed inputs onto L targets and back: the same hard
    limit, a different smoothing.

    Args:
        x: ``[..., n, ...]`` with the items along ``axis`` (floating dtype).
        num_levels: number of levels L, a positive int.
        regularization_strength: ε > 0, scalar or of the batch shape.
        axis: the item axis.
        where: boolean of the shape of ``x``; ``False`` entries are left out (output 0) and the
            bins are cut over the valid entries alone.

    Returns:
        An array of the shape and dtype of ``x``.

    Raises:
        TypeError: non-floating ``x``, non-int ``num_levels``, non-boolean ``where``.
        ValueError: ``num_levels < 1``, bad strength, ``axis`` or ``where`` shape.

    Examples:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([0.1, 3.0, 0.3, 2.0])
        >>> [round(float(v), 3) for v in soft_quantize(x, 2, regularization_strength=1e-3)]
        [0.2, 2.5, 0.2, 2.5]
    """
    levels = _checks.integer(num_levels, "num_levels", minimum=1)
    x = _checks.floating(x, "x")
    ax, valid, eps = _arguments(x, axis, where, regularization_strength)
    return _quantize(x, eps, valid, axis=ax, levels=levels)


@partial(jax.jit, static_argnames=("axis", "levels"))
def _quantize(x, eps, valid, *, axis, levels):
    def kernel(x, eps, valid):
        # A row with a non-finite valid entry: NaN, exactly 0 derivative (the levels are
        # computed from x too, so x is replaced before anything reads it).
        good = _checks.finite_rows(x, valid)
        x = _checks.clean_rows(good, x)
        n_valid = _count(x, valid)
        keyed = x if valid is None else jnp.where(valid, x, jnp.inf)
        last = None if valid is None else ~valid  # the valid entries first
        s = _sharding.take_last(keyed, _sort.argsort(keyed, last=last))  # sorted, NaN last
        values = _binned(s, jnp.maximum(n_valid, 1), levels)
        out = _checks.nan_rows(_project(x, values, n_valid, eps, valid), good)
        return out if valid is None else jnp.where(valid, out, 0)

    return _sharding.run_items(kernel, axis, (x,), (eps,), valid)
