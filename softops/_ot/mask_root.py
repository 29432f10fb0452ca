r"""Two-anchor entropic top-k: a scalar root find per row and an O(n) derivative (private).

With two anchors, eliminating the row potentials of the entropic OT dual leaves one scalar per
row: $A_i = \sigma(s_i + \tau)$ with $\tau$ fixed by $\sum_i A_i = k$. The map
$F(\tau) = \sum_i \sigma(s_i + \tau) - k$ is increasing, and with $q = k/n$,

$$
F(\operatorname{logit} q - \max_i s_i) \le 0 \le F(\operatorname{logit} q - \min_i s_i),
$$

so a safeguarded Newton iteration on that bracket (bisect when the Newton step leaves it) finds
$\tau$. Reference semantics for one row:

    lo, hi = logit(k / n) - max(s), logit(k / n) - min(s)
    tau = logit(k / n) - mean(s)  # or log(k) - logsumexp(s) when k is tiny
    while abs(sum(sigmoid(s + tau)) - k) > tol:
        F, D = sum(sigmoid(s + tau)) - k, sum(sigmoid'(s + tau))
        lo, hi = (tau, hi) if F < 0 else (lo, tau)
        tau = tau - F / D if lo < tau - F / D < hi else (lo + hi) / 2

The JAX loop runs all rows of a batch at once (per-row state vectors, finished rows frozen, per
batch shard) and also stops when the bracket has shrunk to a few ulps (the best the dtype can do)
or at ``max_iter``. Derivative: $dA = \sigma' \odot (ds + d\tau)$ with
$d\tau = (dk - \langle \sigma', ds\rangle)/\sum \sigma'$,
$\sigma' = \sigma(z)\sigma(-z)$ (both factors computed directly: no cancellation).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from softops._sharding import batch_local, like_vma


def _logit(q):
    return jnp.log(q) - jnp.log1p(-q)


def _horner(coefs, x):
    out = coefs[0]
    for c in coefs[1:]:
        out = out * x + c
    return out


_NDTRI_A = (-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269,
            -30.66479806614716, 2.506628277459239)  # fmt: skip
_NDTRI_B = (-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972,
            -13.28068155288572, 1.0)  # fmt: skip
_NDTRI_C = (-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734,
            4.374664141464968, 2.938163982698783)  # fmt: skip
_NDTRI_D = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416, 1.0)


def ndtri(p):
    """Standard normal quantile (Acklam's rational approximation, relative error ~1e-9).

    Only steers the search (never a result); scalar coefficients keep the loop free of array
    constants (``custom_partitioning`` takes none). NaN outside (0, 1).
    """
    q = p - 0.5
    r = q * q
    central = q * _horner(_NDTRI_A, r) / _horner(_NDTRI_B, r)
    t = jnp.sqrt(-2 * jnp.log(jnp.minimum(p, 1 - p)))
    tail = _horner(_NDTRI_C, t) / _horner(_NDTRI_D, t)
    tail = jnp.where(p < 0.5, tail, -tail)
    return jnp.where(jnp.abs(q) <= 0.5 - 0.02425, central, tail)


def _sums(x, c, ref, tau, valid):
    """F + k = sum(A) and D = sum(A (1 - A)) at ``s = c (x - ref)`` in one fused pass.

    One exp per item. ``x - ref`` first: exact for the items near the threshold when ``ref`` is
    (a float32 ``c x`` of a large score would cost the logits their low bits).
    ``A (1 - A)`` is ``e / (1 + e)^2`` with ``e = exp(-|z|)``: no cancellation when A is near 1.
    ``e`` stops at the smallest normal number (`_floor`): each item then counts at most
    that much too much, and no subnormal number (slow on CPUs) is ever formed.
    """
    z = (x - ref[..., None]) * c[..., None] + tau[..., None]
    e = jnp.exp(jnp.maximum(-jnp.abs(z), _floor(z.dtype)))
    r = 1 / (1 + e)
    er = e * r
    both = jnp.stack([jnp.where(z >= 0, r, er) * valid, er * r * valid], axis=-2).sum(axis=-1)
    return both[..., 0], both[..., 1]


def _floor(dtype) -> float:
    """Log of the smallest normal number, rounded up: exp of anything above it is normal."""
    return math.log(float(jnp.finfo(dtype).tiny)) + 1


def _top_tail_root(rho, k):
    """The y of ``sigma(y) + rho e^y = k``: the top item exact, the others as exponential tails."""
    b = 1 + rho - k
    disc = jnp.sqrt(b * b + 4 * rho * k)
    return jnp.log(jnp.where(b > 0, 2 * k / (b + disc), (disc - b) / (2 * rho)))


def _start(x, c, k, valid, n_valid, x_top, s_max, s_min, tol):
    """(tau0, lo, hi, points, certified, bound) for rows with ``k <= n_valid / 2``.

    ``lo <= root <= hi``. One exp pass (the extremes of ``s = c x`` come from the caller) for
    ``rho_j = sum_{i != top} exp(j (s_i - s_max))``, j = 1, 2. ``tau_l = log k - LSE(s)`` is a
    lower bound (sigma <= exp). Upper bound: with ``z_max = s_max + tau_l < 0``, every
    ``sigma(s_i + tau)`` is at least ``exp(s_i + tau) / (1 + exp(z_max + tau - tau_l))``, which
    sums to k at ``tau_l - log1p(-exp(z_max))``; always ``logit(k / n) - min(s)``.

    Start: the root of ``g(y) = sigma(y) + rho_1 e^y - rho_2 e^2y = k`` (``y = s_max + tau``):
    the top item exact and the others by two terms of ``sigma(z) = e^z - e^2z + e^3z - ...``
    (the root of the first-order model, a quadratic in ``e^y``, then two Newton steps). For
    ``y < 0`` the series alternates with decreasing terms, so ``|F| <= |g(y)| + rho_2 e^3y``
    (every ``z_i <= y``): when that bound is within ``tol / 2`` the start is ``certified`` (a
    root to the tolerance, as sure as an evaluation of F) and needs no pass of its own; this is
    the usual case at high temperature. Otherwise, for k = 1 the first-order root is about the
    midpoint of the top two scores.
    """
    dtype = x.dtype
    eps = jnp.finfo(dtype).eps
    t0 = _logit(k / n_valid)
    # (x - x_top) c, not c x - s_max: exactly 0 for the top item however XLA fuses it (a fused
    # multiply-add would leave the rounding error of c x_top, which can dwarf the other terms)
    # (no subnormal numbers: slow on CPUs; exp stops at `_floor`, squares below the
    # smallest normal number are dropped; each adds at most that much to the totals)
    shifted = jnp.maximum((x - x_top[..., None]) * c[..., None], _floor(dtype))
    u = jnp.exp(jnp.where(valid > 0, shifted, -jnp.inf))
    tiny = math.sqrt(float(jnp.finfo(dtype).tiny))
    total = u.sum(axis=-1)  # >= 1: the top item counts 1
    total2 = jnp.where(u > tiny, u * u, 0).sum(axis=-1)
    log_k = jnp.log(k)
    z_max = log_k - jnp.log(total)
    tau_l = z_max - s_max
    # Rounding: total carries a relative error of about n eps, so the bounds get a margin and the
    # tail bound is used only when 1 - exp(z_max) is well above that error.
    margin = 16 * eps * (jnp.abs(s_max) + jnp.abs(log_k) + 1) + 4 * n_valid * eps
    lo = jnp.maximum(t0 - s_max, tau_l - margin)
    gap = -jnp.expm1(z_max)
    tail_hi = tau_l - jnp.log(jnp.where(gap > 0, gap, 1)) + margin
    hi = t0 - s_min + margin
    hi = jnp.where(gap > 1024 * n_valid * eps, jnp.minimum(hi, tail_hi), hi)
    rho1, rho2 = jnp.maximum(total - 1, eps * eps), jnp.maximum(total2 - 1, 0)
    y = _top_tail_root(rho1, k)

    def model(y):
        e = jnp.exp(y)
        sig = jax.nn.sigmoid(y)
        return sig + rho1 * e - rho2 * e * e - k, sig * (1 - sig) + rho1 * e - 2 * rho2 * e * e

    y2 = y
    for _ in range(2):
        g, dg = model(y2)
        y2 = y2 - g / jnp.where(dg > 0, dg, 1)
    g = model(y2)[0]
    bound = jnp.abs(g) + rho2 * jnp.exp(3 * y2) + 4 * eps * (k + 1)
    tau2 = y2 - s_max
    fine = jnp.isfinite(bound) & (y2 < 0) & (tau2 >= lo) & (tau2 <= hi)
    certified = fine & (bound <= 0.5 * tol)
    y = jnp.where(certified, y2, y)
    # When that model puts the top item above the root, the items near the root are not in their
    # tails (low temperature, k > 1): start from H = ndtri(S / n) linear in tau instead, through
    # H(-s_max) = ndtri(1/2n) and H(-s_min) = ndtri(1 - 1/2n) (exact for Gaussian scores at
    # zero temperature); these two points also seed the regula falsi of the loop.
    h_k = ndtri(k / n_valid)
    h_top, h_bottom = ndtri(0.5 / n_valid), -ndtri(0.5 / n_valid)
    frac = (h_k - h_top) / (h_bottom - h_top)
    tau_h = -s_max + (s_max - s_min) * frac
    tau0 = jnp.where((y < 0) | (k <= 1), y - s_max, tau_h)
    points = (-s_max, h_top - h_k, -s_min, h_bottom - h_k)
    return jnp.clip(tau0, lo, hi), lo, hi, points, certified, bound


def _newton(tau, f_val, d_val):
    """A Newton-type step near the root, from F and D = F' (exact for exponential tails).

    With the items below the root in their upper tails (sum R e^t) and those above it in their
    lower tails (sum T e^-t), ``R + T = D`` and ``R - T = F``, and ``R e^t = T e^-t`` at
    ``t = -atanh(F / D)`` (Newton to first order). Only for ``|F| < D``.
    """
    ratio = f_val / jnp.where(d_val > 0, d_val, 1)
    return tau - jnp.arctanh(jnp.where(jnp.abs(ratio) < 1, ratio, 0))


class _Search(NamedTuple):
    """The loop state of `_root_find`, one entry per row (offsets in logit units)."""

    it: jax.Array  # steps after the first evaluation
    ref: jax.Array  # the reference score of the offsets
    moved: jax.Array  # re-centred already (at most once)
    tau: jax.Array  # the offset: A = sigmoid(c (x - ref) + tau)
    lo: jax.Array  # the bracket [lo, hi] of the root
    hi: jax.Array
    t_a: jax.Array  # regula falsi: the last point below the root and its H
    h_a: jax.Array
    t_b: jax.Array  # ... and above the root
    h_b: jax.Array
    side: jax.Array  # -1 / 1: the last evaluation fell below / above (Illinois), 0: none yet
    f_val: jax.Array  # F = S - k at tau
    d_val: jax.Array  # D = dS/dtau at tau
    fresh: jax.Array  # F and D were evaluated at tau (not yet at the start)
    done: jax.Array


@batch_local(item_ndims=(1, 0, 0, 1, 0, 0, 0), out_item_ndims=(0, 0, 0, 0, 0), name="x")
def _root_find(x, c, k, valid, n_valid, x_max, x_min, *, max_iter: int, tol: float):
    """(ref, tau, iterations, |F|, ok) per row ``s = c x`` [..., n] with 0 < k < n_valid.

    The root is ``A = sigmoid(c (x - ref) + tau)``: the threshold is carried as a reference
    score ``ref`` and an offset ``tau`` in logit units (see below). ``valid`` [..., n] or
    [..., 1] (all valid); ``x_max``, ``x_min``: the extremes of ``x`` over the valid items. F is
    evaluated inside the loop (a certified start needs no evaluation; ``iterations`` counts the
    steps after the first evaluation), which stops at ``|F| <= tol / 2`` (a margin for the
    rounding of F itself) or at the dtype's resolution. ``ok``: ``|F| <= tol``; False when
    ``max_iter`` stopped the search, when the dtype cannot resolve the root to ``tol`` (a
    ``tol`` below the rounding of the n-term sum) or when the row is NaN. Rows with
    ``k > n_valid / 2`` are solved as ``sum sigma(-s - tau) = n_valid - k`` (the same equation),
    so the sum S lives in its upper tail. Steps: near the root (``|F| < D``) `_newton`;
    further away ``G = log(S / k)`` (close to linear in tau when the items near the root are in
    their exponential tails), by regula falsi with the Illinois rule once both ends of the
    bracket have been evaluated and by Newton on G before; bisection when a step leaves the
    bracket.

    Offsets: the search starts with ``ref`` the top score. At a small temperature ``|tau|`` is
    large and the bracket can shrink to a few of its ulps before ``|F| <= tol`` (float32 rows
    with ties at the threshold: one ulp of tau moves a whole tied group). Such a row is
    re-centred once: ``ref`` becomes the threshold found, ``tau`` 0 and the bracket the global
    one in the new coordinates, where ``x - ref`` is exact for the items near the threshold and
    tau is resolved to the dtype's relative precision.
    """
    dtype = x.dtype
    small = k <= 0.5 * n_valid
    c = jnp.where(small, c, -c)
    x_top, x_bottom = jnp.where(c > 0, x_max, x_min), jnp.where(c > 0, x_min, x_max)
    k = jnp.where(small, k, n_valid - k)
    h_k = ndtri(k / n_valid)
    tiny = jnp.finfo(dtype).tiny
    eps = jnp.finfo(dtype).eps
    ref = x_top
    s_min = (x_bottom - x_top) * c  # coordinates s = c (x - ref): s_max = 0
    start = _start(x, c, k, valid, n_valid, x_top, jnp.zeros_like(s_min), s_min, tol)
    tau, lo, hi, (t_a, h_a, t_b, h_b), certified, bound = start
    ulp = jnp.asarray(8 * eps, dtype)
    aim = 0.5 * tol  # the rounding of the n-term sum F stays within tol (float32: ~k log2(n) eps)
    t0 = _logit(k / n_valid)
    h_top, h_bottom = ndtri(0.5 / n_valid), -ndtri(0.5 / n_valid)

    def flat(lo, hi, tau):
        return (hi - lo) <= ulp * jnp.maximum(jnp.abs(tau), 1)

    def cond(state: _Search):
        return jnp.any(~state.done & ((state.it < max_iter) | ~state.fresh))

    def body(state: _Search):
        # ``fresh``: F and D were evaluated at tau (not yet at the start): step, then evaluate.
        it, ref, moved, tau, lo, hi, t_a, h_a, t_b, h_b, side, f_val, d_val, fresh, done = state
        s_max = (x_top - ref) * c
        h = ndtri(jnp.clip((f_val + k) / n_valid, 0, 1)) - h_k
        below, above = fresh & (f_val < 0), fresh & (f_val > 0)
        lo_n = jnp.where(below, tau, lo)
        hi_n = jnp.where(above, tau, hi)
        # Regula falsi on H through the last points below and above the root; Illinois: a
        # point kept twice in a row has its H halved.
        use = jnp.isfinite(h)
        t_a_n = jnp.where(below & use, tau, t_a)
        h_a_n = jnp.where(below & use, h, jnp.where(fresh & (side > 0), 0.5 * h_a, h_a))
        t_b_n = jnp.where(above & use, tau, t_b)
        h_b_n = jnp.where(above & use, h, jnp.where(fresh & (side < 0), 0.5 * h_b, h_b))
        side_n = jnp.where(below, -1, jnp.where(above, 1, 0)).astype(side.dtype)
        side_n = jnp.where(fresh, side_n, side)
        slope = h_b_n - h_a_n
        falsi = t_a_n - h_a_n * (t_b_n - t_a_n) / jnp.where(slope > 0, slope, 1)
        near = jnp.abs(f_val) < d_val
        # k <= 1: the top item exact and the rest (measured) as exponential tails.
        y = s_max + tau
        rest = f_val + k - jax.nn.sigmoid(y)
        top = _top_tail_root(jnp.maximum(rest, tiny) * jnp.exp(-y), k) - s_max
        step = jnp.where(near, _newton(tau, f_val, d_val), jnp.where(k <= 1, top, falsi))
        ok = (near | (k <= 1) | (slope > 0)) & (step > lo_n) & (step < hi_n)
        tau_n = jnp.where(fresh, jnp.where(ok, step, 0.5 * (lo_n + hi_n)), tau)
        # Re-centre (once) a row whose bracket has shrunk to ulps of tau short of the tolerance.
        stuck = fresh & ~done & (jnp.abs(f_val) > aim) & flat(lo_n, hi_n, tau) & ~moved
        ref_n = jnp.where(stuck, ref - tau / c, ref)
        s_max_n, s_min_n = (x_top - ref_n) * c, (x_bottom - ref_n) * c
        margin = 16 * eps * (jnp.abs(s_max_n) + jnp.abs(s_min_n) + jnp.abs(t0) + 1)
        tau_n = jnp.where(stuck, 0, tau_n)
        lo_n = jnp.where(stuck, t0 - s_max_n - margin, lo_n)
        hi_n = jnp.where(stuck, t0 - s_min_n + margin, hi_n)
        t_a_n, h_a_n = jnp.where(stuck, -s_max_n, t_a_n), jnp.where(stuck, h_top - h_k, h_a_n)
        t_b_n, h_b_n = jnp.where(stuck, -s_min_n, t_b_n), jnp.where(stuck, h_bottom - h_k, h_b_n)
        side_n = jnp.where(stuck, 0, side_n).astype(side.dtype)
        s_n, d_n = _sums(x, c, ref_n, tau_n, valid)
        keep = done | (fresh & (it >= max_iter))

        stepped = _Search(
            it=it,
            ref=ref_n,
            moved=moved | stuck,
            tau=tau_n,
            lo=lo_n,
            hi=hi_n,
            t_a=t_a_n,
            h_a=h_a_n,
            t_b=t_b_n,
            h_b=h_b_n,
            side=side_n,
            f_val=s_n - k,
            d_val=d_n,
            fresh=fresh,
            done=done,
        )
        out = _Search(*(jnp.where(keep, o, n) for o, n in zip(state, stepped)))
        # done: within tol, non-finite, or the bracket at the dtype's resolution after the
        # re-centring (or where re-centring cannot help: |tau| <= 1 is already resolved finely)
        spent = out.moved | (jnp.abs(out.tau) <= 1)
        f_n = out.f_val
        fin = (jnp.abs(f_n) <= aim) | ~jnp.isfinite(f_n) | (flat(out.lo, out.hi, out.tau) & spent)
        return out._replace(
            it=it + (~keep & fresh).astype(jnp.int32),
            fresh=fresh | ~keep,
            done=jnp.where(keep, done, fin),
        )

    it0 = jnp.zeros(tau.shape, jnp.int32)
    zero = jnp.zeros_like(tau)
    f_val = jnp.where(certified, bound, 0)  # the certified rows report the bound
    state = _Search(
        it=it0,
        ref=ref,
        moved=it0 < 0,
        tau=tau,
        lo=lo,
        hi=hi,
        t_a=t_a,
        h_a=h_a,
        t_b=t_b,
        h_b=h_b,
        side=it0,
        f_val=f_val,
        d_val=zero,
        fresh=certified,
        done=certified,
    )
    out = lax.while_loop(cond, body, like_vma(state, x))
    ok = jnp.abs(out.f_val) <= tol
    return out.ref, jnp.where(small, out.tau, -out.tau), out.it, jnp.abs(out.f_val), ok


def _interior(k, n_valid):
    return (k > 0) & (k < n_valid)


def topk_mask_rows(x, c, k, valid, n_valid, extremes, *, solve_x, max_iter: int, tol: float):
    """A = sigmoid(c (x - theta)) with sum(A) = k per row; ``x`` [..., n].

    ``c``, ``k``, ``n_valid`` [...]; ``extremes``: the max and min of ``x`` over the valid items.
    ``valid`` [..., n] (or [..., 1]: all valid) is 1 for entries that take part and 0 for masked
    ones (no tangent). ``solve_x``: ``x`` for the root find, which may differ from ``x`` in rows
    that are not interior (0 < k < n_valid). Returns (A, theta, iterations, residual
    |sum(A) - k|, ok). The root find runs on values without gradient and returns the threshold
    as a reference score and an offset, ``A = sigmoid(c (x - ref) + tau)``; derivatives come
    from ``_mask_at`` (implicit, closed form; ``ref`` is a constant that tau absorbs).
    """
    inner = _interior(k, n_valid)
    k_safe = jnp.where(inner, k, 0.5 * n_valid)
    sg = lax.stop_gradient
    x_max, x_min = (sg(e) for e in extremes)
    ref, tau, it, res, ok = _root_find(
        sg(solve_x), sg(c), sg(k_safe), valid, n_valid, x_max, x_min, max_iter=max_iter, tol=tol
    )
    a, tau = _mask_at((x - ref[..., None]) * c[..., None], k, valid, n_valid, tau)
    # k = 0 or n_valid: A is exactly 0 or the validity (k is clipped); a NaN k stays NaN
    res = jnp.where(inner, res, jnp.where(jnp.isnan(k), jnp.nan, 0))
    ok = jnp.where(inner, ok, jnp.isfinite(k))
    return a, ref - tau / c, it, res, ok


@jax.custom_jvp
def _mask_at(s, k, valid, n_valid, tau):
    """The mask at the root ``tau`` (found without gradient) and tau, with the implicit tangent."""
    inner = _interior(k, n_valid)
    a = jax.nn.sigmoid(s + tau[..., None]) * valid
    a = jnp.where(inner[..., None], a, jnp.where((k > 0)[..., None], valid, 0))
    return a, tau


@_mask_at.defjvp
def _mask_at_jvp(primals, tangents):
    s, k, valid, n_valid, tau = primals
    ds, dk = tangents[0], tangents[1]
    a, tau = _mask_at(s, k, valid, n_valid, tau)
    # sigma' = A (1 - A) from the mask itself (no second exp pass); it is 0 on masked items and
    # on rows with k = 0 or k = n_valid, where A is 0 or 1.
    dsig = a * (1 - a)
    total = dsig.sum(axis=-1)
    pos = total > 0
    dtau = jnp.where(pos, (dk - (dsig * ds).sum(axis=-1)) / jnp.where(pos, total, 1), 0)
    return (a, tau), (dsig * (ds + dtau[..., None]), dtau)
