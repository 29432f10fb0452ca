r"""Learning-to-rank losses and metrics on exact soft ranks (private; see `softops.losses`).

Shared conventions: ``scores`` ``[..., n]`` (higher = ranked first); each row holds one list, or
several packed lists with ``segments=`` (an integer id per item; items with equal ids form one
list). A function returns one value per row: the mean over the row's lists (lists without a
valid item do not count; a row without any gets 0). The ranks are descending soft ranks with
strength ε, by default relative to each list's spread (``relative=True``: ε in units of
$\sigma\sqrt{12}/m$ for a list of $m$ valid scores with standard deviation $\sigma$, so the
value does not depend on the scale of the scores), see [`softops.ltr.rank_fn`][softops.ltr.rank_fn].
As ε → 0 every function tends to its hard counterpart (for untied scores).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softops import _checks
from softops.losses._lists import GAINS, Gain, Lists, cutoff_k, run_metric
from softops.projection import Regularization


def _metric(metric, scores, relevance, k, strength, relative, regularization, gain, where,
            segments, *, name="relevance", signed=False, k_required=False):  # fmt: skip
    _checks.choice(gain, GAINS, "gain")
    relative = _checks.boolean(relative, "relative")
    a = Lists(scores, relevance, where, segments, strength, regularization, name, signed)
    n = a.x.shape[-1]
    if n == 0:
        return jnp.zeros(a.x.shape if metric == "lambda" else a.x.shape[:-1], a.out_dtype)
    k = cutoff_k(k, n, required=k_required)
    out = run_metric(
        a.x,
        a.rel,
        a.eps,
        a.valid,
        a.ids,
        k=k,
        relative=relative,
        regularization=regularization,
        gain=gain,
        metric=metric,
    )
    return out.astype(a.out_dtype)


def soft_ndcg(
    scores: ArrayLike,
    relevance: ArrayLike,
    *,
    k: int | None = None,
    regularization_strength: ArrayLike = 1.0,
    relative: bool = True,
    regularization: Regularization = "l2",
    gain: Gain = "exp2",
    where: ArrayLike | None = None,
    segments: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft NDCG: the DCG discount evaluated at soft (descending) ranks of the scores.

    With $r$ the soft ranks (rank 1 = highest score) and gains $g = 2^{\mathrm{rel}} - 1$
    (``"exp2"``) or $g = \mathrm{rel}$ (``"linear"``, as ``sklearn.metrics.ndcg_score``),

    $$
    \mathrm{DCG}_\varepsilon = \sum_i \frac{g_i\, c_k(r_i)}{\log_2(1 + r_i)}, \qquad
    \mathrm{NDCG}_\varepsilon = \mathrm{DCG}_\varepsilon / \mathrm{IDCG},
    $$

    where IDCG is the hard DCG of the ideal order (relevance sorted, top k) and the cutoff is
    $c_k(r) = \mathrm{clip}(k + 1 - r, 0, 1)$ (1 when ``k`` is None): equal to
    $[r \le k]$ at integer ranks and continuous in between. ε → 0 gives the hard NDCG@k
    (for untied scores); a list without positive gain gets 0. For ε > 0 the value is a smooth
    surrogate, not a guaranteed lower bound of the hard NDCG. The ``"exp2"`` gains are computed
    relative to each list's largest relevance, so large grades do not overflow.

    The default strength is relative (``relative=True``): with an absolute ε of 1, standard
    normal scores of a list of 16 items pool into ranks near 8.5, the cutoff at ``k = 5`` is 0
    for every item, and so are the value and the gradient; relative to the spread of the list,
    the top items keep ranks near their hard ranks at any scale and any length.

    As a training loss on long lists, a cutoff wider than the evaluated one trains better: items
    ranked below ``k + 1`` get no gradient through their own cutoff (see the learning-to-rank
    task in the docs).

    Args:
        scores: ``[..., n]`` floating array (higher = ranked first).
        relevance: ``[..., n]`` non-negative real array (graded relevance); no gradient. A
            known negative value raises; a traced one gives NaN for its row.
        k: cutoff, ``1 <= k <= n``, or None for all items.
        gain: ``"exp2"`` ($2^{rel} - 1$) or ``"linear"``.
        regularization_strength: ε > 0, a number or an array of the batch shape ``[...]``.
        relative: ε in units of each list's spread (default) or of the scores.
        regularization: the soft ranks', as in `softops.soft_rank` (``"l2"``, ``"kl"``,
            ``"p=3/2"``, ``"p=4/3"``).
        where: optional boolean ``[..., n]`` of the items in the lists.
        segments: optional integer ``[..., n]`` list ids (packed lists).

    Returns:
        The NDCG values, shape ``[...]`` (maximize it; use ``1 - soft_ndcg`` as a loss); NaN for a
        row with a NaN score or relevance.

    Raises:
        TypeError: for non-floating scores, non-real relevance, a non-int ``k``, a non-boolean
            ``where``, non-integer ``segments``.
        ValueError: for mismatched shapes, a bad ``k``, strength, ``gain`` or ``regularization``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops.losses import soft_ndcg
        >>> rel = jnp.array([3.0, 2.0, 0.0])
        >>> v = soft_ndcg(jnp.array([0.9, 0.5, 0.1]), rel, regularization_strength=1e-3)
        >>> round(float(v), 6)
        1.0
    """
    return _metric("ndcg", scores, relevance, k, regularization_strength, relative,
                   regularization, gain, where, segments)  # fmt: skip


