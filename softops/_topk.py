"""Row kernels of the optimal-transport top-k operators (private).

Rows ``x`` [..., n] with validity ``valid`` (bool or None) and a per-row temperature ``temp`` [...]
in the units of the scores. The paper's ``epsilon`` is converted to that temperature by
:func:`temperature` (``T = epsilon * M / 2`` with ``M`` the largest cost, held constant when
differentiating). Every kernel returns per-row diagnostics and an ``ok`` flag; the public layer
turns rows that are not ``ok`` into NaN.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from softops._ot_newton import newton_sums
from softops._sinkhorn import plan_of, sinkhorn_implicit, sinkhorn_unrolled
from softops._topk_mask import topk_mask_rows


def sorted_anchors(k: int, n: int, largest: bool) -> np.ndarray:
    """Anchors of the sorted operator: k, k-1, ..., 0 (largest) or 0, ..., k.

    There is no rest anchor (the last one) when k = n.
    """
    m = k + 1 if k < n else k
    return np.arange(k, k - m, -1) if largest else np.arange(m)


def temperature(kind: str, value, x, valid, lo: float, hi: float):
    """The temperature T [...] in score units.

    ``epsilon``: T = epsilon * M / 2, M = max (x - y)^2 over the valid items and anchors y in
    [lo, hi] (no gradient through M; NaN or inf scores give NaN).
    """
    if kind == "temperature":
        return value
    cost = jnp.maximum((x - lo) ** 2, (x - hi) ** 2)
    if valid is not None:
        cost = jnp.where(valid, cost, 0)
    bad = ~jnp.isfinite(cost)
    m = jnp.max(jnp.where(bad, 0, cost), axis=-1, initial=0)  # cost >= 0; no items: 0
    m = jnp.where(jnp.any(bad, axis=-1), jnp.nan, jnp.where(m > 0, m, 1))
    return value * lax.stop_gradient(m) / 2


def _good_rows(x, valid, temp):
    """Rows whose strength is positive and finite and whose valid scores are not NaN."""
    nan = jnp.isnan(x) if valid is None else jnp.isnan(x) & valid
    return (temp > 0) & jnp.isfinite(temp) & ~jnp.any(nan, axis=-1)


def mask_rows(x, k, strength, valid, *, kind, largest, solver, max_iter: int, tol: float):
    """Two-anchor top-k mask: (mask, threshold, iterations, residual, ok) for rows [..., n]."""
    temp = temperature(kind, strength, x, valid, 0.0, 1.0)
    dtype = x.dtype
    n = x.shape[-1]
    vf = jnp.ones_like(x) if valid is None else valid.astype(dtype)
    n_valid = vf.sum(axis=-1)
    k = jnp.clip(k.astype(dtype), 0, n_valid)  # NaN stays NaN
    sign = 1 if largest else -1
    xs = jnp.where(vf > 0, x, 0)
    if solver == "newton":
        s = sign * xs / temp[..., None]
        mask, tau, it, res, ok = topk_mask_rows(s, k, vf, max_iter, tol)
        thr = -sign * tau * temp
    else:
        mask, thr, it, res, ok = _mask_by_sinkhorn(xs, vf, k, temp, largest, max_iter, tol / n)
    ok = ok & _good_rows(x, valid, temp) & ~jnp.isnan(k)
    return mask, thr, it, res, ok


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


def sorted_rows(x, strength, valid, *, kind, k: int, largest: bool, max_iter, tol, solver):
    """Sorted top-k on k+1 anchors; ``solver``: "newton", "sinkhorn" or "unrolled" (Sinkhorn).

    Returns values [..., k], assignment [..., k, n], iterations, residual (mask units) and ok.
    """
    dtype = x.dtype
    n = x.shape[-1]
    steps = sorted_anchors(k, n, largest)
    lo, hi = float(steps.min(initial=0)), float(steps.max(initial=0))
    temp = temperature(kind, strength, x, valid, lo, hi)
    batch = x.shape[:-1]
    vf = jnp.ones_like(x) if valid is None else valid.astype(dtype)
    if k == 0:
        zeros = jnp.zeros(batch, dtype)
        ok = _good_rows(x, valid, temp)
        return (
            jnp.zeros(batch + (0,), dtype),
            jnp.zeros(batch + (0, n), dtype),
            jnp.zeros(batch, jnp.int32),
            zeros,
            ok,
        )
    m = len(steps)
    anchors = jnp.asarray(steps, dtype)
    xs = jnp.where(vf > 0, x, 0)
    n_valid = vf.sum(axis=-1)
    rest = jnp.maximum((n_valid - k) / n_valid, jnp.finfo(dtype).eps)
    b = jnp.broadcast_to((1 / n_valid)[..., None], batch + (m,))
    if m > k:
        b = jnp.concatenate([b[..., :k], rest[..., None]], axis=-1)
    eps = 2 * temp
    a = vf / n_valid[..., None]
    if solver == "newton":  # anchors decreasing: negate x and y for the smallest
        sign = 1 if largest else -1
        y = sign * anchors
        pi, sums, it, err = newton_sums(sign * xs, y, a, b, eps, vf * xs, max_iter, tol / n)
        assign = vf[..., None, :] * pi[..., :k, :]  # n_valid P^T on the first k anchors
        values = sums[..., :k]  # its own tangent: no [..., k, n] pass unless assign is used
    else:
        cost = (xs[..., None] - anchors.reshape((1,) * xs.ndim + (-1,))) ** 2
        run = sinkhorn_implicit if solver == "sinkhorn" else sinkhorn_unrolled
        f, g, it, err = run(cost, a, b, eps, max_iter, tol / n)
        plan = plan_of(f, g, cost, eps)
        assign = jnp.swapaxes(n_valid[..., None, None] * plan[..., :k], -1, -2)
        values = jnp.einsum("...kn,...n->...k", assign, xs)
    res = n_valid * err
    ok = (res <= tol) & _good_rows(x, valid, temp) & (k <= n_valid)
    return values, assign, it, res, ok
