r"""What ``ott.tools.soft_sort`` offers beyond soft sort, rank and top-k, on softops' kernels.

- `soft_permutation` and `sort_with`: entropic optimal transport of the scores onto
  sorted positions (the semi-dual Newton kernel of `softops._ot.newton`), because the
  permutahedron ops give no smooth permutation matrix: the Jacobian of the L2 soft sort is
  block averaging ∘ permutation, doubly stochastic but piecewise constant in the scores (its
  derivative is zero and it jumps where blocks merge).
- `soft_quantile_normalization` and `soft_quantize` (`softops._isotonic.quantize`): exact
  permutahedron ops (Blondel et al., 2020).
- Quantiles at an array of levels in one call: `softops.soft_quantile` already takes a 1-D
  ``q``.

ott-jax solves every one of these by Sinkhorn on inputs squashed into [0, 1] (sigmoid of the
whitened values). The definitions below act on the raw scores; the hard limits are the same.

References: Cuturi, Teboul, Vert, Differentiable Ranks and Sorting using Optimal Transport,
NeurIPS 2019, arXiv:1905.11885; Blondel, Teboul, Berthet, Djolonga, Fast Differentiable Sorting
and Ranking, ICML 2020, arXiv:2002.08871.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from softops import _checks, _sharding
from softops._ot.newton import newton_rows

__all__ = ["soft_permutation", "sort_with"]


def _plan_rows(x, temp, *, k: int, descending: bool, tol, max_iter: int):
    """Soft assignment [..., k, n] of the items of rows x [..., n] to the first k sorted positions.

    Rows with a non-finite score, a temperature that is not positive and finite (traced), or a
    solver stopped at ``max_iter`` are NaN, with 0 derivative; the solver never sees them (their
    scores are zeroed first).
    """
    batch, n = x.shape[:-1], x.shape[-1]
    dtype = x.dtype
    good = jnp.all(jnp.isfinite(x), axis=-1) & (temp > 0) & jnp.isfinite(temp)
    x = _checks.clean_rows(good, x)
    temp = jnp.where(good, temp, 1)
    m = k + 1 if k < n else n
    y = jnp.arange(m - 1, -1, -1).astype(dtype)  # position 0 = the largest (of -x if ascending)
    b = jnp.full(batch + (m,), 1 / n, dtype)
    if m > k:
        b = jnp.concatenate([b[..., :k], jnp.full(batch + (1,), (n - k) / n, dtype)], axis=-1)
    if tol is None:
        tol = float(max(np.sqrt(jnp.finfo(dtype).eps), 16 * n * jnp.finfo(dtype).eps))
    a = jnp.full(batch + (n,), 1 / n, dtype)
    _, _, plan, _, err = newton_rows(x if descending else -x, y, a, b, 2 * temp, max_iter, tol / n)
    ok = good & (n * err <= tol)
    return _checks.nan_rows(jnp.swapaxes(n * plan[..., :k], -1, -2), ok)


@partial(jax.jit, static_argnames=("axis", "k", "descending", "tol", "max_iter"))
def _permutation(x, temp, *, axis, k, descending, tol, max_iter):
    def kernel(x, temp, where):
        del where
        plan = _plan_rows(x, temp, k=k, descending=descending, tol=tol, max_iter=max_iter)
        return (), plan

    return _sharding.run_items(kernel, axis, (x,), (temp,), with_rows=True)[1]


@partial(jax.jit, static_argnames=("k", "descending", "tol", "max_iter"))
def _sorted_items(x, criterion, temp, *, k, descending, tol, max_iter):
    def kernel(criterion, temp, items):
        plan = _plan_rows(criterion, temp, k=k, descending=descending, tol=tol, max_iter=max_iter)
        good = jnp.all(jnp.isfinite(items), axis=(-2, -1))  # a non-finite item: a NaN row
        items = _checks.clean_rows(good, items)
        out = jnp.einsum("...kn,...nf->...kf", plan.astype(items.dtype), items)
        return _checks.nan_rows(out, good)

    return _sharding.on_batch_shards(kernel, criterion, temp, x, name="criterion")


def soft_permutation(
    x: ArrayLike,
    *,
    temperature: ArrayLike = 1.0,
    descending: bool = False,
    axis: int = -1,
    tol: float | None = None,
    max_iter: int = 100,
) -> jax.Array:
    r"""Soft permutation matrix that sorts ``x``: an entropic optimal-transport plan.

    The n scores (mass 1/n each) are transported to n sorted positions $y_j = j$ with cost
    $(x_i - y_j)^2$ and entropic regularization $2T$:

    $$
    P_{ji} = n\,\Gamma_{ij}, \qquad \Gamma_{ij} \propto
    \exp\big((x_i y_j - y_j^2/2 + g_j) / T\big), \quad \Gamma 1 = \Gamma^\top 1 = 1/n,
    $$

    so ``P`` is doubly stochastic and ``P @ x`` is a soft sort of ``x`` (position 0 holds the
    smallest, or the largest with ``descending=True``). T is in the units of ``x``. As T → 0,
    ``P`` tends to the permutation matrix of ``jnp.argsort`` (tied scores share their positions);
    as T → ∞, to the uniform matrix 1/n. Solved by semi-dual Newton (O(n²) per step plus an
    (n-1)-square solve: meant for n up to a few hundred), implicit derivatives.

    ott-jax's ``transport_for_sort`` builds the same plan on squashed inputs (``x`` mapped into
    [0, 1]) and positions ``linspace(0, 1, n)``; with the identity squashing its plan equals this
    one at ``T = (n - 1) epsilon / 2``.

    Args:
        x: scores, ``[..., n, ...]`` with the items along ``axis`` (floating dtype).
        temperature: T > 0, a scalar or an array of the batch shape (the shape of ``x``
            without ``axis``).
        descending: position 0 for the largest score.
        axis: the item axis.
        tol: tolerance on the column-marginal error, in the units of P (default
            ``max(sqrt(eps_dtype), 16 n eps_dtype)``).
        max_iter: maximum Newton iterations.

    Returns:
        ``P`` of shape ``[*batch, n, n]`` (batch = the other axes of ``x``), ``P[..., j, i]`` the
        weight of item i at position j.

    Raises:
        TypeError: non-floating ``x``, non-bool ``descending``, non-int ``max_iter``.
        ValueError: bad ``axis``, ``temperature``, ``tol``.

    Examples:
        >>> import jax.numpy as jnp
        >>> p = soft_permutation(jnp.array([0.3, -1.2, 2.5]), temperature=0.01)
        >>> p.round(3).tolist()
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    descending = _checks.boolean(descending, "descending")
    max_iter = _checks.integer(max_iter, "max_iter", minimum=1)
    tol = _checks.tolerance(tol)
    x = _checks.floating(x, "x")
    ax = _checks.axis(axis, x.ndim)
    batch, n = _checks.batch_shape(x.shape, ax), x.shape[ax]
    temp = _checks.per_row(temperature, "temperature", batch, _checks.compute_dtype(x.dtype))
    if n <= 1 or 0 in batch:  # nothing to transport: the (empty or 1 x 1) identity
        return jnp.ones(batch + (n, n), x.dtype)
    return _permutation(
        x, temp, axis=ax, k=n, descending=descending, tol=tol, max_iter=max_iter
    ).astype(x.dtype)


