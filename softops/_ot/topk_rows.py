"""Row kernels of the optimal-transport top-k operators (private).

Rows ``x`` [..., n] with validity ``valid`` (bool or None) and a per-row temperature ``temp`` [...]
in the units of the scores. The paper's ``epsilon`` is converted to that temperature by
``prepass`` (``T = epsilon * M / 2`` with ``M`` the largest cost, a function of the valid
scores' max and min, differentiated as such: every derivative is that of the returned value).
Every kernel returns per-row diagnostics and an ``ok`` flag; the public layer turns rows that are
not ``ok`` into NaN.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from softops._ot.mask_root import topk_mask_rows
from softops._ot.newton import newton_sums
from softops._ot.sinkhorn import plan_of, sinkhorn_implicit, sinkhorn_unrolled


def sorted_anchors(k: int, n: int, largest: bool) -> np.ndarray:
    """Anchors of the sorted operator: k, k-1, ..., 0 (largest) or 0, ..., k.

    There is no rest anchor (the last one) when k = n.
    """
    m = k + 1 if k < n else k
    return np.arange(k, k - m, -1) if largest else np.arange(m)


@jax.custom_jvp
def _extremes(x, valid):
    """(max, min, count) of the valid entries of rows [..., n] in one fused pass.

    ``valid``: bool [..., n] or None (all). NaN propagates. Tangent: that of ``jnp.max`` and
    ``jnp.min`` (split equally among tied extremes); none for the count.
    """
    dtype = x.dtype
    inf = jnp.asarray(jnp.inf, dtype)
    ax = (x.ndim - 1,)
    if valid is None:
        x_max, x_min = lax.reduce(
            (x, x), (-inf, inf), lambda p, q: (jnp.maximum(p[0], q[0]), jnp.minimum(p[1], q[1])), ax
        )
        return x_max, x_min, jnp.full(x.shape[:-1], x.shape[-1], dtype)
    return lax.reduce(
        (jnp.where(valid, x, -inf), jnp.where(valid, x, inf), valid.astype(dtype)),
        (-inf, inf, jnp.zeros((), dtype)),
        lambda p, q: (jnp.maximum(p[0], q[0]), jnp.minimum(p[1], q[1]), p[2] + q[2]),
        ax,
    )


@_extremes.defjvp
def _extremes_jvp(primals, tangents):
    x, valid = primals
    dx = tangents[0]
    out = _extremes(x, valid)

    def tangent(e):  # mean of dx over the entries equal to the extreme (none: 0)
        at = x == e[..., None]
        at = at if valid is None else at & valid
        count = at.sum(axis=-1).astype(x.dtype)
        total = jnp.where(at, dx, 0).sum(axis=-1)
        return jnp.where(count > 0, total / jnp.where(count > 0, count, 1), 0)

    return out, (tangent(out[0]), tangent(out[1]), jnp.zeros_like(out[2]))


def prepass(kind: str, value, x, valid, lo: float, hi: float, largest: bool):
    """One pass over the rows: the temperature, the taking part and the row checks.

    Returns ``(temp, valid, good, x_max, x_min, n_valid)``: ``temp`` [...] in score units
    (``epsilon``: ``T = epsilon * M / 2``, ``M = max (x - y)^2`` over the valid items and anchors
    ``y`` in [lo, hi], differentiable through the extremes of the scores); ``valid`` [..., n]
    bool; ``good`` [...] the rows whose valid scores are finite and whose strength is positive and
    finite; the valid scores' max and min (without gradient: they steer the solvers) and their
    number. With ``temperature=`` a score of -inf (``largest``; +inf
    otherwise) is never selected: it takes no part, like a ``where=False`` item. Rows that are
    not ``good`` get temperature 1 and extremes 0; callers zero their scores too (the double
    ``where``), so that nothing downstream, derivatives included, meets a NaN, and put NaN in
    their outputs.
    """
    if kind == "temperature":
        keep = x != (-jnp.inf if largest else jnp.inf)
        valid = keep if valid is None else valid & keep
    x_max_d, x_min_d, n_valid = _extremes(x, valid)  # NaN propagates through max and min
    x_max, x_min, n_valid = lax.stop_gradient((x_max_d, x_min_d, n_valid))
    some = n_valid > 0
    good = ~some | (jnp.isfinite(x_max) & jnp.isfinite(x_min))
    fine = good & some
    x_max, x_min = jnp.where(fine, x_max, 0), jnp.where(fine, x_min, 0)
    if kind == "temperature":
        temp = value
    else:  # the cost is convex in x: its max over the valid items is at x_max or x_min
        hi_x, lo_x = jnp.where(fine, x_max_d, 0), jnp.where(fine, x_min_d, 0)
        m = jnp.maximum(jnp.maximum((hi_x - lo) ** 2, (hi_x - hi) ** 2),
                        jnp.maximum((lo_x - lo) ** 2, (lo_x - hi) ** 2))  # fmt: skip
        m = jnp.where(some & (m > 0), m, 1)
        temp = value * m / 2
    good = good & (temp > 0) & jnp.isfinite(temp)
    temp = jnp.where(good, temp, 1)
    valid = jnp.ones(x.shape, bool) if valid is None else valid
    return temp, valid, good, x_max, x_min, n_valid


def mask_rows(x, k, strength, valid, *, kind, largest, solver, max_iter: int, tol: float):
    """Two-anchor top-k mask: (mask, threshold, iterations, residual, ok) for rows [..., n]."""
    everyone = valid is None and kind == "epsilon"  # every item takes part (no [..., n] mask)
    temp, valid, good, x_max, x_min, n_valid = prepass(kind, strength, x, valid, 0.0, 1.0, largest)
    dtype = x.dtype
    n = x.shape[-1]
    n_valid = jnp.where(good, n_valid, 0)  # rows that are not good: no valid item, k = 0
    k = jnp.clip(k.astype(dtype), 0, n_valid)  # NaN stays NaN
    valid = valid & good[..., None]
    xs = jnp.where(valid, x, 0)
    if solver == "newton":
        scale = (1 if largest else -1) / temp
        # All valid: the root find takes x as it is (no [..., n] operand to build; rows that are
        # not good have k = 0 and are not searched) and a [..., 1] validity.
        vf = jnp.ones(x.shape[:-1] + (1,), dtype) if everyone else valid.astype(dtype)
        solve_x = x if everyone else xs
        mask, thr, it, res, ok = topk_mask_rows(
            xs, scale, k, vf, n_valid, (x_max, x_min), solve_x=solve_x, max_iter=max_iter, tol=tol
        )
    else:
        vf = valid.astype(dtype)
        mask, thr, it, res, ok = _mask_by_sinkhorn(xs, vf, k, temp, largest, max_iter, tol / n)
    mask = jnp.where(good[..., None], mask, jnp.nan)
    thr = jnp.where(good, thr, jnp.nan)
    return mask, thr, it, res, ok & good & ~jnp.isnan(k)


def _mask_by_sinkhorn(x, vf, k, temp, largest: bool, max_iter: int, tol: float):
    """Two-anchor mask by Sinkhorn on the cost (x - y)^2, y in {0, 1}, with eps = 2 T."""
    dtype = x.dtype
    n_valid = vf.sum(axis=-1)
    tiny = jnp.finfo(dtype).eps
    sel = jnp.clip(k / n_valid, tiny, 1 - tiny)
    anchors = jnp.asarray([0.0, 1.0], dtype)
    cost = (x[..., None] - anchors.reshape((1,) * x.ndim + (-1,))) ** 2
    b = jnp.stack([1 - sel, sel] if largest else [sel, 1 - sel], axis=-1)
    a = vf / n_valid[..., None]
    eps = 2 * temp
    f, g, it, err = sinkhorn_implicit(cost, a, b, eps, max_iter, tol)
    plan = plan_of(f, g, cost, eps)
    mask = n_valid[..., None] * plan[..., 1 if largest else 0]
    mask = jnp.where(k[..., None] <= 0, 0, jnp.where(k[..., None] >= n_valid[..., None], vf, mask))
    # A = sigmoid(+-(x - 1/2)/T + (g1 - g0)/(2T)) = sigmoid(+-(x - thr)/T).
    shift = (g[..., 1] - g[..., 0]) / 2
    thr = 0.5 - shift if largest else 0.5 + shift
    res = jnp.abs(mask.sum(axis=-1) - k)
    return mask, thr, it, res, err <= tol


def sorted_by_newton(xs, anchors, a, b, eps, vf, n_valid, *, k: int, largest: bool, max_iter, tol):
    """Semi-dual Newton on the k+1 anchors: (values, assignment, iterations, error)."""
    del n_valid  # carried by vf
    sign = 1 if largest else -1  # anchors decreasing: negate x and y for the smallest
    pi, sums, it, err = newton_sums(sign * xs, sign * anchors, a, b, eps, vf * xs, max_iter, tol)
    assign = vf[..., None, :] * pi[..., :k, :]  # n_valid P^T on the first k anchors
    values = sums[..., :k]  # its own tangent: no [..., k, n] pass unless assign is used
    return values, assign, it, err


def _sorted_by_sinkhorn(
    xs, anchors, a, b, eps, vf, n_valid, *, k: int, largest, max_iter, tol, run
):
    """Sinkhorn (``run``: implicit or unrolled) on the k+1 anchors, as `sorted_by_newton`."""
    del vf, largest  # the cost needs no sign: the anchors are in the order of the slots
    cost = (xs[..., None] - anchors.reshape((1,) * xs.ndim + (-1,))) ** 2
    f, g, it, err = run(cost, a, b, eps, max_iter, tol)
    plan = plan_of(f, g, cost, eps)
    assign = jnp.swapaxes(n_valid[..., None, None] * plan[..., :k], -1, -2)
    values = jnp.einsum("...kn,...n->...k", assign, xs)
    return values, assign, it, err


# Module-level partials: one object each, so the jit cache sees the same static argument.
sorted_by_sinkhorn = functools.partial(_sorted_by_sinkhorn, run=sinkhorn_implicit)
sorted_by_unrolled_sinkhorn = functools.partial(_sorted_by_sinkhorn, run=sinkhorn_unrolled)


def sorted_rows(x, strength, valid, *, kind, k: int, largest: bool, max_iter, tol, solve):
    """Sorted top-k on k+1 anchors, solved by ``solve`` (one of the ``sorted_by_*`` above).

    Returns values [..., k], assignment [..., k, n], iterations, residual (mask units) and ok.
    """
    dtype = x.dtype
    n = x.shape[-1]
    steps = sorted_anchors(k, n, largest)
    lo, hi = float(steps.min(initial=0)), float(steps.max(initial=0))
    temp, valid, good, _, _, n_valid = prepass(kind, strength, x, valid, lo, hi, largest)
    batch = x.shape[:-1]
    vf = valid.astype(dtype)
    if k == 0:
        zeros = jnp.zeros(batch, dtype)
        return (
            jnp.zeros(batch + (0,), dtype),
            jnp.zeros(batch + (0, n), dtype),
            jnp.zeros(batch, jnp.int32),
            zeros,
            good,
        )
    m = len(steps)
    anchors = jnp.asarray(steps, dtype)
    xs = jnp.where(valid & good[..., None], x, 0)
    rest = jnp.maximum((n_valid - k) / n_valid, jnp.finfo(dtype).eps)
    b = jnp.broadcast_to((1 / n_valid)[..., None], batch + (m,))
    if m > k:
        b = jnp.concatenate([b[..., :k], rest[..., None]], axis=-1)
    eps = 2 * temp
    a = vf / n_valid[..., None]
    values, assign, it, err = solve(
        xs, anchors, a, b, eps, vf, n_valid, k=k, largest=largest, max_iter=max_iter, tol=tol / n
    )
    res = n_valid * err
    values = jnp.where(good[..., None], values, jnp.nan)
    assign = jnp.where(good[..., None, None], assign, jnp.nan)
    return values, assign, it, res, (res <= tol) & good & (k <= n_valid)
