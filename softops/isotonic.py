r"""Isotonic regression: exact, batched, differentiable.

Blondel et al. (2020) reduce the projections behind soft sort and soft rank to two isotonic
problems with *decreasing* constraints :math:`v_1 \ge v_2 \ge \dots \ge v_n`:

- :func:`isotonic_l2` solves :math:`\min_v \tfrac12 \|v - (s - w)\|^2`;
- :func:`isotonic_kl` solves
  :math:`\min_v \langle e^{s - v}, 1\rangle + \langle e^w, v\rangle`.

:func:`isotonic_regression` is the weighted least-squares isotonic regression that scikit-learn
users know (increasing by default), on the same kernel.

All functions work along ``axis`` (the last by default) and treat leading axes as a batch.
They are exact (Pool Adjacent Violators), O(n) memory, and differentiable in forward and reverse
mode with O(n) derivatives: the solver finds which elements share a block, and every output is a
closed-form function of its block (a mean, or a difference of logsumexps), which JAX differentiates.

Two solvers give the same answer to rounding (``method=``):

- ``"sequential"``: stack-based PAV in one ``lax.while_loop``, O(n) steps; fastest on CPU.
- ``"parallel"``: pools every adjacent violating pair of blocks per round, each round O(n)
  data-parallel work; suits GPU/TPU, where a loop of O(n) tiny steps is slow. Random inputs take a
  few rounds (O(log n)); adversarial inputs can take up to n.
- ``"auto"`` (default): ``"sequential"`` on CPU and ``"parallel"`` elsewhere, decided when the
  computation is lowered for its platform.

NaN: comparisons with NaN are false, so a NaN never pools with its neighbours; the rows that
contain a NaN may contain NaN in their output, other rows of a batch are unaffected. An infinite
input makes its block infinite (or NaN where +inf and -inf meet).

Reference: Blondel, Teboul, Berthet, Djolonga, Fast Differentiable Sorting and Ranking, ICML 2020,
arXiv:2002.08871.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softops import _pav
from softops._checks import canonicalize_axis, check_choice, check_floating, compute_dtype
from softops._pav import Method


def _to_rows(x: jax.Array, axis: int):
    """Moves ``axis`` last and flattens the rest: returns [B, n] and a function undoing it."""
    moved = jnp.moveaxis(x, axis, -1)
    shape = moved.shape

    def restore(y):
        return jnp.moveaxis(y.reshape(shape), -1, axis)

    return moved.reshape(math.prod(shape[:-1]), shape[-1]), restore


def _prepare_pair(s: ArrayLike, w: ArrayLike, axis: int, method: str, names=("s", "w")):
    """Validates ``(s, w)``; returns [B, n] arrays of the compute dtype and ``restore``.

    ``restore`` maps a [B, n] result back to the input's layout and dtype.
    """
    check_choice(method, _pav.METHODS, "method")
    s = check_floating(s, names[0])
    w = check_floating(w, names[1])
    ax = canonicalize_axis(axis, s.ndim)
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
    out_dtype = jnp.result_type(s.dtype, w.dtype)
    dtype = compute_dtype(out_dtype)
    s2, restore = _to_rows(s.astype(dtype), ax)
    w2, _ = _to_rows(w.astype(dtype), ax)
    return s2, w2, lambda v: restore(v).astype(out_dtype)


def isotonic_l2(
    s: ArrayLike, w: ArrayLike, *, axis: int = -1, method: Method = "auto"
) -> jax.Array:
    r"""Decreasing isotonic regression of ``s - w`` in the Euclidean sense.

    Solves, along ``axis``,

    .. math::
        v^\star = \arg\min_{v_1 \ge \dots \ge v_n} \tfrac12 \|v - (s - w)\|^2 .

    On each block :math:`B` of equal solution values, :math:`v_B = \mathrm{mean}(s_B - w_B)`;
    hence :math:`\partial v_B / \partial s_j = 1/|B|` and
    :math:`\partial v_B/\partial w_j = -1/|B|`.

    Args:
        s: ``[..., n, ...]`` floating array.
        w: array of the same shape as ``s``, or of a shape that broadcasts to it (e.g. ``[n]``).
        axis: the axis along which the constraint runs; other axes are batch.
        method: ``"auto"``, ``"sequential"`` or ``"parallel"`` (see the module docstring).

    Returns:
        ``v*`` with the shape of ``s`` (half-precision inputs are computed in float32 and cast
        back).

    Raises:
        TypeError: if ``s`` or ``w`` is not floating point.
        ValueError: for a bad ``axis`` or ``method``, or shapes that do not match.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops import isotonic_l2
        >>> isotonic_l2(jnp.array([1.0, 3.0, 2.0]), jnp.zeros(3))
        Array([2., 2., 2.], dtype=float32)

    Reference:
        Blondel et al., Fast Differentiable Sorting and Ranking, ICML 2020, arXiv:2002.08871.
    """
    s2, w2, restore = _prepare_pair(s, w, axis, method)
    return restore(_pav.isotonic_decreasing(s2 - w2, jnp.ones_like(s2), "l2", method))


def isotonic_kl(
    s: ArrayLike, w: ArrayLike, *, axis: int = -1, method: Method = "auto"
) -> jax.Array:
    r"""Decreasing isotonic regression with the KL (entropic) regularization.

    Solves, along ``axis``,

    .. math::
        v^\star = \arg\min_{v_1 \ge \dots \ge v_n}
        \langle e^{s - v}, 1\rangle + \langle e^{w}, v\rangle .

    On each block :math:`B`, :math:`v_B = \mathrm{logsumexp}(s_B) - \mathrm{logsumexp}(w_B)`,
    computed in log space (no overflow for large inputs); hence
    :math:`\partial v_B/\partial s_j = \mathrm{softmax}(s_B)_j` and
    :math:`\partial v_B/\partial w_j = -\mathrm{softmax}(w_B)_j`.

    Args:
        s: ``[..., n, ...]`` floating array.
        w: array of the same shape as ``s``, or of a shape that broadcasts to it.
        axis: the axis along which the constraint runs; other axes are batch.
        method: ``"auto"``, ``"sequential"`` or ``"parallel"``.

    Returns:
        ``v*`` with the shape of ``s``.

    Raises:
        TypeError: if ``s`` or ``w`` is not floating point.
        ValueError: for a bad ``axis`` or ``method``, or shapes that do not match.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops import isotonic_kl
        >>> isotonic_kl(jnp.array([0.0, 0.0]), jnp.array([0.0, 0.0]))
        Array([0., 0.], dtype=float32)
    """
    s2, w2, restore = _prepare_pair(s, w, axis, method)
    return restore(_pav.isotonic_decreasing(s2, w2, "kl", method))


def isotonic_regression(
    y: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    increasing: bool = True,
    axis: int = -1,
    method: Method = "auto",
) -> jax.Array:
    r"""Weighted least-squares isotonic regression, as in ``sklearn.isotonic.isotonic_regression``.

    Solves, along ``axis``,

    .. math::
        \min_{v_1 \le \dots \le v_n} \sum_i \omega_i (v_i - y_i)^2

    (``v_1 >= ... >= v_n`` when ``increasing=False``). Each block's value is the weighted mean of
    ``y`` over the block, so the result is differentiable in ``y`` and in ``weights``.

    Args:
        y: ``[..., n, ...]`` floating array.
        weights: positive weights ``omega``, of ``y``'s shape or broadcastable to it; ``None`` means
            all ones. Zero or negative weights are not supported (a block of zero total weight
            gives NaN).
        increasing: the direction of the constraint.
        axis: the axis along which the constraint runs; other axes are batch.
        method: ``"auto"``, ``"sequential"`` or ``"parallel"``.

    Returns:
        The fitted values, with the shape of ``y``.

    Raises:
        TypeError: if ``y`` or ``weights`` is not floating point, or ``increasing`` is not a bool.
        ValueError: for a bad ``axis`` or ``method``, or shapes that do not match.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops import isotonic_regression
        >>> isotonic_regression(jnp.array([1.0, 3.0, 2.0, 4.0]))
        Array([1. , 2.5, 2.5, 4. ], dtype=float32)
    """
    if not isinstance(increasing, bool):
        raise TypeError(f"`increasing` must be a bool, got increasing={increasing!r}")
    y = check_floating(y, "y")
    weights = jnp.ones_like(y) if weights is None else check_floating(weights, "weights")
    y2, w2, restore = _prepare_pair(y, weights, axis, method, names=("y", "weights"))
    sign = -1.0 if increasing else 1.0
    return restore(sign * _pav.isotonic_decreasing(sign * y2 * w2, w2, "l2", method))
