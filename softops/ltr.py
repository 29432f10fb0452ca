r"""Learning to rank with rax: exact O(n log n) soft ranks and a soft top-n cutoff.

[rax](https://github.com/google/rax) (Google's learning-to-rank library for JAX) computes every
metric from two pluggable callables, ``rank_fn`` (scores to 1-based ranks) and ``cutoff_fn``
(ranks to a top-n selection). Its smooth ones (``rax.utils.approx_ranks``, used by
``rax.approx_t12n``) compare all pairs of items: O(n²) time and memory per list. The two functions
here have rax's signatures and plug into any rax metric, and into the losses rax builds from them:

```python
import functools, rax
from softops import ltr

loss = -rax.ndcg_metric(scores, labels, topn=10, rank_fn=ltr.rank_fn, cutoff_fn=ltr.cutoff_fn)
rank_fn = functools.partial(ltr.rank_fn, regularization_strength=0.5)  # options
```

- [`rank_fn`][softops.ltr.rank_fn]: descending soft ranks (rank 1 = highest score) from
  [`soft_rank`][softops.projection.soft_rank], exact, O(n log n), with rax's ``where``,
  ``segments`` and ``key`` arguments;
- [`cutoff_fn`][softops.ltr.cutoff_fn]: a soft top-n selection that sums to exactly
  $\min(n, c_s)$ over each list $s$ of $c_s$ items.

Neither imports rax (it is an optional dependency, the ``bench`` extra). Both take packed lists
(``segments``: several lists in one row, told apart by an integer id per item) in O(n log n) for
the whole row, where rax's own approximations build an n×n same-segment mask.

Conventions of rax that these follow: the last axis holds the items; ``where`` masks items (a
masked item, or one whose score is $-\infty$, is outside its list: its rank is $+\infty$ and its
cutoff 0, so rax's discounts and cutoffs drop it); ranks start at 1.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softops import _checks, _segments, _sharding
from softops._isotonic.pav import METHODS, Method
from softops.projection import REGULARIZATIONS, Regularization, soft_rank

__all__ = ["cutoff_fn", "rank_fn"]


def list_ranks(x, valid, slots, eps, *, relative, regularization, method, segments):
    """Descending soft ranks of the valid items of each list (0 at masked ones).

    ``relative``: the strength in units of each list's spread (`softops._segments.relative_scale`),
    applied by scaling the scores, which the ranks depend on only through ``x / eps``.

    A row with a non-finite valid score or a strength that is not positive and finite is NaN
    (0 at masked items) with exactly 0 derivative: its inputs are replaced before the spread and
    the ranks (a NaN spread's own derivative would reach the row's scores otherwise).
    """
    good = row_ok(x, valid, eps)
    x = _checks.clean_rows(good, x)
    eps = jnp.where(good, eps, 1)
    if relative:
        x = x / _segments.relative_scale(x, valid, slots)
    r = soft_rank(
        x,
        descending=True,
        regularization=regularization,
        regularization_strength=eps,
        where=valid,
        segments=segments,
        method=method,
    )
    r = _checks.nan_rows(r, good)
    return r if valid is None else jnp.where(valid, r, 0)


def row_ok(x, valid, eps, rel=None, *, signed=True):
    """The good rows [...] of a list op (the others follow `softops._checks.nan_rows`).

    Finite valid scores (and relevance, non-negative unless ``signed``), a positive finite strength.
    """
    ok = jnp.isfinite(x)
    if rel is not None:
        ok = ok & jnp.isfinite(rel) & (True if signed else rel >= 0)
    if valid is not None:
        ok = ok | ~valid
    return jnp.all(ok, axis=-1) & (eps > 0) & jnp.isfinite(eps)


@functools.partial(jax.jit, static_argnames=("relative", "regularization", "method"))
def _rank_fn(x, eps, where, ids, *, relative, regularization, method):
    def body(x, eps, where, ids):
        valid = ~jnp.isneginf(x) if where is None else where & ~jnp.isneginf(x)
        slots = _segments.slots_of(ids, x.shape)
        r = list_ranks(
            jnp.where(valid, x, 0),
            valid,
            slots,
            eps,
            relative=relative,
            regularization=regularization,
            method=method,
            segments=ids,
        )
        return jnp.where(valid, r, jnp.inf)

    return _sharding.on_batch_shards(body, x, eps, where, ids, name="scores")


def rank_fn(
    scores: ArrayLike,
    where: ArrayLike | None = None,
    key: Any = None,
    segments: ArrayLike | None = None,
    *,
    regularization_strength: ArrayLike = 1.0,
    relative: bool = True,
    regularization: Regularization = "l2",
    method: Method = "auto",
) -> jax.Array:
    r"""Soft ranks for rax: rank 1 for the highest score, exact, O(n log n) per row.

    The descending [`soft_rank`][softops.projection.soft_rank] of each list's valid scores (a
    rax ``RankFn``: ``rax.ndcg_metric(..., rank_fn=rank_fn)``). With ``relative=True`` (the
    default) the strength is in units of each list's spread: $\varepsilon_s = \varepsilon \cdot
    \sigma_s \sqrt{12}/m_s$ for a list of $m_s$ valid scores with standard deviation
    $\sigma_s$ (the mean gap of evenly spaced scores with that spread; differentiated exactly),
    so the ranks do not depend on the scale of the scores and are as soft on a list of 10 items
    as on one of 10,000. ``relative=False``: $\varepsilon$ in the units of the scores.

    Limits: ε → 0 gives the hard ranks (rax's ``rax.utils.ranks`` for untied scores; tied scores
    share their mean rank instead of rax's index order). Masked items and items with score
    $-\infty$ get rank $+\infty$ (no gradient), which every rax metric discounts to 0.

    Args:
        scores: ``[..., n]`` floating array (higher = ranked first).
        where: optional boolean ``[..., n]``, the items in the lists.
        key: unused (rax passes one for random tie-breaking; soft ranks average ties).
        segments: optional integer ``[..., n]``: items with equal ids form one list, ranked among
            themselves (packed lists; O(n log n) for the whole row).
        regularization_strength: ε > 0, a number or an array of the batch shape ``[...]``.
        relative: ε in units of each list's spread (True) or of the scores (False).
        regularization: ``"l2"``, ``"kl"``, ``"p=3/2"`` or ``"p=4/3"``.
        method: isotonic solver, ``"auto"``, ``"sequential"`` or ``"parallel"``.

    Returns:
        The ranks, with the shape and dtype of ``scores``.

    Raises:
        TypeError: for non-floating scores, a non-boolean ``where`` or non-integer ``segments``.
        ValueError: for mismatched shapes, a bad strength, ``regularization`` or ``method``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops import ltr
        >>> ltr.rank_fn(jnp.array([0.1, 2.0, 1.0]), regularization_strength=0.01)
        Array([3., 1., 2.], dtype=float32)
    """
    x, eps, mask, ids = _arguments(scores, where, segments, regularization_strength)
    _checks.choice(regularization, REGULARIZATIONS, "regularization")
    _checks.choice(method, METHODS, "method")
    relative = _checks.boolean(relative, "relative")
    out = _rank_fn(
        x.astype(eps.dtype),
        eps,
        mask,
        ids,
        relative=relative,
        regularization=regularization,
        method=method,
    )
    return out.astype(x.dtype)


def _arguments(scores, where, segments, strength, name="scores"):
    x = _checks.floating(scores, name)
    if x.ndim == 0:
        raise ValueError(f"`{name}` must have at least one axis (the items), got a scalar")
    mask = _checks.where(where, x.shape)
    ids = _checks.segments(segments, x.shape)
    dtype = _checks.compute_dtype(x.dtype)
    eps = _checks.per_row(strength, "regularization_strength", x.shape[:-1], dtype)
    return x, eps, mask, ids


@functools.partial(jax.jit, static_argnames=("n", "temperature"))
def _cutoff_fn(a, where, ids, *, n, temperature):
    def body(a, where, ids):
        if where is not None:
            a = jnp.where(where, a, -jnp.inf)
        return _segments.cutoff(a, n, _segments.slots_of(ids, a.shape), temperature=temperature)

    return _sharding.on_batch_shards(body, a, where, ids, name="a")


def cutoff_fn(
    a: ArrayLike,
    n: int | None = None,
    segments: ArrayLike | None = None,
    *,
    where: ArrayLike | None = None,
    temperature: float = 1.0,
) -> jax.Array:
    r"""Soft top-``n`` selection of each list, summing to ``min(n, list size)``: a rax ``CutoffFn``.

    $A_i = \sigma((a_i - \tau_s)/T)$ with one threshold $\tau_s$ per list $s$, fixed by
    $\sum_{i \in s} A_i = n$ (a list of at most ``n`` items keeps them all: $A = 1$). rax calls
    it with ``a = -ranks``, so a temperature $T$ of about 1 spreads the selection over a few
    ranks around ``n``. Items with $a_i = -\infty$ (rax: masked items, see
    [`rank_fn`][softops.ltr.rank_fn]) are outside every list and get 0. The thresholds come from
    a safeguarded Newton iteration, vectorized over all lists of a batch (O(n) per step); the
    derivative is implicit and exact:
    $dA_i = \sigma'_i / T\,(da_i - \sum_s \sigma' da / \sum_s \sigma')$, with
    $\sigma' = A(1 - A)$.

    Limits: $T \to 0$ gives rax's hard cutoff ``rax.utils.cutoff`` (1 for the ``n`` largest, 0
    elsewhere) for untied ``a``.

    Args:
        a: ``[..., m]`` floating array; the ``n`` largest entries of each list are selected.
        n: the cutoff, a non-negative int, or None (no cutoff: all ones, as rax).
        segments: optional integer ``[..., m]``: each id's items form one list (packed lists).
        where: optional boolean ``[..., m]`` (rax does not pass one: it masks items through
            ``a = -inf``).
        temperature: $T > 0$, in the units of ``a``.

    Returns:
        The selection, with the shape and dtype of ``a``, in [0, 1].

    Raises:
        TypeError: for a non-floating ``a``, a non-int ``n``, a non-boolean ``where`` or
            non-integer ``segments``.
        ValueError: for mismatched shapes, a negative ``n`` or a bad ``temperature``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops import ltr
        >>> c = ltr.cutoff_fn(-jnp.array([1.0, 2.0, 3.0, 4.0]), n=2)
        >>> [round(v, 3) for v in c.tolist()], round(float(c.sum()), 5)
        ([0.818, 0.622, 0.378, 0.182], 2.0)
    """
    x = _checks.floating(a, "a")
    if x.ndim == 0:
        raise ValueError("`a` must have at least one axis (the items), got a scalar")
    if n is None:
        return jnp.ones_like(x)
    n = _checks.integer(n, "n", minimum=0)
    temperature = _checks.tolerance(temperature, "temperature", allow_none=False)
    if temperature <= 0:
        raise ValueError(f"`temperature` must be positive, got temperature={temperature!r}")
    mask = _checks.where(where, x.shape)
    ids = _checks.segments(segments, x.shape)
    dtype = _checks.compute_dtype(x.dtype)
    if n == 0:
        return jnp.zeros_like(x)
    out = _cutoff_fn(x.astype(dtype), mask, ids, n=n, temperature=temperature)
    return out.astype(x.dtype)
