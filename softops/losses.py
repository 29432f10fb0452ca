r"""Losses and statistics built on soft sort, soft rank and the soft top-k mask.

Conventions (as optax's ranking losses): the last axis holds the items (list entries, classes,
residuals), the leading axes are a batch; every function returns one value per example (the batch
shape), with no reduction over the batch. ``where=`` is an optional boolean mask of the items'
shape: ``False`` entries take no part (they neither count as items nor receive gradient).

- :func:`spearman_correlation`, :func:`spearman_loss`: correlation of soft ranks;
- :func:`soft_topk_rank_loss`: hinge on the soft (descending) rank of the true class;
- :func:`soft_topk_mask_loss`: minus the log mass of the soft top-k mask on the true class;
- :func:`soft_quantile`, :func:`soft_median`: interpolated order statistics of the soft sort;
- :func:`soft_lts_loss`: soft least trimmed squares;
- :func:`soft_ndcg`: NDCG with soft ranks in the discount.

Each tends to its hard counterpart as the regularization strength ε goes to 0. Masked soft ranks
move the masked entries far beyond the valid ones (a gap of :math:`2(n+1)\varepsilon`, which
isolates them in the isotonic problem exactly, so the valid entries get the soft ranks 1..n_valid
of the valid entries alone); masked soft sorts solve the isotonic problem of the valid entries with
the masked ones in separate trailing blocks. Both are exact, not approximations.

Reference: Blondel, Teboul, Berthet, Djolonga, Fast Differentiable Sorting and Ranking, ICML 2020,
arXiv:2002.08871 (Section 6: top-k classification, Spearman, least trimmed squares).
"""

from __future__ import annotations

import numbers
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from softops._checks import check_choice, check_floating, check_positive, compute_dtype
from softops.isotonic import isotonic_kl, isotonic_l2
from softops.projection import REGULARIZATIONS, Regularization, soft_rank
from softops.topk_ot import soft_topk_mask

__all__ = [
    "soft_lts_loss",
    "soft_median",
    "soft_ndcg",
    "soft_quantile",
    "soft_topk_mask_loss",
    "soft_topk_rank_loss",
    "spearman_correlation",
    "spearman_loss",
]

Gain = Literal["exp2", "linear"]
GAINS = ("exp2", "linear")

# ----------------------------------------------------------------------------- helpers


def _items(x, name: str) -> jax.Array:
    """A floating array with at least one axis (the items)."""
    x = check_floating(x, name)
    if x.ndim == 0:
        raise ValueError(f"`{name}` must have at least one axis (the items), got a scalar {name}")
    return x


def _real(x, name: str, dtype) -> jax.Array:
    """An integer or floating array cast to ``dtype`` (targets and relevance labels)."""
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a real-valued array, got {name}={x!r}")
    arr = jnp.asarray(x)
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"`{name}` must have an integer or floating dtype, got dtype {arr.dtype}")
    return arr.astype(dtype)


def _where(where, shape) -> jax.Array | None:
    if where is None:
        return None
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
        raise TypeError(f"`where` must be a boolean array, got dtype {where.dtype}")
    if where.shape != tuple(shape):
        raise ValueError(
            f"`where` must have the items' shape {tuple(shape)}, got shape {where.shape}"
        )
    return where


def _same_shape(a: jax.Array, b: jax.Array, names: tuple[str, str]) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must have the same shape, got "
            f"{names[0]}.shape={a.shape} and {names[1]}.shape={b.shape}"
        )


def _strength(value, batch_shape, dtype, name: str = "regularization_strength") -> jax.Array:
    """The strength broadcast to the batch shape plus a trailing axis of 1."""
    eps = jnp.asarray(check_positive(value, name)).astype(dtype)
    try:
        eps = jnp.broadcast_to(eps, batch_shape)
    except ValueError:
        raise ValueError(
            f"`{name}` must be a scalar or broadcast to the batch shape {batch_shape}, "
            f"got shape {eps.shape}"
        ) from None
    return eps[..., None]


def _count(x: jax.Array, valid: jax.Array | None) -> jax.Array:
    """Number of valid items per row, ``[..., 1]``, in the dtype of ``x``."""
    if valid is None:
        return jnp.full(x.shape[:-1] + (1,), x.shape[-1], x.dtype)
    return jnp.sum(valid, axis=-1, keepdims=True).astype(x.dtype)


