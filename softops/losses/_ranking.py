r"""Ranking losses: soft Spearman correlation and soft NDCG (private; see `softops.losses`)."""

from __future__ import annotations

import functools
from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from softops import _checks, _sharding
from softops.losses import _common
from softops.projection import REGULARIZATIONS, Regularization, soft_rank

Gain = Literal["exp2", "linear"]
GAINS: tuple[Gain, ...] = get_args(Gain)


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
        regularization: ``"l2"`` or ``"kl"``.
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
        regularization: ``"l2"`` or ``"kl"``.
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


def soft_ndcg(
    scores: ArrayLike,
    relevance: ArrayLike,
    *,
    k: int | None = None,
    regularization_strength: ArrayLike = 1.0,
    regularization: Regularization = "l2",
    gain: Gain = "exp2",
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft NDCG: the DCG discount evaluated at soft (descending) ranks of the scores.

    With $r = \mathrm{soft\_rank}_\varepsilon(\text{scores}, \text{descending})$ (rank 1 =
    highest score) and gains $g = 2^{\mathrm{rel}} - 1$ (``"exp2"``) or
    $g = \mathrm{rel}$ (``"linear"``, as ``sklearn.metrics.ndcg_score``),

    $$
    \mathrm{DCG}_\varepsilon = \sum_i \frac{g_i\, c_k(r_i)}{\log_2(1 + r_i)}, \qquad
    \mathrm{NDCG}_\varepsilon = \mathrm{DCG}_\varepsilon / \mathrm{IDCG},
    $$

    where IDCG is the hard DCG of the ideal order (relevance sorted, top k) and the cutoff is
    $c_k(r) = \mathrm{clip}(k + 1 - r, 0, 1)$ (1 when ``k`` is None): equal to
    $[r \le k]$ at integer ranks and continuous in between. ε → 0 gives the hard NDCG@k
    (for untied scores); a row without positive gain gets 0. For ε > 0 the value is a smooth
    surrogate, not a guaranteed lower bound of the hard NDCG. The ``"exp2"`` gains are computed
    relative to the row's largest relevance, so large grades do not overflow.

    Args:
        scores: ``[..., n]`` floating array (higher = ranked first).
        relevance: ``[..., n]`` non-negative real array (graded relevance); no gradient. A
            known negative value raises; a traced one gives NaN for its row.
        k: cutoff, ``1 <= k <= n``, or None for all items.
        regularization_strength: ε > 0, a number or an array of the batch shape.
        regularization: ``"l2"`` or ``"kl"``.
        gain: ``"exp2"`` ($2^{rel} - 1$) or ``"linear"``.
        where: optional boolean ``[..., n]`` of the items in each list.

    Returns:
        The NDCG values, shape ``[...]`` (maximize it; use ``1 - soft_ndcg`` as a loss); NaN for a
        row with a NaN score or relevance.

    Raises:
        TypeError: for non-floating scores, non-real relevance, a non-int ``k``.
        ValueError: for mismatched shapes, a bad ``k``, strength, ``gain`` or ``regularization``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops.losses import soft_ndcg
        >>> rel = jnp.array([3.0, 2.0, 0.0])
        >>> soft_ndcg(jnp.array([0.9, 0.5, 0.1]), rel, regularization_strength=1e-3)
        Array(1., dtype=float32)
    """
    _checks.choice(regularization, REGULARIZATIONS, "regularization")
    _checks.choice(gain, GAINS, "gain")
    x_in = _common.items(scores, "scores")
    dtype = _checks.compute_dtype(x_in.dtype)
    rel = lax.stop_gradient(_checks.real(relevance, "relevance", dtype))
    _checks.same_shape(x_in, rel, ("scores", "relevance"))
    known = _checks.concrete(relevance)
    if known is not None and known.size and np.any(known < 0):
        bad = known[known < 0].ravel()[0].item()
        raise ValueError(f"`relevance` must be non-negative, got relevance={bad!r}")
    n = x_in.shape[-1]
    if n == 0:  # empty lists have no positive gain: NDCG 0, as for any such row
        return jnp.zeros(x_in.shape[:-1], x_in.dtype)
    if k is not None:
        k = _checks.k_value(k, n, (), minimum=1)
    valid = _checks.where(where, x_in.shape)
    eps = _common.strength(regularization_strength, x_in)
    out = _ndcg(x_in.astype(dtype), rel, eps, valid, k=k, regularization=regularization, gain=gain)
    return out.astype(x_in.dtype)


@functools.partial(jax.jit, static_argnames=("k", "regularization", "gain"))
def _ndcg(x, rel, eps, valid, *, k, regularization, gain):
    return _sharding.on_batch_shards(
        functools.partial(_ndcg_rows, k=k, regularization=regularization, gain=gain),
        x,
        rel,
        eps,
        valid,
        name="scores",
    )


def _ndcg_rows(x, rel, eps, valid, *, k, regularization, gain):
    n, dtype = x.shape[-1], x.dtype
    r = soft_rank(
        x, descending=True, regularization=regularization, regularization_strength=eps, where=valid
    )
    in_row = jnp.ones(rel.shape, bool) if valid is None else valid
    if gain == "exp2":
        top = jnp.max(jnp.where(in_row, rel, -jnp.inf), axis=-1, keepdims=True)
        top = jnp.where(jnp.isfinite(top) | jnp.isnan(top), top, 0)
        g = jnp.exp2(rel - top) - jnp.exp2(-top)  # (2^rel - 1) / 2^top
    else:
        g = rel
    g = jnp.where(in_row, g, 0)
    # A traced negative relevance (known ones raise) makes its row NaN.
    g = jnp.where(jnp.any(in_row & (rel < 0), axis=-1, keepdims=True), jnp.nan, g)
    r_safe = jnp.where(in_row, r, 1)
    disc = 1 / jnp.log2(1 + r_safe)
    if k is not None:
        disc = disc * jnp.clip(k + 1 - r_safe, 0, 1)
    dcg = jnp.sum(g * disc, axis=-1)
    ideal = -jnp.sort(-g, axis=-1)
    pos = jnp.arange(1, n + 1, dtype=dtype)
    idisc = 1 / jnp.log2(1 + pos)
    if k is not None:
        idisc = jnp.where(pos <= k, idisc, 0)
    idcg = jnp.sum(ideal * jnp.broadcast_to(idisc, ideal.shape), axis=-1)
    out = _common.safe_div(dcg, idcg)
    return jnp.where(jnp.isnan(dcg) | jnp.isnan(idcg), jnp.nan, out)