def sort_with(
    x: ArrayLike,
    criterion: ArrayLike,
    *,
    temperature: ArrayLike = 1.0,
    descending: bool = False,
    k: int | None = None,
    tol: float | None = None,
    max_iter: int = 100,
) -> jax.Array:
    r"""Soft-sorts the items of ``x`` (vectors allowed) by the soft order of ``criterion``.

    With ``A`` the soft assignment of the items to the first k sorted positions of
    ``criterion`` ([`soft_permutation`][softops.topk_ot.soft_permutation] for all n positions; for k
    < n the k+1-anchor transport of [`softops.soft_topk`][softops.topk_ot.soft_topk]: the first k
    positions get mass 1/n each, the rest (n-k)/n), the output is
    $\mathrm{out}_j = \sum_i A_{ji} x_i$: each row a convex combination of the items, in increasing
    order of the criterion (decreasing with ``descending=True``). As T → 0 it tends to
    ``x[argsort(criterion)][:k]``; as T → ∞ every row tends to the mean of ``x``. Derivatives flow
    to ``x`` and to ``criterion``.

    ott-jax's ``sort_with(inputs, criterion, topk)`` is the same construction on the squashed
    criterion, with positions ``linspace(0, 1, n)`` (``linspace(0, 1, k + 1)`` with ``topk``,
    whose rows are the k largest in increasing order): with the identity squashing it equals
    this one at ``T = (n - 1) epsilon / 2`` (``T = k epsilon / 2``).

    Args:
        x: ``[*batch, n, *features]``: n items, each a scalar or a feature array.
        criterion: ``[*batch, n]`` the scores to sort by (floating dtype).
        temperature: T > 0 in the units of ``criterion``; scalar or of the batch shape.
        descending: largest criterion first.
        k: number of positions to keep (default all n); ``1 <= k <= n``.
        tol: tolerance on the column-marginal error in the units of ``A``.
        max_iter: maximum Newton iterations.

    Returns:
        ``[*batch, k, *features]``, in the dtype of ``x``.

    Raises:
        TypeError: non-floating inputs, non-bool ``descending``, non-int ``k``.
        ValueError: ``x`` not starting with the shape of ``criterion``; bad ``k``, strength or
            ``tol``.

    Examples:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
        >>> sort_with(x, jnp.array([0.2, -0.7, 3.0]), temperature=0.01, k=2).round(3).tolist()
        [[0.0, 1.0], [1.0, 0.0]]
    """
    descending = _checks.boolean(descending, "descending")
    max_iter = _checks.integer(max_iter, "max_iter", minimum=1)
    tol = _checks.tolerance(tol)
    x = _checks.floating(x, "x")
    criterion = _checks.floating(criterion, "criterion")
    if criterion.ndim == 0 or x.shape[: criterion.ndim] != criterion.shape:
        raise ValueError(
            "`x` must have the shape of `criterion` as its leading axes, got "
            f"x.shape={x.shape} and criterion.shape={criterion.shape}"
        )
    batch, n = criterion.shape[:-1], criterion.shape[-1]
    k = n if k is None else int(_checks.k_value(k, n, batch, minimum=1))
    dtype = _checks.compute_dtype(criterion.dtype)
    temp = _checks.per_row(temperature, "temperature", batch, dtype)
    features = x.shape[criterion.ndim :]
    if 0 in batch:
        return jnp.zeros(batch + (k,) + features, x.dtype)
    if n <= 1:  # nothing to sort (k = n)
        return x
    items = x.astype(_checks.compute_dtype(x.dtype)).reshape(criterion.shape + (-1,))
    out = _sorted_items(
        items, criterion.astype(dtype), temp, k=k, descending=descending, tol=tol,
        max_iter=max_iter,
    )  # fmt: skip
    return out.reshape(batch + (k,) + features).astype(x.dtype)
