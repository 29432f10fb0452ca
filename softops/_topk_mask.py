r"""Two-anchor entropic top-k: a scalar root find per row and an O(n) derivative (private).

With two anchors, eliminating the row potentials of the entropic OT dual leaves one scalar per
row: :math:`A_i = \sigma(s_i + \tau)` with :math:`\tau` fixed by :math:`\sum_i A_i = k`. The map
:math:`F(\tau) = \sum_i \sigma(s_i + \tau) - k` is increasing, and with :math:`q = k/n`,

.. math::
    F(\operatorname{logit} q - \max_i s_i) \le 0 \le F(\operatorname{logit} q - \min_i s_i),

so a safeguarded Newton iteration on that bracket (bisect when the Newton step leaves it) finds
:math:`\tau`. Reference semantics for one row::

    lo, hi = logit(k / n) - max(s), logit(k / n) - min(s)
    tau = logit(k / n) - mean(s)  # or log(k) - logsumexp(s) when k is tiny
    while abs(sum(sigmoid(s + tau)) - k) > tol:
        F, D = sum(sigmoid(s + tau)) - k, sum(sigmoid'(s + tau))
        lo, hi = (tau, hi) if F < 0 else (lo, tau)
        tau = tau - F / D if lo < tau - F / D < hi else (lo + hi) / 2

The JAX loop runs all rows of a batch at once (per-row state vectors, finished rows frozen, per
batch shard) and also stops when the bracket has shrunk to a few ulps (the best the dtype can do)
or at ``max_iter``. Derivative: :math:`dA = \sigma' \odot (ds + d\tau)` with
:math:`d\tau = (dk - \langle \sigma', ds\rangle)/\sum \sigma'`,
:math:`\sigma' = \sigma(z)\sigma(-z)` (both factors computed directly: no cancellation).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from softops._sharding import batch_local, like_vma


def _logit(q):
    return jnp.log(q) - jnp.log1p(-q)


def _sums(s, tau, valid):
    """F + k = sum(A) and D = sum(A (1 - A)) in one fused pass (one exp per item).

    ``A (1 - A)`` is ``e / (1 + e)^2`` with ``e = exp(-|z|)``: no cancellation when A is near 1.
    """
    z = s + tau[..., None]
    e = jnp.exp(-jnp.abs(z))
    r = 1 / (1 + e)
    er = e * r
    both = jnp.stack([jnp.where(z >= 0, r, er) * valid, er * r * valid], axis=-2).sum(axis=-1)
    return both[..., 0], both[..., 1]


def _maxmin(s, valid):
    """Row max and min over the valid items in one pass."""
    big = jnp.finfo(s.dtype).max
    lo = jnp.where(valid > 0, s, -big)
    hi = jnp.where(valid > 0, s, big)
    return lax.reduce(
        (lo, hi),
        (jnp.asarray(-big, s.dtype), jnp.asarray(big, s.dtype)),
        lambda p, q: (jnp.maximum(p[0], q[0]), jnp.minimum(p[1], q[1])),
        (s.ndim - 1,),
    )


def _start(s, k, valid, n_valid):
    """(tau0, lo, hi) for rows with ``k <= n_valid / 2``, with lo <= root <= hi.

    One max/min pass and one exp pass. ``tau_l = log k - LSE(s)`` is a lower bound (sigma <= exp).
    Upper bound: with ``z_max = s_max + tau_l < 0``, every ``sigma(s_i + tau)`` is at least
    ``exp(s_i + tau) / (1 + exp(z_max + tau - tau_l))``, which sums to k at
    ``tau_l - log1p(-exp(z_max))``; always ``logit(k / n) - min(s)``. Start: with
    ``rho = sum_{i != top} exp(s_i - s_max)``, the root of ``sigma(y) + rho e^y = k``
    (``y = s_max + tau``, a quadratic in ``e^y``): the top item exact and the others as
    exponential tails, exact for small k at high temperature and for k = 1 at any temperature
    (then about the midpoint of the top two scores).
    """
    dtype = s.dtype
    eps = jnp.finfo(dtype).eps
    s_max, s_min = _maxmin(s, valid)
    t0 = _logit(k / n_valid)
    shifted = jnp.where(valid > 0, s - s_max[..., None], -jnp.inf)
    total = jnp.exp(shifted).sum(axis=-1)  # >= 1: the top item counts 1
    log_k = jnp.log(k)
    z_max = log_k - jnp.log(total)
    tau_l = z_max - s_max
    # Rounding: total carries a relative error of about n eps, so the bounds get a margin and the
    # tail bound is used only when 1 - exp(z_max) is well above that error.
    margin = 16 * eps * (jnp.abs(s_max) + jnp.abs(log_k) + 1) + 4 * n_valid * eps
    lo = jnp.maximum(t0 - s_max, tau_l - margin)
    gap = -jnp.expm1(z_max)
    tail_hi = tau_l - jnp.log(jnp.where(gap > 0, gap, 1)) + margin
    hi = t0 - s_min
    hi = jnp.where(gap > 1024 * n_valid * eps, jnp.minimum(hi, tail_hi), hi)
    rho = jnp.maximum(total - 1, eps * eps)
    b = 1 + rho - k
    disc = jnp.sqrt(b * b + 4 * rho * k)
    w = jnp.where(b > 0, 2 * k / (b + disc), (disc - b) / (2 * rho))
    tau0 = jnp.log(w) - s_max
    return jnp.clip(tau0, lo, hi), lo, hi


def _newton(tau, f_val, d_val):
    """A Newton-type step near the root, from F and D = F' (exact for exponential tails).

    With the items below the root in their upper tails (sum R e^t) and those above it in their
    lower tails (sum T e^-t), ``R + T = D`` and ``R - T = F``, and ``R e^t = T e^-t`` at
    ``t = -atanh(F / D)`` (Newton to first order). Only for ``|F| < D``.
    """
    ratio = f_val / jnp.where(d_val > 0, d_val, 1)
    return tau - jnp.arctanh(jnp.where(jnp.abs(ratio) < 1, ratio, 0))


@batch_local(item_ndims=(1, 0, 1), out_item_ndims=(0, 0, 0, 0), name="x")
def _root_find(s, k, valid, *, max_iter: int, tol: float):
    """(tau, iterations, |F|, ok) per row for rows ``s`` [..., n] with 0 < k < n_valid.

    ``ok``: the residual is within ``tol`` or the bracket has shrunk to a few ulps (the best the
    dtype can do); False only when ``max_iter`` stopped the search (or the row is NaN). Rows with
    ``k > n_valid / 2`` are solved as ``sum sigma(-s - tau) = n_valid - k`` (the same equation),
    so the sum S lives in its upper tail. Steps: near the root (``|F| < D``) :func:`_newton`;
    further away ``G = log(S / k)`` (close to linear in tau when the items near the root are in
    their exponential tails), by regula falsi with the Illinois rule once both ends of the bracket
    have been evaluated and by Newton on G before; bisection when a step leaves the bracket.
    """
    dtype = s.dtype
    n_valid = valid.sum(axis=-1)
    small = k <= 0.5 * n_valid
    s = jnp.where(small[..., None], s, -s)
    k = jnp.where(small, k, n_valid - k)
    log_k = jnp.log(k)
    tiny = jnp.finfo(dtype).tiny
    tau, lo, hi = _start(s, k, valid, n_valid)
    ulp = jnp.asarray(8 * jnp.finfo(dtype).eps, dtype)

    def flat(lo, hi, tau):
        return (hi - lo) <= ulp * jnp.maximum(jnp.abs(tau), 1)

    def done_of(f_val, lo, hi, tau):
        return (jnp.abs(f_val) <= tol) | flat(lo, hi, tau) | ~jnp.isfinite(f_val)

    s_val, d_val = _sums(s, tau, valid)
    f_val = s_val - k

    def cond(state):
        it, _, _, _, _, _, _, _, _, done = state
        return jnp.any(~done & (it < max_iter))

    def body(state):
        it, tau, lo, hi, g_lo, g_hi, side, f_val, d_val, done = state
        s_val = f_val + k
        g = jnp.log(jnp.maximum(s_val, tiny)) - log_k
        below, above = f_val < 0, f_val > 0
        lo_n = jnp.where(below, tau, lo)
        hi_n = jnp.where(above, tau, hi)
        # Illinois: an end kept twice in a row has its G halved.
        g_lo_n = jnp.where(below, g, jnp.where(side > 0, 0.5 * g_lo, g_lo))
        g_hi_n = jnp.where(above, g, jnp.where(side < 0, 0.5 * g_hi, g_hi))
        side_n = jnp.where(below, -1, jnp.where(above, 1, 0)).astype(side.dtype)
        known = jnp.isfinite(g_lo_n) & jnp.isfinite(g_hi_n) & (g_hi_n > g_lo_n)
        falsi = lo_n - g_lo_n * (hi_n - lo_n) / jnp.where(known, g_hi_n - g_lo_n, 1)
        log_newton = tau - g * s_val / jnp.where(d_val > 0, d_val, 1)
        near = jnp.abs(f_val) < d_val
        step = jnp.where(near, _newton(tau, f_val, d_val), jnp.where(known, falsi, log_newton))
        ok = (d_val > 0) & (step > lo_n) & (step < hi_n)
        tau_n = jnp.where(ok, step, 0.5 * (lo_n + hi_n))
        s_n, d_n = _sums(s, tau_n, valid)
        keep = done | (it >= max_iter)

        def pick(old, new):
            return jnp.where(keep, old, new)

        return (
            it + (~keep).astype(jnp.int32),
            pick(tau, tau_n),
            pick(lo, lo_n),
            pick(hi, hi_n),
            pick(g_lo, g_lo_n),
            pick(g_hi, g_hi_n),
            pick(side, side_n),
            pick(f_val, s_n - k),
            pick(d_val, d_n),
            done_of(pick(f_val, s_n - k), pick(lo, lo_n), pick(hi, hi_n), pick(tau, tau_n)),
        )

    done0 = done_of(f_val, lo, hi, tau)
    it0 = jnp.zeros(tau.shape, jnp.int32)
    inf = jnp.full(tau.shape, jnp.inf, dtype)
    state = (it0, tau, lo, hi, -inf, inf, it0, f_val, d_val, done0)
    state = like_vma(state, s)
    it, tau, lo, hi, _, _, _, f_val, _, _ = lax.while_loop(cond, body, state)
    ok = (jnp.abs(f_val) <= tol) | flat(lo, hi, tau)
    return jnp.where(small, tau, -tau), it, jnp.abs(f_val), ok


def _interior(k, n_valid):
    return (k > 0) & (k < n_valid)


def topk_mask_rows(s, k, valid, max_iter: int, tol: float):
    """A = sigmoid(s + tau) with sum(A) = k per row; ``s``, ``valid`` [..., n], ``k`` [...].

    ``valid`` is 1 for entries that take part and 0 for masked ones (no tangent). Returns
    (A, tau, iterations, residual |sum(A) - k|, ok). The root find runs on values without
    gradient; derivatives come from :func:`_mask_at` (implicit, closed form).
    """
    n_valid = valid.sum(axis=-1)
    inner = _interior(k, n_valid)
    k_safe = jnp.where(inner, k, 0.5 * n_valid)
    sg = lax.stop_gradient
    tau, it, res, ok = _root_find(sg(s), sg(k_safe), valid, max_iter=max_iter, tol=tol)
    a, tau = _mask_at(s, k, valid, tau)
    res = jnp.where(inner, res, jnp.abs(a.sum(axis=-1) - k))
    ok = jnp.where(inner, ok, jnp.isfinite(k))
    return a, tau, it, res, ok


@jax.custom_jvp
def _mask_at(s, k, valid, tau):
    """The mask at the root ``tau`` (found without gradient) and tau, with the implicit tangent."""
    inner = _interior(k, valid.sum(axis=-1))
    a = jax.nn.sigmoid(s + tau[..., None]) * valid
    a = jnp.where(inner[..., None], a, jnp.where((k > 0)[..., None], valid, 0))
    return a, tau


@_mask_at.defjvp
def _mask_at_jvp(primals, tangents):
    s, k, valid, tau = primals
    ds, dk = tangents[0], tangents[1]
    a, tau = _mask_at(s, k, valid, tau)
    # sigma' = A (1 - A) from the mask itself (no second exp pass); it is 0 on masked items and
    # on rows with k = 0 or k = n_valid, where A is 0 or 1.
    dsig = a * (1 - a)
    total = dsig.sum(axis=-1)
    pos = total > 0
    dtau = jnp.where(pos, (dk - (dsig * ds).sum(axis=-1)) / jnp.where(pos, total, 1), 0)
    return (a, tau), (dsig * (ds + dtau[..., None]), dtau)
