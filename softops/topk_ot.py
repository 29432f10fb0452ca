r"""Differentiable top-k by entropic optimal transport (Xie et al., 2020).

Top-k is an optimal-transport problem: the n scores :math:`x_i` (mass :math:`1/n` each) are moved
to anchors :math:`y_j` with cost :math:`C_{ij} = (x_i - y_j)^2` and an entropic regularization ε,

.. math::
    \Gamma^\star = \arg\min_{\Gamma \ge 0,\ \Gamma 1 = \mu,\ \Gamma^\top 1 = \nu}
    \langle \Gamma, C / M \rangle + \varepsilon \langle \Gamma, \log \Gamma - 1\rangle,

with :math:`M = \max_{ij} C_{ij}` held constant when differentiating (as in the paper's code).

- :func:`soft_topk_mask`: anchors :math:`\{0, 1\}`; the selected anchor gets mass :math:`k/n`, and
  the mask is :math:`A = n\,\Gamma_{:, \mathrm{selected}} \in [0, 1]^n` with :math:`\sum A = k`.
  Eliminating the row potentials leaves one scalar per row: :math:`A_i = \sigma((x_i - \theta)/T)`
  (``largest=True``; :math:`\sigma((\theta - x_i)/T)` otherwise) with the threshold θ fixed by
  :math:`\sum A = k`, solved by a safeguarded Newton root find; derivative in closed form, O(n).
- :func:`soft_topk`: the sorted variant, anchors :math:`k, k-1, \dots, 1, 0` (the first k with mass
  :math:`1/n`, the last with :math:`(n-k)/n`), solved by :func:`sinkhorn`; returns the soft top-k
  values in order and the k×n soft assignment (the paper's beam-search operator).

Two parameterizations of the strength, mutually exclusive:

- ``epsilon=ε`` (default 0.1): the paper's, relative to the normalized cost :math:`C/M`;
- ``temperature=T``: in the units of the scores, :math:`\Gamma_{ij} \propto
  \exp((x_i y_j - y_j^2/2)/T)`; for the mask :math:`A_i = \sigma((x_i - \theta)/T)`. They relate by
  :math:`T = \varepsilon M / 2`.

As ε (or T) → 0 the mask tends to the hard top-k indicator (``lax.top_k``) when the k-th and
(k+1)-th scores differ; tied scores share the mass equally.

Derivatives are implicit (KKT conditions), in forward mode (``jax.custom_jvp``); reverse mode is its
transpose, so ``grad``, ``jvp`` and ``vmap`` work and the cost does not depend on the number of
iterations. Memory is O(n·m) whatever the iteration count.

NaN and inf: with ``epsilon=`` a row that contains a NaN or ±inf score (among its unmasked
entries) gives NaN for that row (M is then infinite). With ``temperature=`` the mask treats a score
of -inf (``largest=True``; +inf for ``largest=False``) as never selected (exact 0), and NaN or the
opposite infinity give NaN entries. A NaN row reports ``converged=False``; other rows of the batch
are unaffected. Exclude such entries with ``where=``.

Reference: Xie, Dai, Chen, Dai, Zhao, Zha, Wei, Pfister, Differentiable Top-k with Optimal
Transport, NeurIPS 2020, arXiv:2002.06504.
"""

from __future__ import annotations

import numbers
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from softops._checks import (
    canonicalize_axis,
    check_choice,
    check_floating,
    check_positive,
    compute_dtype,
)
from softops._ot_newton import newton_plan
from softops._topk_mask import topk_mask_rows
from softops._topk_sinkhorn import SinkhornOutput, sinkhorn_implicit, sinkhorn_unrolled

__all__ = [
    "SinkhornOutput",
    "SoftTopK",
    "SoftTopKOutput",
    "TopKMaskOutput",
    "sinkhorn",
    "soft_topk",
    "soft_topk_mask",
    "soft_topk_mask_solve",
    "soft_topk_solve",
]

Differentiation = Literal["implicit", "unrolled"]
DIFFERENTIATIONS = ("implicit", "unrolled")
MaskSolver = Literal["newton", "sinkhorn"]
MASK_SOLVERS = ("newton", "sinkhorn")
SortedSolver = Literal["newton", "sinkhorn"]
SORTED_SOLVERS = ("newton", "sinkhorn")
DEFAULT_EPSILON = 0.1