def soft_mrr(
    scores: ArrayLike,
    relevance: ArrayLike,
    *,
    k: int | None = None,
    regularization_strength: ArrayLike = 1.0,
    relative: bool = True,
    regularization: Regularization = "l2",
    where: ArrayLike | None = None,
    segments: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft mean reciprocal rank: $\max_{i:\,\mathrm{rel}_i > 0} c_k(r_i) / r_i$ per list.

    The reciprocal soft rank of the best-ranked relevant item (relevance > 0), with the cutoff
    $c_k(r) = \mathrm{clip}(k + 1 - r, 0, 1)$ of [`soft_ndcg`][softops.losses.soft_ndcg]
    (MRR@k; none when ``k`` is None). 0 for a list without a relevant item. ε → 0 gives the
    hard MRR (rax's ``mrr_metric``); the maximum makes it once differentiable where two relevant
    items tie for it.

    Args:
        scores: ``[..., n]`` floating array.
        relevance: ``[..., n]`` non-negative real array; items with relevance > 0 are relevant.
        k: cutoff, ``1 <= k <= n``, or None.
        regularization_strength: ε > 0, a number or an array of the batch shape ``[...]``.
        relative: ε in units of each list's spread (default) or of the scores.
        regularization: the soft ranks', as in `softops.soft_rank` (``"l2"``, ``"kl"``,
            ``"p=3/2"``, ``"p=4/3"``).
        where: optional boolean ``[..., n]`` of the items in the lists.
        segments: optional integer ``[..., n]`` list ids (packed lists).

    Returns:
        The MRR values, shape ``[...]``, in [0, 1] (maximize it).

    Raises:
        TypeError: as [`soft_ndcg`][softops.losses.soft_ndcg].
        ValueError: as [`soft_ndcg`][softops.losses.soft_ndcg].

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops.losses import soft_mrr
        >>> soft_mrr(jnp.array([0.9, 0.5, 0.1]), jnp.array([0.0, 1.0, 1.0]),
        ...          regularization_strength=1e-3)
        Array(0.5, dtype=float32)
    """
    return _metric("mrr", scores, relevance, k, regularization_strength, relative,
                   regularization, "linear", where, segments)  # fmt: skip


def soft_precision(
    scores: ArrayLike,
    relevance: ArrayLike,
    *,
    k: int,
    regularization_strength: ArrayLike = 1.0,
    relative: bool = True,
    regularization: Regularization = "l2",
    where: ArrayLike | None = None,
    segments: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft precision@k: $\sum_{i:\,\mathrm{rel}_i > 0} c_k(r_i) / \min(k, m)$ per list.

    The soft count of relevant items (relevance > 0) among the top ``k`` of a list of ``m``
    items, with the cutoff $c_k(r) = \mathrm{clip}(k + 1 - r, 0, 1)$ of
    [`soft_ndcg`][softops.losses.soft_ndcg]; the denominator is the number of items retrieved
    (rax's ``precision_metric``). ε → 0 gives the hard precision@k.

    Args:
        scores: ``[..., n]`` floating array.
        relevance: ``[..., n]`` non-negative real array; items with relevance > 0 are relevant.
        k: the cutoff, ``1 <= k <= n`` (required).
        regularization_strength: ε > 0, a number or an array of the batch shape ``[...]``.
        relative: ε in units of each list's spread (default) or of the scores.
        regularization: the soft ranks', as in `softops.soft_rank` (``"l2"``, ``"kl"``,
            ``"p=3/2"``, ``"p=4/3"``).
        where: optional boolean ``[..., n]`` of the items in the lists.
        segments: optional integer ``[..., n]`` list ids (packed lists).

    Returns:
        The precision values, shape ``[...]``, in [0, 1] (maximize it).

    Raises:
        TypeError: as [`soft_ndcg`][softops.losses.soft_ndcg].
        ValueError: as [`soft_ndcg`][softops.losses.soft_ndcg].

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops.losses import soft_precision
        >>> soft_precision(jnp.array([0.9, 0.5, 0.1]), jnp.array([1.0, 0.0, 1.0]), k=2,
        ...                regularization_strength=1e-3)
        Array(0.5, dtype=float32)
    """
    return _metric("precision", scores, relevance, k, regularization_strength, relative,
                   regularization, "linear", where, segments, k_required=True)  # fmt: skip


def rank_linear_loss(
    scores: ArrayLike,
    weights: ArrayLike,
    *,
    regularization_strength: ArrayLike = 1.0,
    relative: bool = True,
    regularization: Regularization = "l2",
    where: ArrayLike | None = None,
    segments: ArrayLike | None = None,
) -> jax.Array:
    r"""The rank-linear loss $\langle w, r\rangle = \sum_i w_i r_i$ at the soft descending ranks.

    A weight is the cost of each step an item moves down the order: with item importances as
    ``weights`` this is the objective of cache eviction and retrieval budgets (keep the
    important items on top), which a regression of the ranks on targets (an MSE) does not
    optimize. Its minimum over orders sorts the items by decreasing weight (the rearrangement
    inequality); ε → 0 gives $\sum_i w_i \mathrm{rank}_i$ at the hard ranks. The soft ranks
    make it piecewise smooth in the scores, with the derivative
    $\partial/\partial s = J_r^\top w$: L2 soft ranks move the items of each block against
    the block's mean weight.

    Args:
        scores: ``[..., n]`` floating array.
        weights: ``[..., n]`` real array, the cost per rank of each item (any sign); no
            gradient.
        regularization_strength: ε > 0, a number or an array of the batch shape ``[...]``.
        relative: ε in units of each list's spread (default) or of the scores.
        regularization: the soft ranks', as in `softops.soft_rank` (``"l2"``, ``"kl"``,
            ``"p=3/2"``, ``"p=4/3"``).
        where: optional boolean ``[..., n]`` of the items in the lists.
        segments: optional integer ``[..., n]`` list ids (packed lists).

    Returns:
        The loss values, shape ``[...]`` (minimize it).

    Raises:
        TypeError: for non-floating scores, non-real weights, a non-boolean ``where``,
            non-integer ``segments``.
        ValueError: for mismatched shapes, a bad strength or ``regularization``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops.losses import rank_linear_loss
        >>> w = jnp.array([3.0, 1.0, 2.0])
        >>> rank_linear_loss(jnp.array([0.9, 0.1, 0.5]), w, regularization_strength=1e-3)
        Array(10., dtype=float32)
    """
    return _metric("rank_linear", scores, weights, None, regularization_strength, relative,
                   regularization, "linear", where, segments, name="weights",
                   signed=True)  # fmt: skip


def lambda_weights(
    scores: ArrayLike,
    relevance: ArrayLike,
    *,
    k: int | None = None,
    regularization_strength: ArrayLike = 1.0,
    relative: bool = True,
    regularization: Regularization = "l2",
    gain: Gain = "exp2",
    where: ArrayLike | None = None,
    segments: ArrayLike | None = None,
) -> jax.Array:
    r"""LambdaLoss item weights from soft ranks: $g_i\,c_k(r_i) / (\log_2(1 + r_i)\,\mathrm{IDCG})$.

    Each item's term of [`soft_ndcg`][softops.losses.soft_ndcg] (they sum to it over a list):
    the weights of LambdaLoss's NDCG-Loss1 (Wang et al., The LambdaLoss Framework for Ranking
    Metric Optimization, CIKM 2018), $-\sum_i w_i \log \mathrm{softmax}(s)_i$, with the
    model's current ranks made soft. That loss holds the weights fixed within a step (its EM
    procedure): pass ``jax.lax.stop_gradient(lambda_weights(...))`` as the weights of a softmax
    cross-entropy, e.g. ``rax.softmax_loss(scores, labels, weights=...)``. This function itself
    returns the weights with their exact derivative.

    Args:
        scores: ``[..., n]`` floating array.
        relevance: ``[..., n]`` non-negative real array; no gradient.
        k: cutoff, ``1 <= k <= n``, or None.
        gain: ``"exp2"`` or ``"linear"``.
        regularization_strength: ε > 0, a number or an array of the batch shape ``[...]``.
        relative: ε in units of each list's spread (default) or of the scores.
        regularization: the soft ranks', as in `softops.soft_rank` (``"l2"``, ``"kl"``,
            ``"p=3/2"``, ``"p=4/3"``).
        where: optional boolean ``[..., n]`` of the items in the lists.
        segments: optional integer ``[..., n]`` list ids (packed lists).

    Returns:
        The weights, with the shape of ``scores`` (0 at masked items).

    Raises:
        TypeError: as [`soft_ndcg`][softops.losses.soft_ndcg].
        ValueError: as [`soft_ndcg`][softops.losses.soft_ndcg].

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops.losses import lambda_weights
        >>> w = lambda_weights(jnp.array([0.9, 0.5, 0.1]), jnp.array([0.0, 1.0, 1.0]),
        ...                    regularization_strength=1e-3)
        >>> [round(v, 3) for v in w.tolist()]
        [0.0, 0.387, 0.307]
    """
    return _metric("lambda", scores, relevance, k, regularization_strength, relative,
                   regularization, gain, where, segments)  # fmt: skip