def _soft_ranks(x, valid, eps, *, descending: bool, regularization: str) -> jax.Array:
    r"""Soft ranks along the last axis; valid entries get the ranks of the valid entries alone.

    Masked entries are moved :math:`2(n+1)\varepsilon` beyond the valid ones (after them in the
    rank order); then their isotonic block never pools with a valid one, for L2 and KL alike.
    """
    if valid is not None:
        margin = 2.0 * (x.shape[-1] + 1) * eps
        xs = lax.stop_gradient(x)
        if descending:
            fill = jnp.min(jnp.where(valid, xs, jnp.inf), axis=-1, keepdims=True) - margin
        else:
            fill = jnp.max(jnp.where(valid, xs, -jnp.inf), axis=-1, keepdims=True) + margin
        fill = jnp.where(jnp.isfinite(fill), fill, jnp.zeros_like(fill))
        x = jnp.where(valid, x, fill)
    return soft_rank(
        x,
        descending=descending,
        regularization=regularization,
        regularization_strength=eps[..., 0],
    )


def _soft_sort_ascending(x, valid, eps, *, regularization: str) -> jax.Array:
    r"""Ascending soft sort along the last axis; the valid entries' soft sort comes first.

    With ``s`` the valid entries of ``-x`` sorted in decreasing order and
    :math:`\rho = (n_v, \dots, 1)/\varepsilon`, the soft sort is :math:`-(\rho - v)` with
    ``v`` the decreasing isotonic fit of :math:`\rho - s` (as :func:`softops.soft_sort`).
    Masked positions trail with values below every valid one, so they form their own blocks.
    """
    key = x if valid is None else jnp.where(valid, x, jnp.inf)
    s = -jnp.sort(key, axis=-1)  # -x in decreasing order, masked entries (-inf) last
    nv = _count(x, valid)
    pos = lax.broadcasted_iota(x.dtype, x.shape, x.ndim - 1)
    inside = pos < nv
    s = jnp.where(inside, s, jnp.zeros_like(s))
    rho = (nv - pos) / eps
    if valid is not None:
        gaps = jnp.where(inside, lax.stop_gradient(rho - s), jnp.inf)
        low = jnp.min(gaps, axis=-1, keepdims=True)
        low = jnp.where(jnp.isfinite(low), low, jnp.zeros_like(low)) - 1.0
        rho = jnp.where(inside, rho, low)
    v = isotonic_l2(rho, s) if regularization == "l2" else isotonic_kl(rho, s)
    return v - rho


