r"""Isotonic regression: exact, batched, differentiable.

Blondel et al. (2020) reduce the projections behind soft sort and soft rank to two isotonic
problems with *decreasing* constraints $v_1 \ge v_2 \ge \dots \ge v_n$:

- [`isotonic_l2`][softops.isotonic.isotonic_l2] solves $\min_v \tfrac12 \|v - (s - w)\|^2$;
- [`isotonic_kl`][softops.isotonic.isotonic_kl] solves
  $\min_v \langle e^{s - v}, 1\rangle + \langle e^w, v\rangle$.

[`isotonic_regression`][softops.isotonic.isotonic_regression] is the weighted least-squares isotonic
regression that scikit-learn users know (increasing by default), on the same kernel.

All functions work along ``axis`` (the last by default) and treat the other axes as a batch. They
are exact (Pool Adjacent Violators), O(n) memory, and differentiable in forward and reverse mode
with O(n) derivatives of every order: the solver finds which elements share a block, and every
output is a closed-form function of its block (a mean, or a difference of logsumexps).

Two exact solvers (``method=``), both starting with a few rounds that pool every run of adjacent
violators at once (enough for most soft sort/rank inputs):

- ``"sequential"``: then stack-based PAV over what is left, O(n) in all; fastest on CPU.
- ``"parallel"``: then a merge tree of depth log2(n) over the remaining blocks, every step
  data-parallel and O(log^3 n) sequential steps on any input; for GPU/TPU.
- ``"auto"`` (default): ``"sequential"`` on CPU and ``"parallel"`` elsewhere, decided when the
  computation is lowered for its platform.

Batches sharded over devices run where they live, with no communication (docs: Distributed
training). A row with a NaN or ±inf input gives NaN in that row only.

Reference: Blondel, Teboul, Berthet, Djolonga, Fast Differentiable Sorting and Ranking, ICML 2020,
arXiv:2002.08871.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from softops import _checks, _sharding
from softops._isotonic import pav, rows
from softops._isotonic.pav import Method

__all__ = ["isotonic_kl", "isotonic_l2", "isotonic_regression"]


def _pair(s: ArrayLike, w: ArrayLike, axis, method, names=("s", "w")):
    """Validates ``(s, w)``: returns both with ``s``'s shape, the axis and the result dtype."""
    _checks.choice(method, pav.METHODS, "method")
    s = _checks.floating(s, names[0])
    w = _checks.floating(w, names[1])
    ax = _checks.axis(axis, s.ndim)
    if w.shape != s.shape:
        if w.ndim == 1 and w.shape[0] == s.shape[ax]:
            w = jnp.moveaxis(jnp.broadcast_to(w, jnp.moveaxis(s, ax, -1).shape), -1, ax)
        else:
            try:
                w = jnp.broadcast_to(w, s.shape)
            except ValueError:
                raise ValueError(
                    f"`{names[1]}` must have the shape of `{names[0]}`, be 1-D with its length "
                    f"along `axis`, or broadcast to its shape; got {names[0]}.shape={s.shape}, "
                    f"{names[1]}.shape={w.shape}, axis={axis}"
                ) from None
    return s, w, ax, jnp.result_type(s.dtype, w.dtype)


# The row kernels of the isotonic ops: rows ``(s, w)`` [..., n] to the decreasing isotonic
# solution of the statistics they build.


def _l2_rows(s, w, *, method: str) -> jax.Array:
    """`isotonic_l2`: of ``s - w`` with unit weights."""
    return rows.isotonic_rows(s - w, jnp.ones_like(s), kind="l2", method=method)


def _kl_rows(s, w, *, method: str) -> jax.Array:
    """`isotonic_kl`."""
    return rows.isotonic_rows(s, w, kind="kl", method=method)


def _weighted_rows(y, w, *, method: str, sign: float) -> jax.Array:
    """`isotonic_regression`: of ``sign * y`` with weights ``w``, times ``sign``.

    A row with a negative weight (traced; known ones raise) is NaN.
    """
    good = jnp.all(w >= 0, axis=-1)
    w = _checks.clean_rows(good, w, 1.0)
    out = rows.isotonic_rows(sign * y, w, kind="l2", method=method)
    return _checks.nan_rows(sign * out, good)


# Module-level partials: one object each, so the jit cache sees the same static argument.
_DECREASING_ROWS = functools.partial(_weighted_rows, sign=1.0)
_INCREASING_ROWS = functools.partial(_weighted_rows, sign=-1.0)


@functools.partial(jax.jit, static_argnames=("axis", "kernel", "method"))
def _isotonic(s, w, *, axis: int, kernel: Callable[..., jax.Array], method: str):
    """``kernel`` (one of the row kernels above) on the rows of ``(s, w)`` along ``axis``."""

    def run(s, w, _):
        return kernel(s, w, method=method)

    dtype = jnp.result_type(s.dtype, w.dtype)
    return _sharding.run_items(run, axis, (s, w.astype(s.dtype)), out_dtype=dtype, name="s")


