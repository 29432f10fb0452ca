r"""Soft sort and soft rank: projections onto the permutahedron.

The permutahedron $\mathcal{P}(w)$ is the convex hull of the permutations of a vector ``w``.
Blondel et al. (2020) define soft sort and soft rank as regularized projections onto it,

$$
P_Q(z, w) = \arg\min_{\mu \in \mathcal{P}(w)} \tfrac12 \|\mu - z\|^2, \qquad
P_E(z, w) = \arg\min_{\mu \in \mathcal{P}(w)}
\langle \mu, \log \mu - 1\rangle - \langle \mu, z\rangle,
$$

and reduce both to isotonic regression: with $\sigma$ the permutation sorting ``z`` in
decreasing order and ``w`` sorted decreasingly,
$P_Q(z, w)_\sigma = z_\sigma - v_Q(z_\sigma, w)$ and
$P_E(z, w)_\sigma = \exp(z_\sigma - v_E(z_\sigma, \log w))$, where $v_Q, v_E$ are
[`softops.isotonic_l2`][softops.isotonic.isotonic_l2] and
[`softops.isotonic_kl`][softops.isotonic.isotonic_kl]. One sort and one isotonic regression: O(n log
n) time, O(n) memory, exact, O(n) derivatives in forward and reverse mode.

``"p=3/2"`` and ``"p=4/3"`` regularize with $\sum_i |\mu_i|^p / p$ instead (Sander et al.,
2023): the same isotonic reduction with another block equation, solved exactly in float64
(``softops._isotonic.pnorm``); their strength has other units (docs: Soft sort and soft rank).

With $\rho = (n, n-1, \dots, 1)$ and strength $\varepsilon$:

- ``soft_rank(x) = P(x / ε, ρ)`` (ascending ranks, 1 = smallest);
- ``soft_sort(x) = -(ρ/ε - v(ρ/ε, sort_desc(-x)))`` for ascending order, i.e. the projection of
  $\rho/\varepsilon$ onto $\mathcal{P}(x)$ (under ``"kl"``, descending is not the
  reversed negation of ascending).

Every output is computed from its isotonic block in closed form without subtracting large
numbers, so float32 keeps its digits at any ε (e.g. ε = 1e-8, or inputs of 1e30).

As ε → 0 they become the hard ranks and ``jnp.sort``; as ε → ∞ every soft rank tends to
(n + 1)/2, and the L2 soft sort to ``mean(x)`` plus a spacing of 1/ε (the KL soft sort does not
flatten: with ``descending=True`` it tends to ``logsumexp(x) - log(n)`` minus the same spacing,
in the ascending default to ``-(logsumexp(-x) - log(n))`` plus it).

``where=`` masks items: the valid items of each row are ranked (or sorted) among themselves, as
if the others were absent; masked outputs are 0 with zero derivative. ``straight_through=True``
returns the hard result (ties share their mean rank) with the soft derivative.

``segments=`` packs several lists into one row: an integer id per item, and the items with
equal ids are ranked (or sorted) among themselves, as if each list were a row of its own. One
sort by (list, value) and a block barrier at every list start keep it O(n log n) for the whole
row, with the same exactness and derivatives; ``where=`` applies within each list.

NaN and inf: a row with a NaN or ±inf among its valid items, or with a strength that is not
positive and finite (only possible when the strength is traced), gives NaN in that row only.

Reference: Blondel, Teboul, Berthet, Djolonga, Fast Differentiable Sorting and Ranking, ICML 2020,
arXiv:2002.08871.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal, NamedTuple, get_args

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from softops import _checks, _sharding
from softops._isotonic import pav, rows
from softops._isotonic.pav import Method
from softops._isotonic.quantize import soft_quantile_normalization, soft_quantize

__all__ = [
    "projection_permutahedron",
    "soft_quantile_normalization",
    "soft_quantize",
    "soft_rank",
    "soft_sort",
]

Regularization = Literal["l2", "kl", "p=3/2", "p=4/3"]
REGULARIZATIONS: tuple[Regularization, ...] = get_args(Regularization)


_NO_STRENGTH = object()  # projection_permutahedron has none (None is a bad strength)


def _common(
    x, axis, regularization, method, where, strength=_NO_STRENGTH
) -> tuple[jax.Array, int, jax.Array | None, jax.Array | None]:
    """Validates the arguments shared by the three ops."""
    _checks.choice(regularization, REGULARIZATIONS, "regularization")
    _checks.choice(method, pav.METHODS, "method")
    x = _checks.floating(x, "x")
    ax = _checks.axis(axis, x.ndim)
    mask = _checks.where(where, x.shape)
    if strength is _NO_STRENGTH:
        return x, ax, mask, None
    batch = _checks.batch_shape(x.shape, ax)
    dtype = _checks.compute_dtype(x.dtype)
    eps = _checks.per_row(strength, "regularization_strength", batch, dtype)
    return x, ax, mask, eps


class _RowOp(NamedTuple):
    """A soft sort or rank: its row kernel (`softops._isotonic.rows`) and what it returns."""

    kernel: Callable[..., jax.Array]
    ranks: bool  # the outputs are ranks 1..n (n must be exact in the dtype of x)


_RANK = _RowOp(rows.rank_rows, ranks=True)
_SORT = _RowOp(rows.sort_rows, ranks=False)


@functools.partial(
    jax.jit,
    static_argnames=(
        "axis",
        "kernel",
        "descending",
        "regularization",
        "method",
        "straight_through",
    ),
)
def _soft_op(
    x, eps, where, ids, *, axis, kernel, descending, regularization, method, straight_through
):
    kernel = functools.partial(
        kernel,
        descending=descending,
        regularization=regularization,
        method=method,
        straight_through=straight_through,
    )
    if ids is None:
        return _sharding.run_items(kernel, axis, (x,), (eps,), where)
    return _sharding.run_items(
        lambda x, ids, eps, where: kernel(x, eps, where, ids), axis, (x, ids), (eps,), where
    )


def _soft_public(
    op: _RowOp,
    x,
    axis,
    descending,
    regularization,
    strength,
    where,
    straight_through,
    method,
    segments,
) -> jax.Array:
    """The shared body of `soft_rank` and `soft_sort`: validate, then run."""
    descending = _checks.boolean(descending, "descending")
    straight_through = _checks.boolean(straight_through, "straight_through")
    x, ax, mask, eps = _common(x, axis, regularization, method, where, strength)
    ids = _checks.segments(segments, x.shape)
    if op.ranks:
        _checks.ranks_fit(x.dtype, x.shape[ax], "x")
    return _soft_op(
        x,
        eps,
        mask,
        ids,
        axis=ax,
        kernel=op.kernel,
        descending=descending,
        regularization=regularization,
        method=method,
        straight_through=straight_through,
    )


def soft_rank(
    x: ArrayLike,
    *,
    axis: int = -1,
    descending: bool = False,
    regularization: Regularization = "l2",
    regularization_strength: ArrayLike = 1.0,
    where: ArrayLike | None = None,
    straight_through: bool = False,
    method: Method = "auto",
    segments: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft ranks of ``x`` along ``axis``: a differentiable relaxation of the hard ranks.

    ``soft_rank(x) = P(sign * x / ε, ρ)`` with $\rho = (n, \dots, 1)$, ``sign = +1`` for
    ascending ranks (1 = smallest) and ``-1`` for descending ranks (1 = largest); ``P`` is the L2 or
    KL projection onto the permutahedron
    ([`projection_permutahedron`][softops.projection.projection_permutahedron]). Ranks start at 1,
    as in Blondel et al.'s reference code and torchsort. Under ``"l2"`` each row sums to n(n+1)/2;
    tied inputs get equal ranks.

    Limits: ε → 0 gives the hard ranks (tied values share their mean rank); ε → ∞ gives
    (n + 1)/2 everywhere. The L2 ranks are equivariant: ``soft_rank(c * x, ε = c * ε0)`` does not
    depend on ``c > 0``, so choose ε in the units of ``x`` (the gaps between values that get
    pooled are those below about ε).

    Args:
        x: ``[..., n, ...]`` floating array (bfloat16/float16 are computed in float32).
        axis: the item axis; the other axes are batch.
        descending: rank 1 for the largest entry instead of the smallest.
        regularization: ``"l2"`` (Euclidean projection), ``"kl"`` (entropic), or the p-norms
            ``"p=3/2"`` and ``"p=4/3"`` (Sander et al., 2023: once and twice differentiable
            almost everywhere; see the module docstring).
        regularization_strength: ε > 0, a number or an array broadcastable to the batch shape
            (``x.shape`` without ``axis``). Known values must be positive and finite; traced
            values that are not give NaN in their row.
        where: optional boolean mask of ``x``'s shape: only the ``True`` items of each row are
            ranked (1 to their count); the others get 0 and no gradient.
        straight_through: return the hard ranks (ties averaged) with the soft ranks' derivative
            (biased: the derivative is that of a different function than the value).
        method: isotonic solver, ``"auto"``, ``"sequential"`` or ``"parallel"``.
        segments: optional integer array of ``x``'s shape (packed lists): the items of each row
            with equal ids form one list, ranked 1 to its size (its number of valid items).

    Returns:
        Soft ranks with the shape and dtype of ``x``.

    Raises:
        TypeError: for a non-floating ``x``, a non-bool ``descending``/``straight_through``, a
            non-boolean ``where``, non-integer ``segments``.
        ValueError: for a bad ``regularization``, ``method``, ``axis``, strength, ``where`` or
            ``segments`` shape, an ``x`` sharded along ``axis``, or a float16 ``x`` with more
            than 65504 items along ``axis`` (its ranks would overflow float16 to inf; cast to
            float32).

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops import soft_rank
        >>> soft_rank(jnp.array([0.3, -1.2, 2.5, 0.0]), regularization_strength=1e-3)
        Array([3., 1., 4., 2.], dtype=float32)
        >>> mask = jnp.array([True, False, True, True])
        >>> soft_rank(jnp.array([0.3, -1.2, 2.5, 0.0]), regularization_strength=1e-3, where=mask)
        Array([2., 0., 3., 1.], dtype=float32)
        >>> lists = jnp.array([0, 0, 1, 1])  # two packed lists of two items
        >>> x = jnp.array([0.3, -1.2, 2.5, 0.0])
        >>> soft_rank(x, regularization_strength=1e-3, segments=lists)
        Array([2., 1., 2., 1.], dtype=float32)

    Reference:
        Blondel et al., Fast Differentiable Sorting and Ranking, ICML 2020, arXiv:2002.08871.
    """
    return _soft_public(
        _RANK,
        x,
        axis,
        descending,
        regularization,
        regularization_strength,
        where,
        straight_through,
        method,
        segments,
    )


