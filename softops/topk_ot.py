r"""Differentiable top-k by entropic optimal transport (Xie et al., 2020).

Top-k is an optimal-transport problem: the n scores $x_i$ (mass $1/n$ each) are moved
to anchors $y_j$ with cost $C_{ij} = (x_i - y_j)^2$ and an entropic regularization ε,

$$
\Gamma^\star = \arg\min_{\Gamma \ge 0,\ \Gamma 1 = \mu,\ \Gamma^\top 1 = \nu}
\langle \Gamma, C / M \rangle + \varepsilon \langle \Gamma, \log \Gamma - 1\rangle,
$$

with $M = \max_{ij} C_{ij}$. M is differentiated as the function of the valid scores' max and
min that it is, so every derivative is that of the returned value (the paper's code holds M
constant, which gives a gradient that is not the derivative of the output).

- [`soft_topk_mask`][softops.topk_ot.soft_topk_mask]: anchors $\{0, 1\}$; the selected anchor
  gets mass $k/n$, and the mask is $A = n\,\Gamma_{:, \mathrm{selected}} \in [0, 1]^n$ with
  $\sum A = k$. Eliminating the row potentials leaves one scalar per row:
  $A_i = \sigma((x_i - \theta)/T)$ (``largest=True``; $\sigma((\theta - x_i)/T)$ otherwise) with
  the threshold θ fixed by $\sum A = k$, solved by a safeguarded Newton root find; derivative in
  closed form, O(n).
- [`soft_topk`][softops.topk_ot.soft_topk]: the sorted variant, anchors $k, k-1, \dots, 1, 0$
  (the first k with mass $1/n$, the last with $(n-k)/n$), solved by semi-dual Newton (or
  Sinkhorn); returns the soft top-k values in order and the k×n soft assignment (the paper's
  beam-search operator).
- [`sinkhorn`][softops.topk_ot.sinkhorn]: the solver itself, for any cost.

Two parameterizations of the strength, mutually exclusive:

- ``epsilon=ε`` (default 0.1): the paper's, relative to the normalized cost $C/M$. Because
  M depends on the scores and the anchors sit at fixed positions, results change when the scores
  are shifted or scaled (``mask(x + 5)`` differs from ``mask(x)``).
- ``temperature=T``: in the units of the scores, $\Gamma_{ij} \propto
  \exp((x_i y_j - y_j^2/2)/T)$; for the mask $A_i = \sigma((x_i - \theta)/T)$, invariant to
  a shift of the scores. For a scale-free strength pass a per-row array, e.g.
  ``temperature=0.1 * x.std(-1)``. They relate by $T = \varepsilon M / 2$.

As ε (or T) → 0 the mask tends to the hard top-k indicator (``lax.top_k``) when the k-th and
(k+1)-th scores differ; tied scores share the mass equally.

Derivatives are implicit (optimality conditions), in forward mode (``jax.custom_jvp``); reverse
mode is their transpose, so ``grad``, ``jvp``, ``vmap`` and ``hessian`` work and the cost does not
depend on the number of iterations. Batches sharded over devices run where they live.

NaN and inf: a row with a NaN among its valid scores, a strength that is not positive and finite
(traced), a NaN ``k``, or a solver that stopped at ``max_iter`` gives NaN in that row (the
``*_solve`` functions return the raw iterate with ``converged=False`` instead). With
``epsilon=`` a ±inf score also gives NaN (M is infinite); with ``temperature=`` a score of
``-inf`` (``largest=True``; ``+inf`` otherwise) is never selected (exact 0). Exclude entries
with ``where=``.

Reference: Xie, Dai, Chen, Dai, Zhao, Zha, Wei, Pfister, Differentiable Top-k with Optimal
Transport, NeurIPS 2020, arXiv:2002.06504.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
from jax.typing import ArrayLike

from softops._ot import ops
from softops._ot.ops import Differentiation, MaskRegularization, Solver
from softops._ot.permutation import soft_permutation, sort_with
from softops._ot.sinkhorn import SinkhornOutput

__all__ = [
    "SinkhornOutput",
    "SoftTopKOutput",
    "TopKMaskOutput",
    "sinkhorn",
    "soft_topk",
    "soft_topk_mask",
    "soft_topk_mask_solve",
    "soft_topk_solve",
    "soft_permutation",
    "sort_with",
]


class TopKMaskOutput(NamedTuple):
    r"""Result of [`soft_topk_mask_solve`][softops.topk_ot.soft_topk_mask_solve].

    Attributes:
        mask: the soft top-k mask, shape of ``x``.
        threshold: θ in the units of the scores (``A = sigmoid(±(x - θ)/T)``), batch shape.
        iterations: root-find (or Sinkhorn) iterations, int32, batch shape.
        residual: $|\sum A - k|$ in mask units, batch shape.
        converged: ``residual <= tol`` (or the threshold found to the dtype's resolution).
    """

    mask: jax.Array
    threshold: jax.Array
    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


class SoftTopKOutput(NamedTuple):
    r"""Result of [`soft_topk_solve`][softops.topk_ot.soft_topk_solve].

    The two arrays of [`soft_topk`][softops.topk_ot.soft_topk] plus diagnostics.

    Attributes:
        values: soft top-k values in order, the shape of ``x`` with ``axis`` of length k.
        assignment: soft assignment of the items to the k slots, ``[*batch, k, n]``.
        iterations: Sinkhorn iterations, batch shape.
        residual: column-marginal error in mask units ($n \|\Gamma^\top 1 - \nu\|_1$).
        converged: ``residual <= tol``.
    """

    values: jax.Array
    assignment: jax.Array
    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


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
    solver: Solver = "newton",
    regularization: MaskRegularization = "kl",
) -> TopKMaskOutput:
    r"""[`soft_topk_mask`][softops.topk_ot.soft_topk_mask] with its solver's diagnostics, per row.

    Takes the arguments of [`soft_topk_mask`][softops.topk_ot.soft_topk_mask]. Unlike it, a row
    whose solver stopped at ``max_iter`` keeps its last iterate (with ``converged=False``) instead
    of NaN.

    Returns:
        A [`TopKMaskOutput`][softops.topk_ot.TopKMaskOutput]
        ``(mask, threshold, iterations, residual, converged)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> out = soft_topk_mask_solve(jnp.array([0.1, 0.9, 0.5, 0.7]), 2, temperature=1e-3)
        >>> out.mask.round(3).tolist(), bool(out.converged)
        ([0.0, 1.0, 0.0, 1.0], True)
    """
    out = ops.mask_op(
        x,
        k,
        axis=axis,
        max_iter=max_iter,
        largest=largest,
        epsilon=epsilon,
        temperature=temperature,
        where=where,
        tol=tol,
        solver=solver,
        nan_bad=False,
        regularization=regularization,
    )
    return TopKMaskOutput(*out)


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
    solver: Solver = "newton",
    straight_through: bool = False,
    regularization: MaskRegularization = "kl",
) -> jax.Array:
    r"""Smoothed top-k indicator by entropic optimal transport (Xie et al., 2020).

    The n scores (mass 1/n) are transported to the anchors {0, 1} with cost
    $(x_i - y_j)^2 / M$, $M = \max_{ij}(x_i - y_j)^2$ (differentiated as a function of
    the scores' extremes), and entropic regularization ε; the selected anchor (1 for
    ``largest=True``, 0 otherwise) receives mass k/n and $A = n\,\Gamma_{:,\mathrm{sel}}$.
    Equivalently $A_i = \sigma((x_i - \theta)/T)$ (``largest``) or
    $\sigma((\theta - x_i)/T)$, with $T = \varepsilon M / 2$ (or ``temperature=T``)
    and θ fixed by $\sum_i A_i = k$, found by a safeguarded Newton root find.

    ``A`` lies in [0, 1] and sums to k (to ``tol``); ``k = 0`` and ``k = n`` are exact. As ε → 0
    it tends to the indicator of ``lax.top_k(x, k)``. Derivative (exact, O(n)):
    $dA = \sigma' \odot (ds - (\langle\sigma', ds\rangle - dk)/\sum\sigma')$,
    $\sigma' = A(1 - A)$, $s = \pm x / T$.

    Args:
        x: scores, ``[..., n, ...]`` with the items along ``axis`` (floating dtype).
        k: a Python int with ``0 <= k <= n``, or an integer or float array broadcastable to the
            batch shape (per row, possibly traced; a float ``k`` is differentiable), clipped to
            ``[0, n_valid]``.
        axis: the item axis (default last).
        largest: select the k largest (default) or the k smallest scores.
        epsilon: regularization relative to the max-normalized cost (default 0.1), a positive
            number or an array of the batch shape.
        temperature: alternative to ``epsilon`` in the units of the scores; mutually exclusive.
        where: boolean array of the shape of ``x``; ``False`` entries take no part and get
            exactly 0 (and zero gradient).
        tol: stopping tolerance on $|\sum A - k|$, in mask units (default
            ``4 n eps_dtype``, the rounding of an n-term sum).
        max_iter: maximum root-find (or Sinkhorn) iterations.
        solver: ``"newton"`` (default: exact scalar root find, closed-form O(n) derivative) or
            ``"sinkhorn"`` (two-anchor Sinkhorn with implicit derivative, for comparison).
        straight_through: return the hard 0/1 indicator of the top-k (ties by index, as
            ``lax.top_k``; a fractional ``k`` selects the items of 0-based rank below it) with the
            soft mask's derivative. The derivative is biased: it is the soft mask's at this ε,
            not the (zero) derivative of the hard mask.
        regularization: ``"kl"`` (default: the entropic mask above) or an exactly sparse mask,
            ``"l2"``, ``"p=3/2"`` or ``"p=4/3"``: the capped-simplex projections of
            [softops.sparse_topk][] (strength ``temperature=``, default 1.0; ``epsilon=`` and
            ``solver=`` are for ``"kl"`` only; ``tol`` is unused: the threshold is exact).

    Returns:
        The soft mask, with the shape and dtype of ``x``.

    Raises:
        ValueError: ``k`` outside ``[0, n]``, a non-positive ``epsilon``/``temperature``, both of
            them given, ``where`` of the wrong shape, a bad option, ``x`` sharded along ``axis``.
        TypeError: non-floating ``x``, non-boolean ``where``, a ``k`` that is neither an int nor
            an array, a non-int ``max_iter``.

    Examples:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([0.1, 0.9, 0.5, 0.7])
        >>> soft_topk_mask(x, 2, temperature=1e-3).round(3).tolist()
        [0.0, 1.0, 0.0, 1.0]
        >>> round(float(soft_topk_mask(x, 2, epsilon=1.0).sum()), 5)
        2.0
    """
    return ops.mask_op(
        x,
        k,
        axis=axis,
        max_iter=max_iter,
        largest=largest,
        epsilon=epsilon,
        temperature=temperature,
        where=where,
        tol=tol,
        solver=solver,
        straight_through=straight_through,
        regularization=regularization,
    )[0]


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
    solver: Solver = "newton",
) -> SoftTopKOutput:
    r"""[`soft_topk`][softops.topk_ot.soft_topk] with its solver's diagnostics, per row.

    Takes the arguments of [`soft_topk`][softops.topk_ot.soft_topk]. Unlike it, a row whose solver
    stopped at ``max_iter`` keeps its last iterate (with ``converged=False``) instead of NaN.

    Returns:
        A [`SoftTopKOutput`][softops.topk_ot.SoftTopKOutput]
        ``(values, assignment, iterations, residual, converged)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> out = soft_topk_solve(jnp.array([0.1, 0.9, 0.5, 0.7]), 2, epsilon=0.01)
        >>> [round(float(v), 2) for v in out.values], bool(out.converged)
        ([0.9, 0.7], True)
    """
    out = ops.sorted_op(
        x,
        k,
        axis=axis,
        max_iter=max_iter,
        largest=largest,
        epsilon=epsilon,
        temperature=temperature,
        where=where,
        tol=tol,
        differentiation=differentiation,
        solver=solver,
        nan_bad=False,
    )
    return SoftTopKOutput(*out)


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
    solver: Solver = "newton",
    straight_through: bool = False,
) -> tuple[jax.Array, jax.Array]:
    r"""Sorted soft top-k (Xie et al., 2020, beam-search operator): values and assignment.

    The n scores (mass 1/n) are transported to the k+1 anchors $k, k-1, \dots, 1, 0$
    (``largest=True``; $0, 1, \dots, k$ otherwise): the first k anchors get mass 1/n, the
    last $(n-k)/n$ (no rest anchor when k = n). With cost $(x_i - y_j)^2/M$
    (M differentiated too) and entropic regularization ε, the plan Γ is computed by semi-dual Newton
    on the k anchor thresholds (``solver="newton"``: it starts from the sorted assignment and,
    when n is large, solves on the largest items first and certifies that the rest sits on the
    last anchor; it converges at every ε, to 1e-5 in float64) or by Sinkhorn (O(1/ε)
    iterations). $A = n\,\Gamma_{:, :k}^\top$ is the k×n soft assignment: row j is the
    soft indicator of the item of rank j+1, and ``values = A @ x`` are the soft top-k values in
    order. As ε → 0 they become ``lax.top_k(x, k)`` (ties share the slots). Implicit derivative
    through the k×k system at the solution, O(nk² + k³) whatever the iteration count.

    Args:
        x: scores, ``[..., n, ...]`` with the items along ``axis``.
        k: a Python int with ``0 <= k <= n``.
        axis: the item axis (default last). ``values`` keeps it (with length k).
        largest: the k largest in decreasing order (default) or the k smallest increasing.
        epsilon: regularization relative to the max-normalized cost (default 0.1).
        temperature: alternative to ``epsilon`` in score units: ``ε = 2T / M``.
        where: boolean mask of the shape of ``x``; ``False`` entries take no part (zero
            assignment); a row needs ``k <= n_valid`` (else it is NaN).
        tol: tolerance on the column-marginal error in mask units (default
            ``sqrt(eps_dtype)`` for Newton, ``max(sqrt(eps_dtype), 16 n eps_dtype)`` for
            Sinkhorn).
        max_iter: maximum solver iterations (Newton: evaluations, a few tens at any ε;
            Sinkhorn needs O(1/ε) iterations).
        differentiation: ``"implicit"`` (default) or ``"unrolled"`` (through ``max_iter``
            Sinkhorn iterations; needs ``solver="sinkhorn"``).
        solver: ``"newton"`` (default: converges at every ε, and is the faster one from
            ε ≈ 1e-2 down) or ``"sinkhorn"`` (faster at large ε, e.g. 3× at ε = 0.1, where it
            needs only a few iterations).
        straight_through: return ``lax.top_k``'s values and the one-hot assignment of its
            indices, with the soft operator's derivative (biased: the derivative at this ε).

    Returns:
        ``(values, assignment)``: ``values`` of the shape of ``x`` with ``axis`` of length k,
        ``assignment`` ``[*batch, k, n]`` (batch = the other axes).

    Raises:
        ValueError: ``k`` outside ``[0, n]``, non-positive strength, both strengths, bad shapes,
            a bad ``solver`` or ``differentiation``, ``"unrolled"`` with ``solver="newton"``.
        TypeError: non-floating ``x``, non-int ``k``.

    Examples:
        >>> import jax.numpy as jnp
        >>> vals, assign = soft_topk(jnp.array([0.1, 0.9, 0.5, 0.7]), 2, epsilon=0.01)
        >>> [round(float(v), 2) for v in vals], [round(float(r), 2) for r in assign.sum(-1)]
        ([0.9, 0.7], [1.0, 1.0])
    """
    values, assignment, *_ = ops.sorted_op(
        x,
        k,
        axis=axis,
        max_iter=max_iter,
        largest=largest,
        epsilon=epsilon,
        temperature=temperature,
        where=where,
        tol=tol,
        differentiation=differentiation,
        solver=solver,
        straight_through=straight_through,
    )
    return values, assignment


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

    Solves $\min_{P \ge 0, P1 = a, P^\top 1 = b} \langle P, C\rangle +
    \varepsilon \langle P, \log P - 1\rangle$ through its dual potentials ``(f, g)``:
    $P_{ij} = \exp((f_i + g_j - C_{ij})/\varepsilon)$. Each iteration updates ``g`` then
    ``f`` (so the rows of ``P`` sum to ``a`` exactly) and stops when the column error
    $\|P^\top 1 - b\|_1$ (in the units of ``b``) is at most ``tol``, or after ``max_iter``.
    Reference semantics for one problem:

        g = zeros(m); f = eps * log(a) - eps * logsumexp((g - C) / eps, axis=1)
        while sum(abs(P(f, g).sum(0) - b)) > tol and it < max_iter:
            g = eps * log(b) - eps * logsumexp((f[:, None] - C) / eps, axis=0)
            f = eps * log(a) - eps * logsumexp((g - C) / eps, axis=1)
        f, g = f + g[-1], g - g[-1]

    ``differentiation="implicit"`` differentiates the optimality conditions (an (m-1)×(m-1)
    solve after fixing the gauge ``g[-1] = 0``): O(nm + m³), independent of the iterations.
    ``"unrolled"`` runs exactly ``max_iter`` iterations in a ``lax.scan`` and differentiates
    through them (for comparison; memory grows with ``max_iter`` in reverse mode). Both give
    the OT derivative along tangents with ``sum(da) == sum(db)``; other tangents leave the feasible
    set, and get the derivative of the map the iteration computes for any masses (its rows are
    exact): the solution with marginals ``a`` and ``b * sum(a) / sum(b)``. So ``b`` scaled alone
    has zero derivative, and mass added to ``a`` reaches the columns in proportion to ``b``.

    Args:
        cost: cost matrix, ``[..., n, m]``.
        a: row marginal, ``[..., n]``, non-negative (default uniform ``1/n``). Rows with
            ``a_i = 0`` get ``f_i = -inf`` and a zero row in the plan.
        b: column marginal, ``[..., m]``, positive, with ``sum(b) == sum(a)`` (default ``1/m``;
            known marginals of different mass raise; traced ones are solved with ``b`` scaled
            to the mass of ``a``, the map whose derivative is described above).
        epsilon: regularization, positive; a number or an array of the batch shape ``[...]``.
        tol: stopping tolerance on the column-marginal L1 error, in the units of ``b``.
        max_iter: maximum number of iterations, at least 1 (exact number for ``"unrolled"``).
        differentiation: ``"implicit"`` or ``"unrolled"``.

    Returns:
        A [`SinkhornOutput`][softops.topk_ot.SinkhornOutput]
        ``(f, g, plan, iterations, residual, converged)``. Problems with a traced negative
        ``a``, non-positive ``b`` or bad ``epsilon`` give NaN.

    Raises:
        ValueError: bad shapes, ``epsilon`` not positive, known ``a`` negative or ``b`` not
            positive, known ``a`` and ``b`` of different mass, bad ``tol``/``max_iter``/option.
        TypeError: non-floating ``cost``, ``a`` or ``b``, non-int ``max_iter``.

    Examples:
        >>> import jax.numpy as jnp
        >>> out = sinkhorn(jnp.array([[0.0, 1.0], [1.0, 0.0]]), epsilon=0.1)
        >>> [round(float(v), 3) for v in out.plan.sum(axis=0)]
        [0.5, 0.5]
    """
    return ops.sinkhorn_op(cost, a, b, epsilon, tol, max_iter, differentiation)