def isotonic_l2(
    s: ArrayLike, w: ArrayLike, *, axis: int = -1, method: Method = "auto"
) -> jax.Array:
    r"""Decreasing isotonic regression of ``s - w`` in the Euclidean sense.

    Solves, along ``axis``,

    $$
    v^\star = \arg\min_{v_1 \ge \dots \ge v_n} \tfrac12 \|v - (s - w)\|^2 .
    $$

    On each block $B$ of equal solution values, $v_B = \mathrm{mean}(s_B - w_B)$;
    hence $\partial v_B / \partial s_j = 1/|B|$ and
    $\partial v_B/\partial w_j = -1/|B|$.

    Args:
        s: ``[..., n, ...]`` floating array.
        w: array of the same shape as ``s``, 1-D with ``s``'s length along ``axis``, or
            broadcastable to ``s``.
        axis: the axis along which the constraint runs; the other axes are batch.
        method: ``"auto"``, ``"sequential"`` or ``"parallel"`` (see the module docstring).

    Returns:
        ``v*`` with the shape of ``s`` (half-precision inputs are computed in float32).

    Raises:
        TypeError: if ``s`` or ``w`` is not a floating-point array.
        ValueError: for a bad ``axis`` or ``method``, or shapes that do not match.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops import isotonic_l2
        >>> isotonic_l2(jnp.array([1.0, 3.0, 2.0]), jnp.zeros(3))
        Array([2., 2., 2.], dtype=float32)

    Reference:
        Blondel et al., Fast Differentiable Sorting and Ranking, ICML 2020, arXiv:2002.08871.
    """
    s, w, ax, _ = _pair(s, w, axis, method)
    return _isotonic(s, w, axis=ax, kernel=_l2_rows, method=method)


def isotonic_kl(
    s: ArrayLike, w: ArrayLike, *, axis: int = -1, method: Method = "auto"
) -> jax.Array:
    r"""Decreasing isotonic regression with the KL (entropic) regularization.

    Solves, along ``axis``,

    $$
    v^\star = \arg\min_{v_1 \ge \dots \ge v_n}
    \langle e^{s - v}, 1\rangle + \langle e^{w}, v\rangle .
    $$

    On each block $B$, $v_B = \mathrm{logsumexp}(s_B) - \mathrm{logsumexp}(w_B)$,
    computed in log space (no overflow for large inputs); hence
    $\partial v_B/\partial s_j = \mathrm{softmax}(s_B)_j$ and
    $\partial v_B/\partial w_j = -\mathrm{softmax}(w_B)_j$.

    Args:
        s: ``[..., n, ...]`` floating array.
        w: array of the same shape as ``s``, 1-D with ``s``'s length along ``axis``, or
            broadcastable to ``s``.
        axis: the axis along which the constraint runs; the other axes are batch.
        method: ``"auto"``, ``"sequential"`` or ``"parallel"``.

    Returns:
        ``v*`` with the shape of ``s``.

    Raises:
        TypeError: if ``s`` or ``w`` is not a floating-point array.
        ValueError: for a bad ``axis`` or ``method``, or shapes that do not match.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops import isotonic_kl
        >>> isotonic_kl(jnp.array([0.0, 0.0]), jnp.array([0.0, 0.0]))
        Array([0., 0.], dtype=float32)
    """
    s, w, ax, _ = _pair(s, w, axis, method)
    return _isotonic(s, w, axis=ax, kernel=_kl_rows, method=method)


def isotonic_regression(
    y: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    increasing: bool = True,
    axis: int = -1,
    method: Method = "auto",
) -> jax.Array:
    r"""Weighted least-squares isotonic regression, as ``sklearn.isotonic.isotonic_regression``.

    Solves, along ``axis``,

    $$
    \min_{v_1 \le \dots \le v_n} \sum_i \omega_i (v_i - y_i)^2
    $$

    (``v_1 >= ... >= v_n`` when ``increasing=False``). Each block's value is the weighted mean of
    ``y`` over the block, so the result is differentiable in ``y`` and in ``weights``.

    Args:
        y: ``[..., n, ...]`` floating array.
        weights: positive weights $\omega$, of ``y``'s shape or broadcastable to it; None
            means all ones. A block of zero total weight gives NaN; a known negative weight
            raises, a traced one gives NaN for its row.
        increasing: the direction of the constraint.
        axis: the axis along which the constraint runs; the other axes are batch.
        method: ``"auto"``, ``"sequential"`` or ``"parallel"``.

    Returns:
        The fitted values, with the shape of ``y``.

    Raises:
        TypeError: if ``y`` or ``weights`` is not floating point, or ``increasing`` not a bool.
        ValueError: for a bad ``axis`` or ``method``, or shapes that do not match.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops import isotonic_regression
        >>> isotonic_regression(jnp.array([1.0, 3.0, 2.0, 4.0]))
        Array([1. , 2.5, 2.5, 4. ], dtype=float32)
    """
    increasing = _checks.boolean(increasing, "increasing")
    y = _checks.floating(y, "y")
    weights = _checks.array(np.ones((), y.dtype), "weights") if weights is None else weights
    y, w, ax, _ = _pair(y, weights, axis, method, names=("y", "weights"))
    known = _checks.concrete(weights)
    if known is not None and known.size and np.any(known < 0):
        raise ValueError(
            f"`weights` must be non-negative, got weights={known[known < 0].ravel()[0].item()!r}"
        )
    kernel = _INCREASING_ROWS if increasing else _DECREASING_ROWS
    return _isotonic(y, w, axis=ax, kernel=kernel, method=method)
