r"""Soft sort and soft rank: projections onto the permutahedron.

The permutahedron :math:`\mathcal{P}(w)` is the convex hull of the permutations of a vector ``w``.
Blondel et al. (2020) define soft sort and soft rank as regularized projections onto it,

.. math::
    P_Q(z, w) = \arg\min_{\mu \in \mathcal{P}(w)} \tfrac12 \|\mu - z\|^2, \qquad
    P_E(z, w) = \arg\min_{\mu \in \mathcal{P}(w)}
    \langle \mu, \log \mu - 1\rangle - \langle \mu, z\rangle,

and reduce both to isotonic regression: with :math:`\sigma` the permutation sorting ``z`` in
descending order and ``w`` sorted descending,
:math:`P_Q(z, w)_\sigma = z_\sigma - v_Q(z_\sigma, w)` and
:math:`P_E(z, w)_\sigma = \exp(z_\sigma - v_E(z_\sigma, \log w))`, where :math:`v_Q, v_E` are
:func:`softops.isotonic_l2` and :func:`softops.isotonic_kl`. One sort and one PAV: O(n log n) time,
O(n) memory, exact, and O(n) derivatives in forward and reverse mode.

With :math:`\rho = (n, n-1, \dots, 1)` and strength :math:`\varepsilon`:

- ``soft_rank(x) = P(x / ε, ρ)`` (ascending ranks start at 1 = smallest);
- ``soft_sort(x) = -(ρ/ε - v(ρ/ε, sort_desc(-x)))`` for ascending order (the reference definition;
  under ``"kl"`` descending is not the reversed negation of ascending).

As ε → 0 they become ``jnp.sort`` and the hard ranks; as ε → ∞, every soft rank tends to
(n + 1)/2 and the L2 soft sort to ``mean(x)`` (plus a spacing of 1/ε).

NaN: a row that contains a NaN gives an unspecified result (possibly NaN) for that row only; other
rows of the batch are unaffected. ±inf inputs give ±inf or NaN entries in their row.

Reference: Blondel, Teboul, Berthet, Djolonga, Fast Differentiable Sorting and Ranking, ICML 2020,
arXiv:2002.08871.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from softops import _pav
from softops._checks import (
    canonicalize_axis,
    check_choice,
    check_floating,
    check_positive,
    compute_dtype,
)
from softops._pav import Method
from softops.isotonic import _to_rows

Regularization = Literal["l2", "kl"]
REGULARIZATIONS = ("l2", "kl")


def _descending_ranks(n: int, dtype) -> jax.Array:
    return jnp.arange(n, 0, -1, dtype=dtype)


def _argsort_desc(z: jax.Array) -> jax.Array:
    """Stable argsort of each row of ``z`` [B, n] in descending order (no gradient)."""
    iota = lax.broadcasted_iota(jnp.int32, z.shape, 1)
    _, perm = lax.sort((-lax.stop_gradient(z), iota), dimension=1, num_keys=1)
    return perm


def _inverse_permutation(perm: jax.Array) -> jax.Array:
    bsz, n = perm.shape
    rows = jnp.arange(bsz)[:, None]
    iota = lax.broadcasted_iota(jnp.int32, perm.shape, 1)
    return jnp.zeros_like(perm).at[rows, perm].set(iota, unique_indices=True)


def _project_rows(z: jax.Array, w_desc: jax.Array, regularization: str, method: str) -> jax.Array:
    """P(z, w) for rows [B, n], with ``w_desc`` [B or 1, n] already sorted in descending order."""
    perm = _argsort_desc(z)
    z_sorted = jnp.take_along_axis(z, perm, axis=-1)
    w_desc = jnp.broadcast_to(w_desc, z.shape)
    if regularization == "l2":
        out = z_sorted - _pav.isotonic_decreasing(z_sorted - w_desc, jnp.ones_like(z), "l2", method)
    else:
        out = jnp.exp(z_sorted - _pav.isotonic_decreasing(z_sorted, jnp.log(w_desc), "kl", method))
    return jnp.take_along_axis(out, _inverse_permutation(perm), axis=-1)


def _prepare(x: ArrayLike, name: str, axis: int, regularization: str, method: str):
    check_choice(regularization, REGULARIZATIONS, "regularization")
    check_choice(method, _pav.METHODS, "method")
    x = check_floating(x, name)
    ax = canonicalize_axis(axis, x.ndim)
    x2, restore = _to_rows(x.astype(compute_dtype(x.dtype)), ax)
    return x, x2, ax, restore


def _strength_rows(strength, x: jax.Array, ax: int, dtype) -> jax.Array:
    """Broadcasts the strength (scalar or batch-shaped) to a [B, 1] column."""
    strength = check_positive(strength, "regularization_strength")
    batch_shape = x.shape[:ax] + x.shape[ax + 1 :]
    eps = jnp.asarray(strength).astype(dtype)
    try:
        eps = jnp.broadcast_to(eps, batch_shape)
    except ValueError:
        raise ValueError(
            "`regularization_strength` must be a scalar or broadcast to the batch shape "
            f"{batch_shape} (the input's shape without `axis`), got shape {eps.shape}"
        ) from None
    return eps.reshape(-1, 1)


def _apply_rows(rows, x, axis, descending, regularization, strength, method) -> jax.Array:
    """Validates the soft op's arguments and applies ``rows(x2, eps)`` on [B, n] rows."""
    if not isinstance(descending, bool):
        raise TypeError(f"`descending` must be a bool, got descending={descending!r}")
    x_in, x2, ax, restore = _prepare(x, "x", axis, regularization, method)
    if x2.shape[-1] == 0:
        return x_in
    eps = _strength_rows(strength, x_in, ax, x2.dtype)
    return restore(rows(x2, eps)).astype(x_in.dtype)