class TopKMaskOutput(NamedTuple):
    r"""Result of :func:`soft_topk_mask_solve`.

    Attributes:
        mask: the soft top-k mask, shape of ``x``.
        threshold: θ in the units of the scores (``A = sigmoid(±(x - θ)/T)``), batch shape.
        iterations: root-find (or Sinkhorn) iterations used, int32 (shared by the batch).
        residual: :math:`|\sum A - k|` in mask units, batch shape.
        converged: ``residual <= tol``, batch shape.
    """

    mask: jax.Array
    threshold: jax.Array
    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


class SoftTopK(NamedTuple):
    """Result of :func:`soft_topk`: ``values`` ``[..., k]`` and ``assignment`` ``[..., k, n]``."""

    values: jax.Array
    assignment: jax.Array


class SoftTopKOutput(NamedTuple):
    r"""Result of :func:`soft_topk_solve`: :class:`SoftTopK` plus Sinkhorn diagnostics.

    Attributes:
        values: soft top-k values in order, ``[..., k]``.
        assignment: soft assignment of the items to the k slots, ``[..., k, n]``.
        iterations: Sinkhorn iterations used, ``[...]``.
        residual: column-marginal error in mask units (:math:`n \|\Gamma^\top 1 - \nu\|_1`).
        converged: ``residual <= tol``.
    """

    values: jax.Array
    assignment: jax.Array
    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


