r"""Ranking losses: soft Spearman correlation (private; see `softops.losses`)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from softops import _checks, _sharding
from softops.losses import _common
from softops.projection import REGULARIZATIONS, Regularization, soft_rank


def _target_strength(strength, eps, t):
    """The targets' strength: ``eps`` (None), their own, or None for hard ranks (a known 0)."""
    if strength is None:
        return eps
    known = _checks.concrete(strength)
    if known is not None and known.size and (known.shape == () and known == 0):
        return None
    return _common.strength(strength, t, "target_regularization_strength")


@functools.partial(jax.jit, static_argnames=("regularization",))
def _spearman(p, t, eps, eps_t, valid, *, regularization):
    def body(p, t, eps, eps_t, valid):
        rp = soft_rank(p, regularization=regularization, regularization_strength=eps, where=valid)
        if eps_t is None:
            rt = lax.stop_gradient(
                soft_rank(lax.stop_gradient(t), where=valid, straight_through=True)
            )
        else:
            rt = soft_rank(
                t, regularization=regularization, regularization_strength=eps_t, where=valid
            )
        w = jnp.ones_like(rp) if valid is None else valid.astype(rp.dtype)
        nv = _common.count(rp, valid)
        cp = w * (rp - _common.safe_div(jnp.sum(w * rp, axis=-1, keepdims=True), nv))
        ct = w * (rt - _common.safe_div(jnp.sum(w * rt, axis=-1, keepdims=True), nv))
        num = jnp.sum(cp * ct, axis=-1)
        sp, st = jnp.sum(cp * cp, axis=-1), jnp.sum(ct * ct, axis=-1)
        ok = (sp > 0) & (st > 0)
        one = jnp.ones_like(sp)
        den = jnp.sqrt(jnp.where(ok, sp, one)) * jnp.sqrt(jnp.where(ok, st, one))
        nan = jnp.isnan(sp) | jnp.isnan(st)
        return jnp.where(ok, num / den, jnp.where(nan, jnp.nan, 0))

    return _sharding.on_batch_shards(body, p, t, eps, eps_t, valid, name="predictions")


def spearman_correlation(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    regularization_strength: ArrayLike = 1.0,
    target_regularization_strength: ArrayLike | None = None,
    regularization: Regularization = "l2",
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft Spearman rank correlation along the last axis.

    With $r = \mathrm{soft\_rank}_\varepsilon(\text{predictions})$ and
    $t$ the ranks of the targets, centred over the valid items
    ($\tilde r = r - \bar r$),

    $$
    \rho_\varepsilon = \frac{\langle \tilde r, \tilde t\rangle}{\|\tilde r\|\,\|\tilde t\|}.
    $$

    The targets are soft-ranked too, by default with the same strength (Blondel et al.'s
    convention): ``target_regularization_strength=None``. A positive value gives them their own
    strength; a known ``0`` (a Python or concrete 0) uses their hard ranks (ties get the average
    rank, as ``scipy.stats.spearmanr``); a traced 0 gives NaN. A row whose centred ranks are all
    zero (constant predictions or targets) gets 0.

    Limits: ε → 0 (both strengths) gives Spearman's ρ of the hard ranks; under ``"l2"``, ε → ∞
    (both) gives Pearson's correlation of the raw values, since then
    $\tilde r \to (x - \bar x)/\varepsilon$.

    Args:
        predictions: ``[..., n]`` floating array.
        targets: ``[..., n]`` real array (cast to the predictions' dtype); gradients flow to it
            when it is soft-ranked.
        regularization_strength: ε > 0 for the predictions, a number or an array of the batch
            shape ``[...]``.
        target_regularization_strength: None (same as ε), a positive strength, or 0 (hard).
        regularization: ``"l2"``, ``"kl"``, ``"p=3/2"`` or ``"p=4/3"``.
        where: optional boolean ``[..., n]``; only the ``True`` items are ranked and correlated.

    Returns:
        The correlations, shape ``[...]``, in [-1, 1] (NaN for a row with a NaN input).

    Raises:
        TypeError: for non-floating predictions, non-real targets or a non-boolean ``where``.
        ValueError: for mismatched shapes, a bad strength or ``regularization``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops.losses import spearman_correlation
        >>> p, t = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0]), jnp.array([5.0, 6.0, 7.0, 8.0, 7.0])
        >>> round(float(spearman_correlation(p, t)), 4)
        0.8321
    """
    _checks.choice(regularization, REGULARIZATIONS, "regularization")
    p = _common.items(predictions, "predictions")
    dtype = _checks.compute_dtype(p.dtype)
    t = _checks.real(targets, "targets", dtype)
    _checks.same_shape(p, t, ("predictions", "targets"))
    valid = _checks.where(where, p.shape)
    eps = _common.strength(regularization_strength, p)
    eps_t = _target_strength(target_regularization_strength, eps, t)
    out = _spearman(p.astype(dtype), t, eps, eps_t, valid, regularization=regularization)
    return out.astype(p.dtype)


def spearman_loss(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    regularization_strength: ArrayLike = 1.0,
    target_regularization_strength: ArrayLike | None = None,
    regularization: Regularization = "l2",
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""One minus the soft Spearman correlation: $1 - \rho_\varepsilon$, in [0, 2].

    See [`spearman_correlation`][softops.losses.spearman_correlation] for the arguments, limits and
    the treatment of the targets.

    Args:
        predictions: ``[..., n]`` floating array.
        targets: ``[..., n]`` real array.
        regularization_strength: ε > 0, a number or an array of the batch shape.
        target_regularization_strength: None (same as ε), a positive strength, or 0 (hard).
        regularization: ``"l2"``, ``"kl"``, ``"p=3/2"`` or ``"p=4/3"``.
        where: optional boolean ``[..., n]`` mask of the items to use.

    Returns:
        The losses, shape ``[...]``.

    Raises:
        TypeError: as [`spearman_correlation`][softops.losses.spearman_correlation].
        ValueError: as [`spearman_correlation`][softops.losses.spearman_correlation].

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops.losses import spearman_loss
        >>> x = jnp.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
        >>> t = jnp.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
        >>> print(spearman_loss(x, t, regularization_strength=1e-3).round(3) + 0.0)
        [0. 2.]
    """
    rho = spearman_correlation(
        predictions,
        targets,
        regularization_strength=regularization_strength,
        target_regularization_strength=target_regularization_strength,
        regularization=regularization,
        where=where,
    )
    return _common.one_minus(rho)