def projection_permutahedron(
    z: ArrayLike,
    w: ArrayLike | None = None,
    *,
    regularization: Regularization = "l2",
    axis: int = -1,
    method: Method = "auto",
) -> jax.Array:
    r"""Projection of ``z`` onto the permutahedron of ``w``, Euclidean or KL.

    ``"l2"``: :math:`\arg\min_{\mu \in \mathcal{P}(w)} \tfrac12\|\mu - z\|^2`.
    ``"kl"``: :math:`\arg\min_{\mu \in \mathcal{P}(w)} \mathrm{KL}(\mu, e^{z})`, which needs
    ``w > 0``.

    Args:
        z: ``[..., n, ...]`` floating array.
        w: the vector whose permutations span the permutahedron, ``[n]`` or of ``z``'s shape
            (any order; it is sorted internally, and derivatives flow to it). Defaults to
            :math:`\rho = (n, n-1, \dots, 1)`.
        regularization: ``"l2"`` or ``"kl"``.
        axis: the item axis; the other axes are batch.
        method: isotonic solver, ``"auto"``, ``"sequential"`` or ``"parallel"``.

    Returns:
        The projection, with the shape of ``z``.

    Raises:
        TypeError: for non-floating ``z`` or ``w``.
        ValueError: for a bad ``regularization``, ``axis``, ``method`` or ``w`` shape.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops import projection_permutahedron
        >>> projection_permutahedron(jnp.array([10.0, 0.0, 5.0]))
        Array([3., 1., 2.], dtype=float32)
    """
    z_in, z2, ax, restore = _prepare(z, "z", axis, regularization, method)
    n = z2.shape[-1]
    if w is None:
        w2 = _descending_ranks(n, z2.dtype)[None]
        out_dtype = z_in.dtype
    else:
        w = check_floating(w, "w")
        if w.ndim == 1 and w.shape[0] == n:
            w2 = w.astype(z2.dtype)[None]
        elif w.shape == z_in.shape:
            w2, _ = _to_rows(w.astype(z2.dtype), ax)
        else:
            raise ValueError(
                f"`w` must have shape ({n},) or the shape of `z` {z_in.shape}, "
                f"got w.shape={w.shape}"
            )
        w2 = -jnp.sort(-w2, axis=-1)
        out_dtype = jnp.result_type(z_in, w)
    if n == 0:
        return z_in.astype(out_dtype)
    return restore(_project_rows(z2, w2, regularization, method)).astype(out_dtype)