# ----------------------------------------------------------------------------- validation


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int, got {name}={value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {name}={value!r}")
    return int(value)


def _check_tol(tol, name: str = "tol") -> float | None:
    if tol is None:
        return None
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol >= 0:
        raise ValueError(f"`{name}` must be a non-negative number or None, got {name}={tol!r}")
    return float(tol)


def _check_k(k, n: int, axis: int, batch_shape, *, allow_array: bool):
    """Returns a Python int, or an array of the batch shape for a traced / per-row ``k``."""
    if isinstance(k, (bool, np.bool_)):
        raise TypeError(f"`k` must be an int or an array, got k={k!r}")
    if isinstance(k, (int, np.integer)):
        if not 0 <= k <= n:
            raise ValueError(f"`k` must satisfy 0 <= k <= n along axis {axis}, got k={k} for n={n}")
        return int(k)
    if not allow_array or not isinstance(k, (numbers.Real, jax.Array, np.ndarray)):
        raise TypeError(f"`k` must be a Python int, got k={k!r}")
    if isinstance(k, numbers.Real) and not 0 <= k <= n:
        raise ValueError(f"`k` must satisfy 0 <= k <= n along axis {axis}, got k={k} for n={n}")
    k = jnp.asarray(k)
    if not (jnp.issubdtype(k.dtype, jnp.integer) or jnp.issubdtype(k.dtype, jnp.floating)):
        raise TypeError(f"`k` must have an integer or floating dtype, got dtype {k.dtype}")
    try:
        return jnp.broadcast_to(k, batch_shape)
    except ValueError:
        raise ValueError(
            f"`k` must be a scalar or broadcast to the batch shape {batch_shape} (the shape of `x` "
            f"without `axis`), got shape {k.shape}"
        ) from None


def _strength(epsilon, temperature, batch_shape, dtype):
    """Returns ('epsilon' | 'temperature', value as a [B, 1] array)."""
    if epsilon is not None and temperature is not None:
        raise ValueError(
            "`epsilon` and `temperature` are mutually exclusive, got "
            f"epsilon={epsilon!r} and temperature={temperature!r}"
        )
    kind, value = ("temperature", temperature) if temperature is not None else ("epsilon", epsilon)
    value = DEFAULT_EPSILON if value is None else value
    value = jnp.asarray(check_positive(value, kind)).astype(dtype)
    try:
        value = jnp.broadcast_to(value, batch_shape)
    except ValueError:
        raise ValueError(
            f"`{kind}` must be a scalar or broadcast to the batch shape {batch_shape}, "
            f"got shape {value.shape}"
        ) from None
    return kind, value.reshape(-1, 1)


def _prepare(x, where, axis: int):
    """Validates ``x`` and ``where``; returns [B, n] rows, validity, the axis and ``restore``."""
    x = check_floating(x, "x")
    ax = canonicalize_axis(axis, x.ndim)
    if where is not None:
        where = jnp.asarray(where)
        if where.dtype != jnp.bool_:
            raise TypeError(f"`where` must be a boolean array, got dtype {where.dtype}")
        if where.shape != x.shape:
            raise ValueError(
                f"`where` must have the shape of `x` {x.shape}, got shape {where.shape}"
            )
    dtype = compute_dtype(x.dtype)
    moved = jnp.moveaxis(x.astype(dtype), ax, -1)
    shape = moved.shape
    rows = moved.reshape(-1, shape[-1])
    if where is None:
        valid = jnp.ones(rows.shape, dtype)
    else:
        valid = jnp.moveaxis(where, ax, -1).reshape(rows.shape).astype(dtype)
        rows = jnp.where(valid > 0, rows, 0)

    def restore(y):
        return jnp.moveaxis(y.reshape(shape[:-1] + y.shape[1:]), -1, ax).astype(x.dtype)

    return x, rows, valid, ax, shape[:-1], restore


def _default_tol(tol, n: int, dtype) -> float:
    """Default stopping tolerance on |sum A - k| in mask units: the rounding of an n-term sum."""
    if tol is not None:
        return tol
    return float(max(4 * n * jnp.finfo(dtype).eps, 16 * jnp.finfo(dtype).eps))


def _cost_scale(rows, valid, lo: float, hi: float):
    """M = max over valid entries and anchors in [lo, hi] of (x - y)^2, without gradient."""
    c = jnp.maximum((rows - lo) ** 2, (rows - hi) ** 2)
    m = jnp.max(jnp.where(valid > 0, c, 0), axis=1, keepdims=True)
    return lax.stop_gradient(jnp.where(m > 0, m, 1))


def _temperature(kind, value, rows, valid, lo: float, hi: float):
    """Temperature T [B, 1] in score units: T = epsilon * M / 2 for the paper's parameterization."""
    if kind == "temperature":
        return value
    return value * _cost_scale(rows, valid, lo, hi) / 2


# ----------------------------------------------------------------------------- sinkhorn


def sinkhorn(
    cost: ArrayLike,
    a: ArrayLike | None = None,
    b: ArrayLike | None = None,
    *,
    epsilon: float | ArrayLike,
    tol: float = 1e-6,
    max_iter: int = 1000,
    differentiation: Differentiation = "implicit",
) -> SinkhornOutput:
    r"""Entropic optimal transport by log-domain Sinkhorn, with implicit derivatives.

    Solves :math:`\min_{P \ge 0, P1 = a, P^\top 1 = b} \langle P, C\rangle +
    \varepsilon \langle P, \log P - 1\rangle` through its dual potentials ``(f, g)``:
    :math:`P_{ij} = \exp((f_i + g_j - C_{ij})/\varepsilon)`. Each iteration updates ``g`` then
    ``f`` (so the rows of ``P`` sum to ``a`` exactly) and stops when the column error
    :math:`\|P^\top 1 - b\|_1` (in the units of ``b``) is at most ``tol``, or after ``max_iter``.
    Reference semantics for one problem::

        g = zeros(m); f = eps * log(a) - eps * logsumexp((g - C) / eps, axis=1)
        while sum(abs(P(f, g).sum(0) - b)) > tol and it < max_iter:
            g = eps * log(b) - eps * logsumexp((f[:, None] - C) / eps, axis=0)
            f = eps * log(a) - eps * logsumexp((g - C) / eps, axis=1)
        f, g = f + g[-1], g - g[-1]

    ``differentiation="implicit"`` differentiates the optimality conditions (an (m-1)×(m-1)
    solve after fixing the gauge ``g[-1] = 0``): cost O(nm + m³), independent of the iterations.
    ``"unrolled"`` runs exactly ``max_iter`` iterations in a ``lax.scan`` and differentiates
    through them (for comparison; memory grows with ``max_iter`` in reverse mode).

    Args:
        cost: cost matrix, ``[..., n, m]``.
        a: row marginal, ``[..., n]``, non-negative (default uniform ``1/n``). Rows with
            ``a_i = 0`` get ``f_i = -inf`` and a zero row in the plan.
        b: column marginal, ``[..., m]``, positive, with ``sum(b) == sum(a)`` (default ``1/m``).
        epsilon: regularization, positive; a scalar or an array of the batch shape ``[...]``.
        tol: stopping tolerance on the column-marginal L1 error, in the units of ``b``.
        max_iter: maximum number of iterations (exact number for ``"unrolled"``).
        differentiation: ``"implicit"`` or ``"unrolled"``.

    Returns:
        A :class:`SinkhornOutput` ``(f, g, plan, iterations, error, converged)``.

    Raises:
        ValueError: bad shapes, ``epsilon`` not positive, bad ``tol``/``max_iter``/option.
        TypeError: non-floating ``cost`` or non-int ``max_iter``.

    Examples:
        >>> import jax.numpy as jnp
        >>> out = sinkhorn(jnp.array([[0.0, 1.0], [1.0, 0.0]]), epsilon=0.1)
        >>> [round(float(v), 3) for v in out.plan.sum(axis=0)]
        [0.5, 0.5]
    """
    check_choice(differentiation, DIFFERENTIATIONS, "differentiation")
    cost = check_floating(cost, "cost")
    if cost.ndim < 2:
        raise ValueError(f"`cost` must have shape [..., n, m], got shape {cost.shape}")
    max_iter = _check_int(max_iter, "max_iter", 1 if differentiation == "unrolled" else 0)
    tol = _check_tol(tol)
    if tol is None:
        raise ValueError("`tol` must be a non-negative number, got tol=None")
    dtype = compute_dtype(cost.dtype)
    *batch, n, m = cost.shape
    batch = tuple(batch)
    cost = cost.astype(dtype)

    def marginal(v, size, name):
        if v is None:
            return jnp.full(batch + (size,), 1 / size, dtype)
        v = check_floating(v, name).astype(dtype)
        try:
            return jnp.broadcast_to(v, batch + (size,))
        except ValueError:
            raise ValueError(
                f"`{name}` must broadcast to {batch + (size,)} for a cost of shape "
                f"{cost.shape}, got shape {v.shape}"
            ) from None

    a = marginal(a, n, "a")
    b = marginal(b, m, "b")
    eps = jnp.asarray(check_positive(epsilon, "epsilon")).astype(dtype)
    try:
        eps = jnp.broadcast_to(eps, batch)
    except ValueError:
        raise ValueError(
            f"`epsilon` must be a scalar or broadcast to the batch shape {batch}, "
            f"got shape {eps.shape}"
        ) from None
    flat = (-1,)
    f, g, plan, it, err = _sinkhorn_rows(
        cost.reshape(flat + (n, m)),
        a.reshape(flat + (n,)),
        b.reshape(flat + (m,)),
        eps.reshape(flat),
        max_iter,
        tol,
        differentiation,
    )
    return SinkhornOutput(
        f.reshape(batch + (n,)),
        g.reshape(batch + (m,)),
        plan.reshape(batch + (n, m)),
        it.reshape(batch),
        err.reshape(batch),
        err.reshape(batch) <= tol,
    )


def _sinkhorn_rows(cost, a, b, eps, max_iter: int, tol: float, differentiation: str):
    """Batched kernel: cost [B, n, m], a [B, n], b [B, m], eps [B]; returns (f, g, P, it, err)."""
    solver = sinkhorn_implicit if differentiation == "implicit" else sinkhorn_unrolled

    def one(c, a1, b1, e1):
        f, g, it, err = solver(c, a1, b1, e1, max_iter, tol)
        f_ok = f > -jnp.inf
        h = (jnp.where(f_ok, f, 0)[:, None] + g[None, :] - c) / e1
        plan = jnp.where(f_ok[:, None], jnp.exp(h), 0)
        return f, g, plan, it, err

    if cost.shape[0] == 0:
        shape = cost.shape
        z = jnp.zeros
        return z(shape[:2]), z(shape[::2]), z(shape), z((0,), jnp.int32), z((0,))
    return jax.vmap(one)(cost, a, b, eps)


# ----------------------------------------------------------------------------- top-k mask


def soft_topk_mask_solve(
    x: ArrayLike,
    k: int | ArrayLike,
    *,
    axis: int = -1,
    largest: bool = True,
    epsilon: float | ArrayLike | None = None,
    temperature: float | ArrayLike | None = None,
    where: ArrayLike | None = None,
    tol: float | None = None,
    max_iter: int = 100,
    solver: MaskSolver = "newton",
) -> TopKMaskOutput:
    r"""Soft top-k mask with solver diagnostics; see :func:`soft_topk_mask` for the operator.

    Args:
        x: scores, ``[..., n, ...]`` with the items along ``axis``.
        k: number of items to select: a Python int with ``0 <= k <= n``, or an integer or float
            array broadcastable to the batch shape (traced, per row; differentiable if float).
            An array ``k`` is clipped to ``[0, n_valid]`` (``k <= 0`` gives zeros,
            ``k >= n_valid`` ones on the valid entries).
        axis: the item axis.
        largest: select the k largest (``True``) or the k smallest (``False``) scores.
        epsilon: the paper's regularization (relative to the max-normalized cost); default 0.1.
        temperature: alternative to ``epsilon``, in the units of the scores (``T = ε M / 2``).
        where: optional boolean array of the shape of ``x``; ``False`` entries take no part and
            get exactly 0 (and zero gradient).
        tol: stopping tolerance on :math:`|\sum A - k|` in mask units (default
            ``4 n eps_dtype``, the rounding of an n-term sum).
        max_iter: maximum root-find (Newton) or Sinkhorn iterations.
        solver: ``"newton"`` (exact scalar root find, O(n) per iteration, closed-form O(n)
            derivative) or ``"sinkhorn"`` (two-anchor log-domain Sinkhorn with implicit
            derivative, for comparison).

    Returns:
        A :class:`TopKMaskOutput` ``(mask, threshold, iterations, residual, converged)``.

    Raises:
        ValueError: bad ``k``, ``epsilon``, ``temperature``, ``where`` shape, ``tol``, option.
        TypeError: non-floating ``x``, non-boolean ``where``, non-int ``k`` or ``max_iter``.

    Examples:
        >>> import jax.numpy as jnp
        >>> out = soft_topk_mask_solve(jnp.array([0.1, 0.9, 0.5, 0.7]), 2, temperature=1e-3)
        >>> out.mask.round(3).tolist(), bool(out.converged)
        ([0.0, 1.0, 0.0, 1.0], True)
    """
    check_choice(solver, MASK_SOLVERS, "solver")
    if not isinstance(largest, (bool, np.bool_)):
        raise TypeError(f"`largest` must be a bool, got largest={largest!r}")
    max_iter = _check_int(max_iter, "max_iter", 0)
    tol = _check_tol(tol)
    x, rows, valid, ax, batch, restore = _prepare(x, where, axis)
    n, dtype = rows.shape[1], rows.dtype
    k = _check_k(k, n, axis, batch, allow_array=True)
    kind, strength = _strength(epsilon, temperature, batch, dtype)
    tol = _default_tol(tol, n, dtype)
    temp = _temperature(kind, strength, rows, valid, 0.0, 1.0)
    sign = 1 if largest else -1
    nb = rows.shape[0]
    if isinstance(k, int) and (k == 0 or (k == n and where is None)):
        mask = jnp.zeros_like(rows) if k == 0 else valid
        thr = jnp.full((nb,), jnp.inf if (k == 0) == largest else -jnp.inf, dtype)
        zero = jnp.zeros((nb,), dtype)
        return TopKMaskOutput(
            restore(mask), thr.reshape(batch), jnp.int32(0), zero.reshape(batch),
            jnp.ones(batch, bool),
        )
    k_rows = jnp.broadcast_to(jnp.asarray(k), batch).reshape(-1).astype(dtype)
    if solver == "newton":
        s = sign * rows / temp
        mask, tau, it, res = topk_mask_rows(s, k_rows, valid, max_iter, tol)
        thr = -sign * tau * temp[:, 0]
    else:
        mask, thr, it, res = _mask_by_sinkhorn(rows, valid, k_rows, temp, largest, max_iter, tol)
    return TopKMaskOutput(
        restore(mask), thr.reshape(batch), it, res.reshape(batch), res.reshape(batch) <= tol
    )


def _mask_by_sinkhorn(rows, valid, k_rows, temp, largest: bool, max_iter: int, tol: float):
    """Two-anchor mask by Sinkhorn on the cost (x - y)^2, y in {0, 1}, with eps = 2 T."""
    dtype = rows.dtype
    n_valid = valid.sum(axis=1)
    tiny = jnp.finfo(dtype).eps
    sel = jnp.clip(k_rows / n_valid, tiny, 1 - tiny)
    anchors = jnp.asarray([0.0, 1.0], dtype)
    cost = (rows[:, :, None] - anchors[None, None, :]) ** 2
    b = jnp.stack([1 - sel, sel] if largest else [sel, 1 - sel], axis=1)
    a = valid / n_valid[:, None]
    _, g, plan, it, err = _sinkhorn_rows(
        cost, a, b, 2 * temp[:, 0], max_iter, tol / rows.shape[1], "implicit"
    )
    col = 1 if largest else 0
    mask = n_valid[:, None] * plan[:, :, col]
    # Threshold: A = sigmoid(±(x - 1/2)/T + (g1 - g0)/(2T)) = sigmoid(±(x - thr)/T).
    shift = (g[:, 1] - g[:, 0]) / 2
    thr = 0.5 - shift if largest else 0.5 + shift
    return mask, thr, jnp.max(it), jnp.abs(mask.sum(axis=1) - k_rows)


def soft_topk_mask(
    x: ArrayLike,
    k: int | ArrayLike,
    *,
    axis: int = -1,
    largest: bool = True,
    epsilon: float | ArrayLike | None = None,
    temperature: float | ArrayLike | None = None,
    where: ArrayLike | None = None,
    tol: float | None = None,
    max_iter: int = 100,
    solver: MaskSolver = "newton",
) -> jax.Array:
    r"""Smoothed top-k indicator by entropic optimal transport (Xie et al., 2020).

    The n scores (mass 1/n) are transported to the anchors {0, 1} with cost
    :math:`(x_i - y_j)^2 / M`, :math:`M = \max_{ij}(x_i - y_j)^2` (held constant when
    differentiating), and entropic regularization ε; the selected anchor (1 for
    ``largest=True``, 0 otherwise) receives mass k/n and :math:`A = n\,\Gamma_{:,\mathrm{sel}}`.
    Equivalently :math:`A_i = \sigma((x_i - \theta)/T)` (``largest``) or
    :math:`\sigma((\theta - x_i)/T)`, with :math:`T = \varepsilon M / 2` (or ``temperature=T``)
    and θ fixed by :math:`\sum_i A_i = k`, found by a safeguarded Newton root find.

    ``A`` lies in [0, 1] and sums to k (to ``tol``); ``k = 0`` and ``k = n`` are exact. As ε → 0
    it tends to the indicator of ``lax.top_k(x, k)``. Derivative (exact, O(n)):
    :math:`dA = \sigma' \odot (ds - (\langle\sigma', ds\rangle - dk)/\sum\sigma')`,
    :math:`\sigma' = A(1 - A)`, :math:`s = \pm x / T`.

    Args:
        x: scores, ``[..., n, ...]`` with the items along ``axis`` (floating dtype).
        k: a Python int with ``0 <= k <= n``, or an array broadcastable to the batch shape
            (per-row, traced; float ``k`` is differentiable), clipped to ``[0, n_valid]``.
        axis: the item axis (default last).
        largest: select the k largest (default) or the k smallest scores.
        epsilon: regularization relative to the max-normalized cost (default 0.1); a positive
            scalar or an array of the batch shape.
        temperature: alternative to ``epsilon`` in the units of the scores; mutually exclusive.
        where: boolean array of the shape of ``x``; ``False`` entries take no part and get 0.
        tol: stopping tolerance on :math:`|\sum A - k|`, mask units (default ``4 n eps_dtype``).
        max_iter: maximum root-find iterations.
        solver: ``"newton"`` (default) or ``"sinkhorn"`` (same operator, for comparison).

    Returns:
        The soft mask, same shape and dtype as ``x``.

    Raises:
        ValueError: ``k`` outside ``[0, n]``, non-positive ``epsilon``/``temperature``, both of
            them given, ``where`` of the wrong shape, a bad option.
        TypeError: non-floating ``x``, non-boolean ``where``, non-integer Python ``k``.

    Examples:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([0.1, 0.9, 0.5, 0.7])
        >>> soft_topk_mask(x, 2, temperature=1e-3).round(3).tolist()
        [0.0, 1.0, 0.0, 1.0]
        >>> round(float(soft_topk_mask(x, 2, epsilon=1.0).sum()), 5)
        2.0
    """
    return soft_topk_mask_solve(
        x, k, axis=axis, largest=largest, epsilon=epsilon, temperature=temperature,
        where=where, tol=tol, max_iter=max_iter, solver=solver,
    ).mask


# ----------------------------------------------------------------------------- sorted top-k


def soft_topk_solve(
    x: ArrayLike,
    k: int,
    *,
    axis: int = -1,
    largest: bool = True,
    epsilon: float | ArrayLike | None = None,
    temperature: float | ArrayLike | None = None,
    where: ArrayLike | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    differentiation: Differentiation = "implicit",
    solver: SortedSolver | None = None,
) -> SoftTopKOutput:
    r"""Sorted soft top-k with solver diagnostics; see :func:`soft_topk` for the operator.

    Args:
        x: scores, ``[..., n, ...]`` with the items along ``axis``.
        k: a Python int with ``0 <= k <= n`` (``k <= n_valid`` per row with ``where``).
        axis: the item axis.
        largest: the k largest in decreasing order (default) or the k smallest increasing.
        epsilon: regularization relative to the max-normalized cost (default 0.1).
        temperature: alternative to ``epsilon`` in score units (``ε = 2T / M``).
        where: boolean mask of the shape of ``x``; ``False`` entries get zero assignment.
        tol: tolerance on the column-marginal error in mask units (default
            ``max(sqrt(eps_dtype), 16 n eps_dtype)``: the float32 rounding floor grows with n).
        max_iter: maximum solver iterations (Newton: evaluations, head and full rows).
        differentiation: ``"implicit"`` (default) or ``"unrolled"`` (Sinkhorn only).
        solver: ``"newton"`` (semi-dual Newton on the k thresholds, converges at every ε) or
            ``"sinkhorn"`` (needs O(1/ε) iterations); default ``"newton"``, or ``"sinkhorn"``
            with ``differentiation="unrolled"``.

    Returns:
        A :class:`SoftTopKOutput` ``(values, assignment, iterations, residual, converged)``.

    Raises:
        ValueError: bad ``k``, strength, ``where`` shape, tolerance or option.
        TypeError: non-floating ``x``, non-int ``k``.

    Examples:
        >>> import jax.numpy as jnp
        >>> out = soft_topk_solve(jnp.array([0.1, 0.9, 0.5, 0.7]), 2, epsilon=0.01)
        >>> [round(float(v), 2) for v in out.values], bool(out.converged)
        ([0.9, 0.7], True)
    """
    check_choice(differentiation, DIFFERENTIATIONS, "differentiation")
    if solver is None:
        solver = "sinkhorn" if differentiation == "unrolled" else "newton"
    check_choice(solver, SORTED_SOLVERS, "solver")
    if solver == "newton" and differentiation == "unrolled":
        raise ValueError(
            "`differentiation='unrolled'` needs `solver='sinkhorn'`, got solver='newton'"
        )
    if not isinstance(largest, (bool, np.bool_)):
        raise TypeError(f"`largest` must be a bool, got largest={largest!r}")
    max_iter = _check_int(max_iter, "max_iter", 1)
    tol = _check_tol(tol)
    x, rows, valid, ax, batch, restore = _prepare(x, where, axis)
    nb, n = rows.shape
    dtype = rows.dtype
    k = _check_k(k, n, axis, batch, allow_array=False)
    kind, strength = _strength(epsilon, temperature, batch, dtype)
    if tol is None:
        tol = float(max(np.sqrt(jnp.finfo(dtype).eps), 16 * n * jnp.finfo(dtype).eps))
    if k == 0:
        values = jnp.zeros((nb, 0), dtype)
        assign = jnp.zeros((nb, 0, n), dtype)
        it, res, conv = jnp.zeros((nb,), jnp.int32), jnp.zeros((nb,), dtype), None
    else:
        m = k + 1 if k < n else k
        steps = np.arange(k, k - m, -1) if largest else np.arange(m)
        anchors = steps.astype(dtype)
        temp = _temperature(kind, strength, rows, valid, float(steps.min()), float(steps.max()))
        n_valid = valid.sum(axis=1, keepdims=True)
        b = jnp.broadcast_to(1 / n_valid, (nb, m))
        if m > k:
            rest = jnp.maximum((n_valid[:, 0] - k) / n_valid[:, 0], jnp.finfo(dtype).eps)
            b = b.at[:, k].set(rest)
        if solver == "newton":  # anchors decreasing: negate x and y for the smallest
            sign = 1 if largest else -1
            pi, _, it, err = newton_plan(
                sign * rows, sign * anchors, valid / n_valid, b, 2 * temp[:, 0], max_iter,
                tol / n, keep=k,
            )  # fmt: skip
            assign = valid[:, None, :] * pi  # n_valid P^T over the first k anchors: [B, k, n]
        else:
            cost = (rows[:, :, None] - anchors[None, None, :]) ** 2
            _, _, plan, it, err = _sinkhorn_rows(
                cost, valid / n_valid, b, 2 * temp[:, 0], max_iter, tol / n, differentiation
            )
            assign = jnp.swapaxes(n_valid[:, :, None] * plan[:, :, :k], 1, 2)
        values = jnp.einsum("bkn,bn->bk", assign, rows)
        res = n_valid[:, 0] * err
    conv = res <= tol
    out_batch = x.shape[:ax] + x.shape[ax + 1 :]
    values = jnp.moveaxis(values.reshape(out_batch + (k,)), -1, ax).astype(x.dtype)
    assign = assign.reshape(out_batch + (k, n)).astype(x.dtype)
    return SoftTopKOutput(
        values, assign, it.reshape(out_batch), res.reshape(out_batch), conv.reshape(out_batch)
    )


def soft_topk(
    x: ArrayLike,
    k: int,
    *,
    axis: int = -1,
    largest: bool = True,
    epsilon: float | ArrayLike | None = None,
    temperature: float | ArrayLike | None = None,
    where: ArrayLike | None = None,
    tol: float | None = None,
    max_iter: int = 1000,
    differentiation: Differentiation = "implicit",
    solver: SortedSolver | None = None,
) -> SoftTopK:
    r"""Sorted soft top-k (Xie et al., 2020, beam-search operator): values and assignment.

    The n scores (mass 1/n) are transported to the k+1 anchors :math:`k, k-1, \dots, 1, 0`
    (``largest=True``; :math:`0, 1, \dots, k` otherwise): the first k anchors get mass 1/n, the
    last :math:`(n-k)/n` (no rest anchor when k = n). With cost :math:`(x_i - y_j)^2/M`
    (M held constant) and entropic regularization ε, the plan Γ is computed by semi-dual Newton
    on the k anchor thresholds (:mod:`softops._ot_newton`: it starts from the sorted assignment
    and, at small ε, solves on the largest items first, certifying that the rest sits on the last
    anchor; converges at any ε) or by :func:`sinkhorn`, and
    :math:`A = n\,\Gamma_{:, :k}^\top` is the k×n soft assignment: row j is the soft indicator
    of the item of rank j+1, and ``values = A @ x`` are the soft top-k values in order. As ε → 0
    they become ``lax.top_k(x, k)`` (ties share the slots). Implicit derivative through the
    gauge-fixed k×k system, O(nk + k³) whatever the iteration count.

    Args:
        x: scores, ``[..., n, ...]`` with the items along ``axis``.
        k: a Python int with ``0 <= k <= n``.
        axis: the item axis (default last). ``values`` keeps it (with length k).
        largest: the k largest in decreasing order (default) or the k smallest increasing.
        epsilon: regularization relative to the max-normalized cost (default 0.1).
        temperature: alternative to ``epsilon`` in score units: ``ε = 2T / M``.
        where: boolean mask of the shape of ``x``; ``False`` entries take no part (zero
            assignment); needs ``k <= n_valid`` in every row (else the result is unspecified
            and ``converged`` is False).
        tol: tolerance on the column-marginal error in mask units (default
            ``max(sqrt(eps_dtype), 16 n eps_dtype)``).
        max_iter: maximum solver iterations (Sinkhorn needs O(1/ε) of them, Newton a few tens).
        differentiation: ``"implicit"`` (default) or ``"unrolled"`` (through ``max_iter``
            Sinkhorn iterations; needs ``solver="sinkhorn"``).
        solver: ``"newton"`` or ``"sinkhorn"``; default ``"newton"`` (``"sinkhorn"`` with
            ``differentiation="unrolled"``).

    Returns:
        :class:`SoftTopK` ``(values, assignment)``: ``values`` the shape of ``x`` with
        ``axis`` of length k; ``assignment`` ``[*batch, k, n]`` (batch = the other axes).

    Raises:
        ValueError: ``k`` outside ``[0, n]``, non-positive strength, both strengths, bad shapes.
        TypeError: non-floating ``x``, non-int ``k``.

    Examples:
        >>> import jax.numpy as jnp
        >>> vals, assign = soft_topk(jnp.array([0.1, 0.9, 0.5, 0.7]), 2, epsilon=0.01)
        >>> [round(float(v), 2) for v in vals], [round(float(r), 2) for r in assign.sum(-1)]
        ([0.9, 0.7], [1.0, 1.0])
    """
    out = soft_topk_solve(
        x, k, axis=axis, largest=largest, epsilon=epsilon, temperature=temperature,
        where=where, tol=tol, max_iter=max_iter, differentiation=differentiation, solver=solver,
    )
    return SoftTopK(out.values, out.assignment)