def _take_last(x: jax.Array, index: jax.Array) -> jax.Array:
    """``x[..., index]`` per row; out-of-range indices give NaN."""
    out = jnp.take_along_axis(x, index[..., None], axis=-1, mode="fill", fill_value=jnp.nan)
    return out[..., 0]


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` where ``den > 0``, else 0, with finite gradients everywhere."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, jnp.ones_like(den)), jnp.zeros_like(num))


def _hard_average_ranks(t: jax.Array, valid) -> jax.Array:
    """Ascending ranks from 1 along the last axis, ties get their average rank (no gradient)."""
    t = lax.stop_gradient(t)
    key = t if valid is None else jnp.where(valid, t, jnp.inf)
    rows = key.reshape(-1, key.shape[-1])
    srt = jnp.sort(rows, axis=-1)
    left = jax.vmap(lambda a, v: jnp.searchsorted(a, v, side="left"))(srt, rows)
    right = jax.vmap(lambda a, v: jnp.searchsorted(a, v, side="right"))(srt, rows)
    return ((left + right + 1).astype(t.dtype) / 2).reshape(t.shape)


# ----------------------------------------------------------------------------- spearman


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

    With :math:`r = \mathrm{soft\_rank}_\varepsilon(\text{predictions})` and
    :math:`t` the ranks of the targets, centred over the valid items
    (:math:`\tilde r = r - \bar r`),

    .. math::
        \rho_\varepsilon = \frac{\langle \tilde r, \tilde t\rangle}{\|\tilde r\|\,\|\tilde t\|}.

    The targets are soft-ranked too, by default with the same strength (Blondel et al.'s
    convention): ``target_regularization_strength=None``. A positive value gives them their own
    strength; ``0`` uses their hard ranks (ties get the average rank, as ``scipy.stats.spearmanr``).
    A row whose centred ranks are all zero (constant predictions or targets) gets 0.

    Limits: ε → 0 (both strengths) gives Spearman's ρ of the hard ranks; under ``"l2"``, ε → ∞
    (both) gives Pearson's correlation of the raw values, since then
    :math:`\tilde r \to (x - \bar x)/\varepsilon`.

    Args:
        predictions: ``[..., n]`` floating array.
        targets: ``[..., n]`` real array (cast to the predictions' dtype); gradients flow to it
            when it is soft-ranked.
        regularization_strength: ε > 0 for the predictions, scalar or of the batch shape ``[...]``.
        target_regularization_strength: ``None`` (same as ε), a positive strength, or ``0`` (hard).
        regularization: ``"l2"`` or ``"kl"``.
        where: optional boolean ``[..., n]``; only the ``True`` items are ranked and correlated.

    Returns:
        The correlations, shape ``[...]``, in [-1, 1].

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
    check_choice(regularization, REGULARIZATIONS, "regularization")
    p = _items(predictions, "predictions")
    out_dtype = p.dtype
    dtype = compute_dtype(p.dtype)
    t = _real(targets, "targets", dtype)
    _same_shape(p, t, ("predictions", "targets"))
    valid = _where(where, p.shape)
    p = p.astype(dtype)
    batch = p.shape[:-1]
    eps = _strength(regularization_strength, batch, dtype)
    rp = _soft_ranks(p, valid, eps, descending=False, regularization=regularization)
    ts = target_regularization_strength
    if isinstance(ts, numbers.Real) and not isinstance(ts, bool) and ts == 0:
        rt = _hard_average_ranks(t, valid)
    else:
        eps_t = eps if ts is None else _strength(ts, batch, dtype, "target_regularization_strength")
        rt = _soft_ranks(t, valid, eps_t, descending=False, regularization=regularization)
    w = jnp.ones_like(rp) if valid is None else valid.astype(dtype)
    nv = _count(rp, valid)
    cp = w * (rp - _safe_div(jnp.sum(w * rp, axis=-1, keepdims=True), nv))
    ct = w * (rt - _safe_div(jnp.sum(w * rt, axis=-1, keepdims=True), nv))
    num = jnp.sum(cp * ct, axis=-1)
    sp, st = jnp.sum(cp * cp, axis=-1), jnp.sum(ct * ct, axis=-1)
    ok = (sp > 0) & (st > 0)
    one = jnp.ones_like(sp)
    den = jnp.sqrt(jnp.where(ok, sp, one)) * jnp.sqrt(jnp.where(ok, st, one))
    out = jnp.where(ok, num / den, jnp.zeros_like(num))
    return out.astype(out_dtype)


def spearman_loss(
    predictions: ArrayLike,
    targets: ArrayLike,
    *,
    regularization_strength: ArrayLike = 1.0,
    target_regularization_strength: ArrayLike | None = None,
    regularization: Regularization = "l2",
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""One minus the soft Spearman correlation: :math:`1 - \rho_\varepsilon`, in [0, 2].

    See :func:`spearman_correlation` for the arguments, limits and the treatment of the targets.

    Args:
        predictions: ``[..., n]`` floating array.
        targets: ``[..., n]`` real array.
        regularization_strength: ε > 0, scalar or of the batch shape.
        target_regularization_strength: ``None`` (same as ε), a positive strength, or ``0`` (hard).
        regularization: ``"l2"`` or ``"kl"``.
        where: optional boolean ``[..., n]`` mask of the items to use.

    Returns:
        The losses, shape ``[...]``.

    Raises:
        TypeError: as :func:`spearman_correlation`.
        ValueError: as :func:`spearman_correlation`.

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
    return 1 - rho


# ----------------------------------------------------------------------------- top-k classification


def _labels(labels, batch_shape) -> jax.Array:
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"`labels` must have an integer dtype, got dtype {labels.dtype}")
    if labels.shape != tuple(batch_shape):
        raise ValueError(
            f"`labels` must have the batch shape {tuple(batch_shape)} (logits.shape[:-1]), "
            f"got shape {labels.shape}"
        )
    return labels


def _check_k(k, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"`k` must be an int, got k={k!r}")
    if not 1 <= k <= n:
        raise ValueError(f"`k` must satisfy 1 <= k <= n along the last axis, got k={k} for n={n}")
    return int(k)


def soft_topk_rank_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    k: int = 1,
    regularization_strength: ArrayLike = 0.1,
    regularization: Regularization = "l2",
    squash: bool = True,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Top-k classification loss: hinge on the soft descending rank of the true class.

    Following Blondel et al. (2020, Section 6, CIFAR experiments), the logits are squashed into
    [0, 1] by the logistic function (``squash=True``) so that ε has a fixed scale, ranked in
    descending order (rank 1 = largest), and

    .. math::
        \ell(\theta, y) = \max\bigl(r_y(\sigma(\theta)) - k,\ 0\bigr),
        \qquad r = \mathrm{soft\_rank}_\varepsilon(\sigma(\theta), \text{descending}).

    As ε → 0 it is ``max(rank_y - k, 0)`` with the hard rank: zero exactly when the true class is
    in the top k (ties share their average rank). Under ``"l2"`` soft ranks lie in [1, n], so the
    loss is at most n - k; as ε → ∞ every rank tends to (n + 1)/2.

    Args:
        logits: ``[..., n_classes]`` floating array.
        labels: integer ``[...]`` (the batch shape) in ``[0, n_classes)``; an out-of-range label
            gives NaN (it cannot be checked at trace time).
        k: the ``k`` of top-k, ``1 <= k <= n_classes``.
        regularization_strength: ε > 0, scalar or of the batch shape.
        regularization: ``"l2"`` or ``"kl"``.
        squash: apply the logistic function to the logits first.
        where: optional boolean ``[..., n_classes]``: the candidate classes (the label must be one).

    Returns:
        The losses, shape ``[...]``.

    Raises:
        TypeError: for non-floating logits, non-integer labels, a non-int ``k`` or non-bool
            ``squash``.
        ValueError: for a bad ``k``, labels shape, strength or ``regularization``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops.losses import soft_topk_rank_loss
        >>> logits = jnp.array([[2.0, 0.0, -2.0], [2.0, 0.0, -2.0]])
        >>> soft_topk_rank_loss(logits, jnp.array([0, 2]), k=1, regularization_strength=1e-3)
        Array([0., 2.], dtype=float32)
    """
    check_choice(regularization, REGULARIZATIONS, "regularization")
    if not isinstance(squash, bool):
        raise TypeError(f"`squash` must be a bool, got squash={squash!r}")
    x = _items(logits, "logits")
    k = _check_k(k, x.shape[-1])
    labels = _labels(labels, x.shape[:-1])
    valid = _where(where, x.shape)
    dtype = compute_dtype(x.dtype)
    z = x.astype(dtype)
    if squash:
        z = jax.nn.sigmoid(z)
    eps = _strength(regularization_strength, x.shape[:-1], dtype)
    r = _soft_ranks(z, valid, eps, descending=True, regularization=regularization)
    return jax.nn.relu(_take_last(r, labels) - k).astype(x.dtype)


def soft_topk_mask_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    k: int = 1,
    epsilon: float | ArrayLike | None = None,
    temperature: float | ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Top-k classification loss from the optimal-transport soft top-k mask.

    With :math:`A = \mathrm{soft\_topk\_mask}(\theta, k)` (:func:`softops.topk_ot.soft_topk_mask`,
    entries in [0, 1] summing to k), the loss is the negative log mass on the true class,

    .. math::
        \ell(\theta, y) = -\log \max(A_y, \text{tiny}),

    with ``tiny`` the dtype's smallest normal number (the clip only acts where ``A_y`` underflows).
    We chose :math:`-\log A_y` over :math:`1 - A_y`: since :math:`A_y = \sigma((\theta_y -
    \tau)/T)`, it is the softplus :math:`\log(1 + e^{-(\theta_y - \tau)/T})`, whose gradient does
    not vanish when the true class is far outside the top k. As ε → 0 it is 0 when the true class
    is strictly in the top k and grows without bound otherwise.

    Args:
        logits: ``[..., n_classes]`` floating array.
        labels: integer ``[...]`` in ``[0, n_classes)``; out of range gives NaN.
        k: the ``k`` of top-k, ``1 <= k <= n_classes``.
        epsilon: the mask's regularization (default 0.1), relative to the normalized cost.
        temperature: alternative to ``epsilon`` in the units of the logits; mutually exclusive.
        where: optional boolean ``[..., n_classes]`` of candidate classes.

    Returns:
        The losses, shape ``[...]``.

    Raises:
        TypeError: for non-floating logits, non-integer labels or a non-int ``k``.
        ValueError: for a bad ``k``, labels shape or strength.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops.losses import soft_topk_mask_loss
        >>> logits = jnp.array([3.0, 1.0, -1.0, -3.0])
        >>> soft_topk_mask_loss(logits, jnp.array(0), k=2, temperature=0.1) < 1e-6
        Array(True, dtype=bool)
    """
    x = _items(logits, "logits")
    k = _check_k(k, x.shape[-1])
    labels = _labels(labels, x.shape[:-1])
    valid = _where(where, x.shape)
    mask = soft_topk_mask(x, k, epsilon=epsilon, temperature=temperature, where=valid)
    tiny = jnp.finfo(mask.dtype).tiny
    return -jnp.log(jnp.maximum(_take_last(mask, labels), tiny))


# ----------------------------------------------------------------------------- order statistics


def _check_q(q, dtype) -> jax.Array:
    if isinstance(q, (bool, np.bool_)):
        raise TypeError(f"`q` must be a number or a float array, got q={q!r}")
    if isinstance(q, (numbers.Real, np.ndarray, list, tuple)):
        qa = np.asarray(q, dtype=np.float64)
        if qa.ndim > 1 or not np.all((qa >= 0) & (qa <= 1)):
            raise ValueError(f"`q` must be a scalar or 1-D with entries in [0, 1], got q={q!r}")
    qa = jnp.asarray(q)
    if not jnp.issubdtype(qa.dtype, jnp.floating) and not jnp.issubdtype(qa.dtype, jnp.integer):
        raise TypeError(f"`q` must be real, got dtype {qa.dtype}")
    if qa.ndim > 1:
        raise ValueError(f"`q` must be a scalar or 1-D, got shape {qa.shape}")
    return qa.astype(dtype)


def soft_quantile(
    x: ArrayLike,
    q: float | ArrayLike,
    *,
    regularization_strength: ArrayLike = 1.0,
    regularization: Regularization = "l2",
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft quantiles: linear interpolation between the order statistics of the soft sort.

    With :math:`s = \mathrm{soft\_sort}_\varepsilon(x)` (ascending, over the :math:`n_v` valid
    items) and :math:`h = q\,(n_v - 1)`,

    .. math::
        Q_\varepsilon(q) = (1 - (h - \lfloor h\rfloor))\, s_{\lfloor h\rfloor}
        + (h - \lfloor h\rfloor)\, s_{\lfloor h\rfloor + 1},

    NumPy's default ``method="linear"``. ε → 0 gives ``np.quantile(x, q)``; under ``"l2"``,
    ε → ∞ gives ``mean(x)``. The L2 soft sort pools neighbours whose gap exceeds 1/ε, so ε acts
    relative to the inverse scale of ``x``.

    Args:
        x: ``[..., n]`` floating array.
        q: a quantile in [0, 1], or a 1-D array ``[m]`` of them (Python and NumPy values are
            checked; JAX arrays may be traced and are not). Differentiable in ``q``.
        regularization_strength: ε > 0, scalar or of the batch shape.
        regularization: ``"l2"`` or ``"kl"``.
        where: optional boolean ``[..., n]`` of the items to use (at least one per row).

    Returns:
        Shape ``[...]`` for a scalar ``q``, ``[..., m]`` for a 1-D ``q`` (NumPy puts the ``q``
        axis first instead).

    Raises:
        TypeError: for non-floating ``x``, non-real ``q`` or non-boolean ``where``.
        ValueError: for ``q`` outside [0, 1] or of rank > 1, a bad strength or option.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops.losses import soft_quantile
        >>> soft_quantile(jnp.array([4.0, 1.0, 3.0, 2.0]), 0.25, regularization_strength=1e-3)
        Array(1.75, dtype=float32)
    """
    check_choice(regularization, REGULARIZATIONS, "regularization")
    x_in = _items(x, "x")
    dtype = compute_dtype(x_in.dtype)
    qa = _check_q(q, dtype)
    valid = _where(where, x_in.shape)
    xc = x_in.astype(dtype)
    batch = xc.shape[:-1]
    eps = _strength(regularization_strength, batch, dtype)
    s = _soft_sort_ascending(xc, valid, eps, regularization=regularization)
    nv = _count(xc, valid)  # [..., 1]
    qb = jnp.broadcast_to(qa.reshape((1,) * len(batch) + (-1,)), batch + (qa.size,))
    h = qb * (nv - 1)
    lo = jnp.clip(jnp.floor(lax.stop_gradient(h)), 0, jnp.maximum(nv - 1, 0))
    hi = jnp.minimum(lo + 1, jnp.maximum(nv - 1, 0))
    frac = h - lo
    s_lo = jnp.take_along_axis(s, lo.astype(jnp.int32), axis=-1)
    s_hi = jnp.take_along_axis(s, hi.astype(jnp.int32), axis=-1)
    out = (1 - frac) * s_lo + frac * s_hi
    if qa.ndim == 0:
        out = out[..., 0]
    return out.astype(x_in.dtype)


def soft_median(
    x: ArrayLike,
    *,
    regularization_strength: ArrayLike = 1.0,
    regularization: Regularization = "l2",
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft median: :func:`soft_quantile` at q = 1/2 (mean of the two middle values, even n).

    ε → 0 gives ``np.median``; under ``"l2"``, ε → ∞ gives the mean.

    Args:
        x: ``[..., n]`` floating array.
        regularization_strength: ε > 0, scalar or of the batch shape.
        regularization: ``"l2"`` or ``"kl"``.
        where: optional boolean ``[..., n]`` of the items to use.

    Returns:
        The soft medians, shape ``[...]``.

    Raises:
        TypeError: as :func:`soft_quantile`.
        ValueError: as :func:`soft_quantile`.

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
    trim: float = 0.25,
    regularization_strength: ArrayLike = 1.0,
    regularization: Regularization = "l2",
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft least trimmed squares: mean of the smallest soft-sorted squared residuals.

    With :math:`s = \mathrm{soft\_sort}_\varepsilon(r^2)` (ascending, over the :math:`n_v` valid
    residuals) and :math:`h = n_v - \lfloor \mathrm{trim} \cdot n_v\rfloor`,

    .. math::
        \ell_\varepsilon(r) = \frac1h \sum_{i=1}^{h} s_i .

    ε → 0 gives least trimmed squares (the mean of the h smallest :math:`r_i^2`); under ``"l2"``,
    ε → ∞ gives least squares (``mean(r**2)``): the soft sort pools every value with the large
    ones. Blondel et al. (2020), Section 6. The L2 soft sort pools squared residuals whose gap
    exceeds 1/ε, so choose ε relative to the scale of ``r**2``.

    Args:
        residuals: ``[..., n]`` floating array (one regression problem per row).
        trim: fraction of the residuals to trim, ``0 <= trim < 1``.
        regularization_strength: ε > 0, scalar or of the batch shape.
        regularization: ``"l2"`` or ``"kl"``.
        where: optional boolean ``[..., n]`` of the residuals to use (at least one per row).

    Returns:
        The losses, shape ``[...]``.

    Raises:
        TypeError: for non-floating residuals or a non-boolean ``where``.
        ValueError: for ``trim`` outside [0, 1), a bad strength or option.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops.losses import soft_lts_loss
        >>> r = jnp.array([0.1, -0.2, 0.1, 5.0])
        >>> soft_lts_loss(r, trim=0.25, regularization_strength=1e-3).round(4)
        Array(0.02, dtype=float32)
    """
    check_choice(regularization, REGULARIZATIONS, "regularization")
    if isinstance(trim, bool) or not isinstance(trim, numbers.Real) or not 0 <= trim < 1:
        raise ValueError(f"`trim` must be a number with 0 <= trim < 1, got trim={trim!r}")
    r_in = _items(residuals, "residuals")
    dtype = compute_dtype(r_in.dtype)
    valid = _where(where, r_in.shape)
    r = r_in.astype(dtype)
    eps = _strength(regularization_strength, r.shape[:-1], dtype)
    s = _soft_sort_ascending(r * r, valid, eps, regularization=regularization)
    nv = _count(r, valid)
    keep = nv - jnp.floor(float(trim) * nv + 1e-6)
    pos = lax.broadcasted_iota(dtype, s.shape, s.ndim - 1)
    kept = jnp.where(pos < keep, s, jnp.zeros_like(s))
    return _safe_div(jnp.sum(kept, axis=-1), keep[..., 0]).astype(r_in.dtype)


# ----------------------------------------------------------------------------- NDCG


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

    With :math:`r = \mathrm{soft\_rank}_\varepsilon(\text{scores}, \text{descending})` (rank 1 =
    highest score) and gains :math:`g = 2^{\mathrm{rel}} - 1` (``"exp2"``) or
    :math:`g = \mathrm{rel}` (``"linear"``, as ``sklearn.metrics.ndcg_score``),

    .. math::
        \mathrm{DCG}_\varepsilon = \sum_i \frac{g_i\, c_k(r_i)}{\log_2(1 + r_i)}, \qquad
        \mathrm{NDCG}_\varepsilon = \mathrm{DCG}_\varepsilon / \mathrm{IDCG},

    where IDCG is the hard DCG of the ideal order (relevance sorted, top k) and the cutoff is
    :math:`c_k(r) = \mathrm{clip}(k + 1 - r, 0, 1)` (1 when ``k`` is None): equal to
    :math:`[r \le k]` at integer ranks and continuous in between. ε → 0 gives the hard NDCG@k
    (for untied scores); a row without positive gain gets 0. For ε > 0 the value is a smooth
    surrogate, not a guaranteed lower bound of the hard NDCG.

    Args:
        scores: ``[..., n]`` floating array (higher = ranked first).
        relevance: ``[..., n]`` non-negative real array (graded relevance); no gradient.
        k: cutoff, ``1 <= k <= n``, or None for all items.
        regularization_strength: ε > 0, scalar or of the batch shape.
        regularization: ``"l2"`` or ``"kl"``.
        gain: ``"exp2"`` (:math:`2^{rel} - 1`) or ``"linear"``.
        where: optional boolean ``[..., n]`` of the items in each list.

    Returns:
        The NDCG values, shape ``[...]`` (maximize it; use ``1 - soft_ndcg`` as a loss).

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
    check_choice(regularization, REGULARIZATIONS, "regularization")
    check_choice(gain, GAINS, "gain")
    x_in = _items(scores, "scores")
    dtype = compute_dtype(x_in.dtype)
    rel = lax.stop_gradient(_real(relevance, "relevance", dtype))
    _same_shape(x_in, rel, ("scores", "relevance"))
    n = x_in.shape[-1]
    if k is not None:
        k = _check_k(k, n)
    valid = _where(where, x_in.shape)
    x = x_in.astype(dtype)
    eps = _strength(regularization_strength, x.shape[:-1], dtype)
    r = _soft_ranks(x, valid, eps, descending=True, regularization=regularization)
    g = jnp.exp2(rel) - 1 if gain == "exp2" else rel
    if valid is not None:
        g = jnp.where(valid, g, jnp.zeros_like(g))
    disc = 1 / jnp.log2(1 + r)
    if k is not None:
        disc = disc * jnp.clip(k + 1 - r, 0, 1)
    dcg = jnp.sum(g * disc, axis=-1)
    ideal = -jnp.sort(-g, axis=-1)
    pos = jnp.arange(1, n + 1, dtype=dtype)
    idisc = 1 / jnp.log2(1 + pos)
    if k is not None:
        idisc = jnp.where(pos <= k, idisc, jnp.zeros_like(idisc))
    idcg = jnp.sum(ideal * jnp.broadcast_to(idisc, ideal.shape), axis=-1)
    return _safe_div(dcg, idcg).astype(x_in.dtype)