def soft_sort(
    x: ArrayLike,
    *,
    axis: int = -1,
    descending: bool = False,
    regularization: Regularization = "l2",
    regularization_strength: ArrayLike = 1.0,
    where: ArrayLike | None = None,
    straight_through: bool = False,
    method: Method = "auto",
    segments: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft-sorted values of ``x`` along ``axis``: a differentiable relaxation of ``jnp.sort``.

    With ``s`` = ``sign * x`` sorted in decreasing order (``sign = -1`` for ascending output,
    ``+1`` for descending) and $\rho_\varepsilon = (n, \dots, 1)/\varepsilon$,

    $$
    \mathrm{soft\_sort}(x) = \mathrm{sign} \cdot (\rho_\varepsilon - v(\rho_\varepsilon, s)),
    $$

    with ``v`` = [`softops.isotonic_l2`][softops.isotonic.isotonic_l2] or
    [`softops.isotonic_kl`][softops.isotonic.isotonic_kl]: the projection of $\rho_\varepsilon$ onto
    the permutahedron of ``s``. Under ``"l2"`` the output preserves the sum of ``x`` and is
    monotone.

    Limits: ε → 0 gives ``jnp.sort(x)``; ε → ∞ gives ``mean(x)`` plus a spacing of 1/ε (L2;
    under KL the values do not flatten to the mean: they tend to ``-(logsumexp(-x) - log(n))``,
    or ``logsumexp(x) - log(n)`` with ``descending=True``). Under L2, sorted neighbours whose gap
    exceeds 1/ε get pooled: ε acts on the inverse scale of ``x``
    (``soft_sort(c * x, ε / c) = c * soft_sort(x, ε)``).

    Args:
        x: ``[..., n, ...]`` floating array (bfloat16/float16 are computed in float32).
        axis: the item axis; the other axes are batch.
        descending: sort in decreasing order.
        regularization: ``"l2"``, ``"kl"``, ``"p=3/2"`` or ``"p=4/3"`` (as in `soft_rank`).
        regularization_strength: ε > 0, a number or an array broadcastable to the batch shape.
        where: optional boolean mask of ``x``'s shape: the ``True`` items of each row are sorted
            among themselves into the first positions; the remaining positions get 0.
        straight_through: return ``jnp.sort`` (of the valid items) with the soft derivative.
        method: isotonic solver, ``"auto"``, ``"sequential"`` or ``"parallel"``.
        segments: optional integer array of ``x``'s shape (packed lists): the items of each row
            with equal ids form one list, sorted into the positions its items hold (in index
            order; with ``where``, its valid items first and 0 at its remaining positions).

    Returns:
        The soft-sorted values, with the shape and dtype of ``x``.

    Raises:
        TypeError: for a non-floating ``x``, a non-bool ``descending``/``straight_through``, a
            non-boolean ``where``, non-integer ``segments``.
        ValueError: for a bad ``regularization``, ``method``, ``axis``, strength, ``where`` or
            ``segments`` shape, or an ``x`` sharded along ``axis``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops import soft_sort
        >>> x = jnp.array([0.3, -1.2, 2.5, 0.1])
        >>> [round(v, 3) for v in soft_sort(x, regularization_strength=0.01).tolist()]
        [-1.2, 0.1, 0.3, 2.5]
        >>> [round(v, 3) for v in soft_sort(x, regularization_strength=1.0).tolist()]
        [-1.05, -0.05, 0.9, 1.9]

    Reference:
        Blondel et al., Fast Differentiable Sorting and Ranking, ICML 2020, arXiv:2002.08871.
    """
    return _soft_public(
        _SORT,
        x,
        axis,
        descending,
        regularization,
        regularization_strength,
        where,
        straight_through,
        method,
        segments,
    )


@functools.partial(jax.jit, static_argnames=("axis", "regularization", "method"))
def _projection(z, w, where, *, axis, regularization, method):
    project = functools.partial(rows.project_rows, regularization=regularization, method=method)
    if w is None:
        return _sharding.run_items(
            lambda z, where: project(z, None, where), axis, (z,), (), where, name="z"
        )
    dtype = jnp.result_type(z.dtype, w.dtype)
    return _sharding.run_items(project, axis, (z, w), (), where, out_dtype=dtype, name="z")


def projection_permutahedron(
    z: ArrayLike,
    w: ArrayLike | None = None,
    *,
    regularization: Regularization = "l2",
    axis: int = -1,
    where: ArrayLike | None = None,
    method: Method = "auto",
) -> jax.Array:
    r"""Projection of ``z`` onto the permutahedron of ``w``, Euclidean or KL.

    ``"l2"``: $\arg\min_{\mu \in \mathcal{P}(w)} \tfrac12\|\mu - z\|^2$.
    ``"kl"``: $\arg\min_{\mu \in \mathcal{P}(w)} \mathrm{KL}(\mu, e^{z})$, which needs
    ``w > 0`` (a known ``w <= 0`` raises; a traced one gives NaN for its row).
    ``"p=3/2"``, ``"p=4/3"``: $\arg\max_{\mu \in \mathcal{P}(w)} \langle z, \mu\rangle -
    \sum_i |\mu_i|^p / p$ (Sander et al., 2023). With ``w = (1, ..., 1, 0, ..., 0)`` (k ones)
    it is their exactly sparse top-k mask of ``z``.

    Args:
        z: ``[..., n, ...]`` floating array.
        w: the vector whose permutations span the permutahedron, ``[n]`` or of ``z``'s shape (any
            order: it is sorted internally, and derivatives flow to it). Defaults to
            $\rho = (n, n-1, \dots, 1)$ (to $(n_v, \dots, 1)$ over the valid items).
        regularization: ``"l2"``, ``"kl"``, ``"p=3/2"`` or ``"p=4/3"``.
        axis: the item axis; the other axes are batch.
        where: optional boolean mask of ``z``'s shape: the projection of the valid items onto the
            permutahedron of the valid entries of ``w``; masked outputs are 0.
        method: isotonic solver, ``"auto"``, ``"sequential"`` or ``"parallel"``.

    Returns:
        The projection, with the shape of ``z``.

    Raises:
        TypeError: for a non-floating ``z`` or ``w``, or a non-boolean ``where``.
        ValueError: for a bad ``regularization``, ``axis``, ``method``, ``w`` or ``where`` shape,
            or a float16 ``z`` with more than 65504 items and the default ``w`` (overflow).

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops import projection_permutahedron
        >>> projection_permutahedron(jnp.array([10.0, 0.0, 5.0]))
        Array([3., 1., 2.], dtype=float32)
    """
    z, ax, mask, _ = _common(z, axis, regularization, method, where)
    n = z.shape[ax]
    if w is None:
        _checks.ranks_fit(z.dtype, n, "z")
    else:
        w = _checks.floating(w, "w")
        if w.ndim == 1 and w.shape[0] == n and z.ndim > 1:
            w = jnp.moveaxis(jnp.broadcast_to(w, jnp.moveaxis(z, ax, -1).shape), -1, ax)
        elif w.shape != z.shape:
            raise ValueError(
                f"`w` must have shape ({n},) or the shape of `z` {z.shape}, got w.shape={w.shape}"
            )
        known = _checks.concrete(w)
        if regularization == "kl" and known is not None and known.size and np.any(known <= 0):
            raise ValueError(
                "`w` must be positive with regularization='kl', got "
                f"w={known[known <= 0].ravel()[0].item()!r}"
            )
    return _projection(z, w, mask, axis=ax, regularization=regularization, method=method)