def soft_rank(
    x: ArrayLike,
    *,
    axis: int = -1,
    descending: bool = False,
    regularization: Regularization = "l2",
    regularization_strength: ArrayLike = 1.0,
    method: Method = "auto",
) -> jax.Array:
    r"""Soft ranks of ``x`` along ``axis``: a differentiable relaxation of the hard ranks.

    ``soft_rank(x) = P(sign * x / ε, ρ)`` with :math:`\rho = (n, \dots, 1)`, ``sign = +1`` for
    ascending ranks (1 = smallest) and ``-1`` for descending ranks (1 = largest); ``P`` is the L2 or
    KL projection onto the permutahedron (:func:`projection_permutahedron`). Ranks start at 1, as in
    Blondel et al.'s reference code and torchsort. Under ``"l2"`` each row sums to n(n+1)/2; tied
    inputs get equal ranks.

    Limits: ε → 0 gives the hard ranks (``argsort(argsort(x)) + 1``); ε → ∞ gives (n+1)/2
    everywhere.

    Args:
        x: ``[..., n, ...]`` floating array (bfloat16/float16 are computed in float32).
        axis: the item axis; the other axes are batch.
        descending: rank 1 for the largest entry instead of the smallest.
        regularization: ``"l2"`` (Euclidean projection) or ``"kl"`` (entropic).
        regularization_strength: ε > 0, a scalar or an array broadcastable to the batch shape
            (``x.shape`` without ``axis``). A non-positive Python number raises; a non-positive
            traced value gives NaN or inf.
        method: isotonic solver, ``"auto"``, ``"sequential"`` or ``"parallel"``.

    Returns:
        Soft ranks with the shape and dtype of ``x``.

    Raises:
        TypeError: for a non-floating ``x`` or a non-bool ``descending``.
        ValueError: for a bad ``regularization``, ``method``, ``axis`` or strength.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops import soft_rank
        >>> soft_rank(jnp.array([0.3, -1.2, 2.5, 0.0]), regularization_strength=1e-3)
        Array([3., 1., 4., 2.], dtype=float32)

    Reference:
        Blondel et al., Fast Differentiable Sorting and Ranking, ICML 2020, arXiv:2002.08871.
    """

    def rows(x2, eps):
        theta = (-x2 if descending else x2) / eps
        ranks = _descending_ranks(x2.shape[-1], x2.dtype)[None]
        return _project_rows(theta, ranks, regularization, method)

    return _apply_rows(rows, x, axis, descending, regularization, regularization_strength, method)


def soft_sort(
    x: ArrayLike,
    *,
    axis: int = -1,
    descending: bool = False,
    regularization: Regularization = "l2",
    regularization_strength: ArrayLike = 1.0,
    method: Method = "auto",
) -> jax.Array:
    r"""Soft-sorted values of ``x`` along ``axis``: a differentiable relaxation of ``jnp.sort``.

    With ``s`` = ``sign * x`` sorted in descending order (``sign = -1`` for ascending output,
    ``+1`` for descending) and :math:`\rho_\varepsilon = (n, \dots, 1)/\varepsilon`,

    .. math::
        \mathrm{soft\_sort}(x) = \mathrm{sign} \cdot (\rho_\varepsilon - v(\rho_\varepsilon, s)),

    with ``v`` = :func:`softops.isotonic_l2` or :func:`softops.isotonic_kl`: the projection of
    :math:`\rho_\varepsilon` onto the permutahedron of ``s``. Under ``"l2"`` the output preserves
    the sum of ``x`` and is monotone.

    Limits: ε → 0 gives ``jnp.sort(x)``; ε → ∞ gives ``mean(x)`` plus a spacing of 1/ε (L2).

    Args:
        x: ``[..., n, ...]`` floating array (bfloat16/float16 are computed in float32).
        axis: the item axis; the other axes are batch.
        descending: sort in decreasing order.
        regularization: ``"l2"`` or ``"kl"``.
        regularization_strength: ε > 0, a scalar or an array broadcastable to the batch shape.
        method: isotonic solver, ``"auto"``, ``"sequential"`` or ``"parallel"``.

    Returns:
        The soft-sorted values, with the shape and dtype of ``x``.

    Raises:
        TypeError: for a non-floating ``x`` or a non-bool ``descending``.
        ValueError: for a bad ``regularization``, ``method``, ``axis`` or strength.

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

    def rows(x2, eps):
        sign = 1.0 if descending else -1.0
        s = -jnp.sort(-sign * x2, axis=-1)
        w = _descending_ranks(x2.shape[-1], x2.dtype)[None] / eps
        if regularization == "l2":
            v = _pav.isotonic_decreasing(w - s, jnp.ones_like(w), "l2", method)
        else:
            v = _pav.isotonic_decreasing(w, s, "kl", method)
        return sign * (w - v)

    return _apply_rows(rows, x, axis, descending, regularization, regularization_strength, method)
