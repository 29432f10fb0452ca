r"""Exactly sparse top-k masks: capped-simplex projections, Euclidean and p-norm (private).

With scores $s$ (``s = x`` for the largest, ``-x`` for the smallest), a temperature $\tau$ and a
power $r$, the mask is

$$
y_i = g\big((s_i - \theta)/\tau\big), \qquad g(u) = \min(\max(u, 0), 1)^r, \qquad
\textstyle\sum_i y_i = k,
$$

the solution of $\max_{0 \le y \le 1,\ \sum y = k} \langle s, y\rangle - \tau \sum_i \phi(y_i)$
with $\phi(y) = y^2/2$ ($r = 1$, ``"l2"``: the Euclidean projection of $s/\tau$ onto the capped
simplex) or $\phi(y) = |y|^p/p$ with $r = 1/(p - 1)$ (``"p=3/2"``: $r = 2$; ``"p=4/3"``: $r = 3$;
Sander et al., 2023). Entries are exactly 0 at and below $\theta$ and exactly 1 from
$\theta + \tau$ on.

$F(\theta) = \sum_i g((s_i - \theta)/\tau) - k$ is continuous, non-increasing and polynomial
between the breakpoints $\{s_i - \tau, s_i\}$. On a piece the active sets are fixed (capped:
$u \ge 1$, fractional A: $0 < u < 1$) and the root of $n_{\mathrm{top}} + \sum_A (u_i - d)^r = k$
has a closed form from the moments of A: linear, quadratic, or a cubic with one real root
(hyperbolic Cardano). Reference semantics for one row (no sort)::

    lo, hi = min(s) - tau, max(s)  # F(lo) = n - k >= 0 >= F(hi) = -k
    theta = regula_falsi(lo, hi)
    while abs(F(theta)) > tol:
        lo, hi = (theta, hi) if F(theta) > 0 else (lo, theta)
        d = root of theta's piece  # exact if the root lies in this piece
        theta = theta + tau * d if it is in (lo, hi) and |F| halved, else regula_falsi(lo, hi)

Each iteration is one pass over the row (the sums of $g$, of the indicators of A and of the cap,
and the moments of A). Regula falsi runs with the Illinois rule on $H = \Phi^{-1}(S/n)$, close to
linear in $\theta$ for near-Gaussian scores at small $\tau$. For L2 the piece's root is Newton's
step, so the search ends one pass after the active set is found; for the p-norms it is the closed
form. A root that is a whole interval (an integer k whose k-th and (k+1)-th scores are more than
$\tau$ apart: every entry 0 or 1) is stepped into, not onto its edge, so those entries are exact.

Derivative (implicit, O(n)): with $g'_i = r u_i^{r-1}$ on A (0 elsewhere) and
$a_i = d s_i / \tau + u_i\, d(1/\tau) \cdot \tau$,
$d\theta/\tau = (\langle g', a\rangle - dk)/\sum g'$ and $dy = g' \odot (a - d\theta/\tau)$.

Reference: Sander, Puigcerver, Djolonga, Peyré, Blondel, Fast, Differentiable and Sparse Top-k:
a Convex Analysis Perspective, ICML 2023, arXiv:2302.01425.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from softops import _compat
from softops._ot.mask_root import ndtri
from softops._roots import depressed_cubic
from softops._sharding import batch_local, like_vma

POWERS = {"l2": 1, "p=3/2": 2, "p=4/3": 3}


def prepass(x, temp, valid, largest: bool):
    """Scores, validity and the row statistics that steer the search, in one pass.

    Returns ``(s, keep, good, s_max, s_min, n_valid)``: ``s = ±x`` with 0 at the items that take
    no part (``where=False``, and a score of ``-inf`` after the sign: never selected); ``keep``
    [..., n] bool; ``good`` [...] the rows whose kept scores are finite (no NaN, no ``+inf``)
    and whose temperature is positive and finite; the extremes (no gradient; 0 in rows that are
    not good) and the number of the kept scores.
    """
    dtype = x.dtype
    s = x if largest else -x
    keep = s != -jnp.inf
    keep = keep if valid is None else keep & valid
    s = jnp.where(keep, s, 0)
    sg = lax.stop_gradient(s)
    inf = jnp.asarray(jnp.inf, dtype)
    s_max, s_min, count = lax.reduce(
        (jnp.where(keep, sg, -inf), jnp.where(keep, sg, inf), keep.astype(dtype)),
        (-inf, inf, jnp.zeros((), dtype)),
        lambda p, q: (jnp.maximum(p[0], q[0]), jnp.minimum(p[1], q[1]), p[2] + q[2]),
        (x.ndim - 1,),
    )  # NaN propagates through max and min
    some = count > 0
    good = ~some | (jnp.isfinite(s_max) & jnp.isfinite(s_min))
    good = good & (temp > 0) & jnp.isfinite(temp)
    ok = good & some
    return s, keep, good, jnp.where(ok, s_max, 0), jnp.where(ok, s_min, 0), count


def _piece_root(power: int, m, m1, m2, c):
    """Root ``d`` of ``sum_A (u_i - d)^r = c`` from the moments of A (``m`` items).

    ``m1``, ``m2``: sums of u and u^2 over A (``m2`` for ``r = 3`` only; for ``r = 2`` the
    caller passes the sum of u^2 as ``m2``). ``r = 1``: linear. ``r = 2``: the smaller root of a
    quadratic, in the form without cancellation (NaN when there is none). ``r = 3``: the cubic
    is decreasing, one real root; centred on the mean of A it is depressed,
    ``t^3 + p t + q = 0`` with ``p >= 0``, solved by the hyperbolic form of Cardano's formula
    (``m3`` enters through ``c3``, see ``_step``).
    """
    one = jnp.maximum(m, 1)
    if power == 1:
        return (m1 - c) / one
    if power == 2:
        disc = m1 * m1 + m * (c - m2)
        den = m1 + jnp.sqrt(jnp.where(disc >= 0, disc, 0))
        return jnp.where((disc >= 0) & (den > 0), (m2 - c) / jnp.where(den > 0, den, 1), jnp.nan)
    raise ValueError(power)  # r = 3: see _cubic_root


def _cubic_root(m, m1, m2, m3, c):
    """Root ``d`` of ``sum_A (u_i - d)^3 = c`` (decreasing in d: one real root)."""
    one = jnp.maximum(m, 1)
    mu = m1 / one
    c2 = jnp.maximum(m2 - m1 * mu, 0)  # sum (u - mu)^2
    c3 = m3 - 3 * mu * m2 + 3 * mu * mu * m1 - m * mu**3  # sum (u - mu)^3
    return mu + depressed_cubic(3 * c2 / one, (c - c3) / one)


def _evaluate(s, valid, theta, inv, k, power: int):
    """One pass at ``theta``: ``(F, m, n_top, m1, m2, mass, up, dn)`` in u units.

    ``F = sum g(u) - k``; A (``0 < u < 1``) has ``m`` items with sums ``m1`` of u, ``m2`` of
    u^2 (r = 3 only) and ``mass`` of u^r; ``n_top`` items are capped (``u >= 1``). F is
    ``n_top - k + mass``: from S - k the mass would round away next to k (an item at u = 1e-3
    under p=4/3 adds 1e-9 to S = 2). ``[dn, up]`` is theta's piece (from the nearest
    breakpoints below and above; an item exactly at a breakpoint makes it empty on that side).
    """
    dtype = s.dtype
    u = (s - theta[..., None]) * inv[..., None]
    u = jnp.where(valid > 0, u, -jnp.inf)  # masked items: below every threshold
    inner = (u > 0) & (u < 1)
    uo = jnp.where(inner, u, 0)
    one, zero = jnp.ones((), dtype), jnp.zeros((), dtype)
    inf = jnp.asarray(jnp.inf, dtype)
    feats = [
        uo if power == 1 else uo**power,
        jnp.where(inner, one, zero),
        jnp.where(u >= 1, one, zero),
        *([uo] if power >= 2 else []),
        *([uo * uo] if power >= 3 else []),
    ]
    n_sums = len(feats)
    ends = (
        jnp.where(u >= 1, u - 1, jnp.where(inner, u, inf)),  # up: leaves the cap, or reaches 0
        jnp.where(u <= 0, -u, jnp.where(inner, 1 - u, inf)),  # -dn: enters A, or the cap
    )
    # One variadic reduction: XLA fuses every feature into a single pass over u (separate sums
    # are offloaded one by one, each feature written out first: 5-20x slower at 65536 x 64).
    out = lax.reduce(
        (*feats, *ends),
        (*(zero,) * n_sums, inf, inf),
        lambda p, q: (
            *(p[i] + q[i] for i in range(n_sums)),
            jnp.minimum(p[-2], q[-2]),
            jnp.minimum(p[-1], q[-1]),
        ),
        (s.ndim - 1,),
    )
    mass, m, n_top = out[0], out[1], out[2]
    f_val = (n_top - k) + mass
    m1 = mass if power == 1 else out[3]
    m2 = out[4] if power >= 3 else None
    return f_val, m, n_top, m1, m2, mass, out[-2], -out[-1]


def _piece_value(power: int, m, m1, m2, mass, d):
    """``sum_A (u_i - d)^r`` from the moments (the piece's polynomial; steers the search)."""
    if power == 1:
        return mass - d * m
    if power == 2:
        return mass - 2 * d * m1 + d * d * m
    return mass - 3 * d * m2 + 3 * d * d * m1 - d**3 * m


def _step(power: int, f_val, m, n_top, m1, m2, mass, k, margin):
    """The next point (u units from theta) from theta's piece, and whether F may not stop.

    The root of the piece's polynomial (exact when the root lies in this piece; NaN when the
    piece cannot hold it). Two roots at a piece's end are stepped over, into the interval beyond
    where F is exactly 0 and every entry exactly 0 or 1 (an integer k whose k-th and (k+1)-th
    scores are more than tau apart): every fractional item falling to 0 with exactly k capped
    (``c == 0``), or the only fractional item reaching the cap (``c == 1``). ``hold``: such a
    step is taken (when it lies in the bracket) and F may not stop here, even within the
    tolerance: the exact interval is one step away (or, if the interval is empty, the search goes
    on from the other side).
    """
    c = k - n_top
    fits = (m > 0) & (c >= 0) & (c <= m)
    if power == 3:
        d = _cubic_root(m, m1, m2, mass, c)
    else:
        d = _piece_root(power, m, m1, mass, c)
    d = jnp.where(fits, d, jnp.nan)
    lift = (f_val > 0) & (c == 0) & (m > 0)  # every u in A is at most mass^(1/r)
    top_u = mass if power == 1 else mass ** (1 / power)
    drop = (f_val < 0) & (m == 1) & (c == 1)  # the only u in A is m1
    d = jnp.where(lift, top_u * (1 + margin) + margin, d)
    d = jnp.where(drop, m1 - 1 - margin * (1 + jnp.abs(m1 - 1)), d)
    return d, lift | drop


CHUNK = 1 << 15  # items per block of rows searched together (a block stops at its own pace)


@batch_local(item_ndims=(1, 1, 0, 0, 0, 0, 0, 0, 0), out_item_ndims=(0, 0, 0), name="x")
def _root_find(s, valid, k, tau, n_valid, lo, hi, active, tol, *, power: int, max_iter: int):
    """(theta, iterations, ok) per row, by blocks of rows (see ``_search``).

    The loop of a block runs until its slowest row is done: with many rows, blocks of about
    ``CHUNK`` items keep the rows that need more passes from holding up the others (and each
    block's passes in cache).
    """
    shape = s.shape[:-1]
    n = s.shape[-1]
    rows = math.prod(shape)
    size = max(1, CHUNK // max(n, 1))
    args = (s, valid, k, tau, n_valid, lo, hi, active, tol)
    flat = [a.reshape((rows,) + a.shape[len(shape) :]) for a in args]
    search = functools.partial(_search, power=power, max_iter=max_iter)
    if not _compat.is_static(rows) or rows <= size:  # a symbolic batch (jax.export): one block
        out = search(*flat)
    else:
        blocks = -(-rows // size)
        pad = blocks * size - rows

        def split(a):
            a = jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1))
            return a.reshape((blocks, size) + a.shape[1:])

        out = lax.map(lambda b: search(*b), [split(a) for a in flat])
        out = [o.reshape((blocks * size,))[:rows] for o in out]
    return tuple(o.reshape(shape) for o in out)


def _search(s, valid, k, tau, n_valid, lo, hi, active, tol, *, power: int, max_iter: int):
    """(theta, iterations, ok) per row; rows with ``active == 0`` are not searched.

    ``s`` [..., n] (no gradient), ``valid`` [..., n] or [..., 1] (1 where the item takes part);
    ``k``, ``tau``, ``n_valid``, ``tol`` per row; ``lo < hi`` bracket the root
    (``F(lo) >= 0 >= F(hi)``). Stops when F is exactly 0 or within ``tol`` (unless an exact
    interval is one step away), or when the bracket has shrunk to a few ulps; ``ok`` is False
    only when ``max_iter`` stopped the search.
    """
    dtype = s.dtype
    eps = jnp.finfo(dtype).eps
    inv = 1 / tau
    n_safe = jnp.maximum(n_valid, 1)
    half = 0.5 / n_safe
    h_root = ndtri(jnp.clip(k / n_safe, half, 1 - half))
    slack = 64 * eps  # rounding of a piece's root, in u units

    def h_of(f_val):  # H = ndtri(S / n), relative to its value at the root
        return ndtri(jnp.clip((f_val + k) / n_safe, half, 1 - half)) - h_root

    def falsi(lo, hi, h_lo, h_hi):
        slope = h_lo - h_hi
        return lo + (hi - lo) * h_lo / jnp.where(slope > 0, slope, 1)

    def inside(t, lo, hi):
        return jnp.isfinite(t) & (t > lo) & (t < hi)

    def cond(state):
        it, done = state[0], state[-1]
        return jnp.any(~done & (it < max_iter))

    def body(state):
        it, theta, lo, hi, h_lo, h_hi, side, prev, done = state
        f_val, m, n_top, m1, m2, mass, up, dn = _evaluate(s, valid, theta, inv, k, power)
        d, hold = _step(power, f_val, m, n_top, m1, m2, mass, k, 16 * eps)
        pos, neg = f_val > 0, f_val < 0
        # The root is in theta's piece (exact), or beyond its end on the side of the root.
        found = ~hold & jnp.isfinite(d) & jnp.where(pos, d <= up + slack, d >= dn - slack)
        end = jnp.where(pos, up, dn)
        f_end = (n_top - k) + jnp.where(m > 0, _piece_value(power, m, m1, m2, mass, end), 0)
        lo_n = jnp.where(pos, theta + tau * up, lo)
        hi_n = jnp.where(neg, theta + tau * dn, hi)
        h = h_of(f_end)
        h_lo_n = jnp.where(pos, h, jnp.where(side > 0, 0.5 * h_lo, h_lo))
        h_hi_n = jnp.where(pos, jnp.where(side < 0, 0.5 * h_hi, h_hi), h)
        newton = theta + tau * d
        # Newton after a regula falsi step, or while it halves |F|; regula falsi otherwise.
        trust = inside(newton, lo_n, hi_n) & ((jnp.abs(f_val) <= 0.5 * prev) | hold)
        step = jnp.where(trust, newton, falsi(lo_n, hi_n, h_lo_n, h_hi_n))
        step = jnp.where(inside(step, lo_n, hi_n), step, 0.5 * (lo_n + hi_n))
        flat = (hi_n - lo_n) <= 4 * eps * (jnp.maximum(jnp.abs(lo_n), jnp.abs(hi_n)) + tau)
        stop = found | (f_val == 0) | ((jnp.abs(f_val) <= tol) & ~hold) | flat
        keep = done | stop
        step = jnp.where(found, newton, jnp.where(stop, theta, step))

        def pick(old, new):
            return jnp.where(done, old, new)

        side_n = jnp.where(pos, -1, 1).astype(side.dtype)
        new_state = (
            pick(theta, step), pick(lo, lo_n), pick(hi, hi_n), pick(h_lo, h_lo_n),
            pick(h_hi, h_hi_n), pick(side, side_n),
            pick(prev, jnp.where(trust, jnp.abs(f_val), jnp.inf)),
        )  # fmt: skip
        return (it + (~done).astype(jnp.int32), *new_state, keep)

    zero_i = jnp.zeros(lo.shape, jnp.int32)
    h_lo, h_hi = h_of(n_valid - k), h_of(-k)
    theta0 = falsi(lo, hi, h_lo, h_hi)
    theta0 = jnp.where(inside(theta0, lo, hi), theta0, 0.5 * (lo + hi))
    inf = jnp.full(lo.shape, jnp.inf, dtype)
    state = (zero_i, theta0, lo, hi, h_lo, h_hi, zero_i, inf, active <= 0)
    state = like_vma(state, s)
    out = lax.while_loop(cond, body, state)
    return out[1], out[0], out[-1]


def _inner(k, valid, shape):
    """Rows with ``0 < k < n_valid``: the only ones with a threshold to find."""
    n_valid = jnp.broadcast_to(valid, shape).sum(axis=-1)
    return (k > 0) & (k < n_valid)


@functools.partial(jax.custom_jvp, nondiff_argnums=(5,))
def _mask_at(s, inv, k, valid, theta, power: int):
    """The mask at the threshold ``theta`` (found without gradient) and theta; implicit tangent.

    ``valid`` [..., n] 0/1; rows with ``k <= 0`` or ``k >= n_valid`` (k clipped to that range
    by the caller) are 0 or the validity, whatever theta.
    """
    u = (s - theta[..., None]) * inv[..., None]
    y = jnp.where(u >= 1, 1, jnp.clip(u, 0, 1) ** power) * valid
    inner = _inner(k, valid, s.shape)
    y = jnp.where(inner[..., None], y, jnp.where((k > 0)[..., None], valid, 0))
    return y.astype(s.dtype), theta


@_mask_at.defjvp
def _mask_at_jvp(power, primals, tangents):
    s, inv, k, valid, theta = primals
    ds, dinv, dk = tangents[0], tangents[1], tangents[2]
    y, theta = _mask_at(s, inv, k, valid, theta, power)
    u = (s - theta[..., None]) * inv[..., None]
    inner = (u > 0) & (u < 1) & (valid > 0) & _inner(k, valid, s.shape)[..., None]
    slope = jnp.where(inner, power * u ** (power - 1) if power > 1 else 1, 0).astype(s.dtype)
    # d((s - theta) inv) with theta held: ds inv + (s - theta) dinv = ds inv + u dinv / inv
    a = ds * inv[..., None] + jnp.where(inner, u, 0) * (dinv / inv)[..., None]
    total = slope.sum(axis=-1)
    pos = total > 0
    e = jnp.where(pos, ((slope * a).sum(axis=-1) - dk) / jnp.where(pos, total, 1), 0)
    return (y, theta), (slope * (a - e[..., None]), e / inv)


def mask_rows(x, k, temp, valid, *, regularization: str, largest: bool, max_iter: int, tol):
    """Sparse top-k mask of rows ``x`` [..., n]: (mask, threshold, iterations, residual, ok).

    ``k`` and ``temp`` [...] (per row, differentiable); ``valid`` [..., n] bool or None. The
    threshold is in score units: ``mask = g((x - thr) / T)`` (``largest``) or
    ``g((thr - x) / T)``. Rows with a NaN or ``+inf`` among the kept scores, a bad temperature
    or a NaN k are NaN in value; ``ok`` is also False when ``max_iter`` stopped
    the search (the caller decides what such a row returns). A bad row's derivative with
    respect to each of its inputs is exactly 0 (its inputs are replaced before the kernel).
    """
    power = POWERS[regularization]
    dtype = x.dtype
    s, keep, good, s_max, s_min, n_valid = prepass(x, temp, valid, largest)
    good = good & ~jnp.isnan(k)
    # A bad row's inputs are replaced before the kernel (then its outputs by NaN): its value is
    # NaN and its derivative with respect to each of its inputs exactly 0 (no 0 * NaN).
    s = jnp.where(good[..., None], s, 0)
    temp = jnp.where(good, temp, 1)
    n_valid = jnp.where(good, n_valid, 0)
    k = jnp.clip(jnp.where(good, k, 0).astype(dtype), 0, n_valid)
    inner = (k > 0) & (k < n_valid)
    sg = lax.stop_gradient
    tau, k0 = sg(temp), sg(jnp.where(inner, k, 0.5 * n_valid))
    vf = keep.astype(dtype)
    s_root = sg(s)
    theta, it, found = _root_find(
        s_root, vf, k0, tau, n_valid, s_min - tau, s_max, inner.astype(dtype),
        jnp.full(k0.shape, tol, dtype), power=power, max_iter=max_iter,
    )  # fmt: skip
    y, theta = _mask_at(s, 1 / temp, k, vf, theta, power)
    ok = good & found
    y = jnp.where(keep, jnp.where(good[..., None], y, jnp.nan), 0)
    res = jnp.where(good, jnp.abs(y.sum(axis=-1) - k), jnp.nan)
    thr = jnp.where(good, theta if largest else -theta, jnp.nan)
    return y, thr, it, res, ok
