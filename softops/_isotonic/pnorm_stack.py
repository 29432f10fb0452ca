r"""Stack PAV for the p-norm isotonic blocks (private): the block structure in O(n) steps.

Rows ``[B, n]`` (float64: ``d`` the items' ``z`` relative to their row's first item, ``w``) are
laid end to end and scanned once by stack-based PAV in one ``lax.while_loop``; each step pushes
an item or pools the top two blocks (``barrier`` items never pool with their left). Reference
semantics::

    stack = []
    for i in items:
        stack.append(block(i))
        while len(stack) >= 2 and not barrier(stack[-1]) and value(stack[-2]) <= value(stack[-1]):
            stack[-2:] = [union(stack[-2], stack[-1])]

A block's value $\gamma$ solves $\sum_B \phi(d_i - \gamma) = \sum_B w_i$
(``softops._isotonic.pnorm``).

- p = 4/3 ($\phi(t) = t^3$): a block carries its size, mean, centred second and third moments
  and weight, and two blocks pool by Chan et al.'s pairwise update of the moments, O(1) per step.
- p = 3/2 ($\phi(t) = t|t|$): a block carries its bounds; its value is found by a binary search
  for the items above the root (the equation at item ``j`` from per-row prefix sums of ``d``,
  ``d^2`` and ``w``) and the quadratic on that piece, O(log n) per pooling step. The prefix
  sums round at the scale of the whole row's sums (float64), far below float32 inputs' rounding
  for soft sort and rank; the caller re-checks the structure with block-local sums.

Every value read from the stack passes through a division by ``one`` (1 at run time, unknown to
XLA): without it XLA copies a loop buffer at every step (see ``softops._isotonic.pav``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from softops import _sharding
from softops._isotonic.segments import segmented_scan
from softops._roots import depressed_cubic
from softops._sharding import count_last, run_bounds, take_last


def _block_sums(ids, *xs):
    """Each item's block sum of each of ``xs`` ``[B, n]``, in one pass.

    Float64: a sequential sum rounds far below float32.
    """
    bsz, n = ids.shape
    flat = (ids + lax.broadcasted_iota(jnp.int32, ids.shape, 0) * n).ravel()
    data = jnp.stack(xs, axis=-1).reshape(bsz * n, len(xs))
    sums = jax.ops.segment_sum(data, flat, num_segments=bsz * n, indices_are_sorted=True)
    out = jnp.take(sums, flat, axis=0).reshape(bsz, n, len(xs))
    return tuple(out[..., k] for k in range(len(xs)))


def block_roots(d, w, starts, power: int):
    """Per item: its block's root ``delta`` (relative to the block's first item), ``t``, stats.

    ``d``: the items' ``z`` minus their block's first ``z`` (<= 0, non-increasing in the block);
    ``t = d - delta``, so ``phi(t)`` sums to ``w`` over each block. ``stats`` ``[..., n, k]``:
    the block as the stack carries it (``block_starts``), relative to the block's first item.
    """
    ids, pivot, end = run_bounds(starts)
    m = (end - pivot).astype(d.dtype)
    if power == 3:
        # power sums of d <= 0 (terms of one sign: no cancellation), then the centred moments
        # (they cancel by at most a factor of the block's size)
        s1, s2, s3, sw = _block_sums(ids, d, d * d, d * d * d, w)
        mean = s1 / m
        m2 = jnp.maximum(s2 - mean * s1, 0)
        m3 = s3 - mean * (3 * s2 - 2 * mean * s1)
        x = _cubic_offset(m, m2, m3, sw)
        return mean + x, (d - mean) - x, jnp.stack([m, mean, m2, m3, sw, mean + x], axis=-1)
    pos = lax.broadcasted_iota(jnp.int32, d.shape, d.ndim - 1)
    (p1, _), (p2, _) = segmented_scan(starts, (d, d * d))
    t1, t2, sw = _block_sums(ids, d, d * d, w)
    before = (pos - pivot).astype(d.dtype)
    after = (end - 1 - pos).astype(d.dtype)
    a1, a2, b1, b2 = p1 - d, p2 - d * d, t1 - p1, t2 - p2
    # the equation at z_j: sum over the items above j of (d - d_j)^2, minus those below, minus W
    f = (a2 - d * (2 * a1 - d * before)) - (b2 - d * (2 * b1 - d * after)) - sw
    # the items at or above the root: a prefix of the block
    count = _block_sums(ids, (f <= 0).astype(d.dtype))[0].astype(jnp.int32)
    ref = take_last(d, pivot + jnp.maximum(count - 1, 0))
    e = d - ref
    above = pos < pivot + count
    sa1, sa2, sb1, sb2 = _block_sums(
        ids,
        jnp.where(above, e, 0),
        jnp.where(above, e * e, 0),
        jnp.where(above, 0, e),
        jnp.where(above, 0, e * e),
    )
    a = (2 * count).astype(d.dtype) - m
    b = sa1 - sb1  # >= 0: e >= 0 above, <= 0 below
    c0 = sa2 - sb2 - sw
    y = _piece_root(a, b, c0)
    return ref + y, e - y, jnp.stack([end.astype(d.dtype), ref + y], axis=-1)


def _cubic_offset(m, m2, m3, w):
    """The root ``x`` of ``sum (c - x)^3 = w`` for centred ``c`` (``m`` items, moments ``m2, m3``).

    ``m x^3 + 3 m2 x + (w - m3) = 0`` by the hyperbolic Cardano formula, then one Newton step on
    ``m3 - 3 x m2 - m x^3 - w``.
    """
    x = depressed_cubic(3 * m2 / m, (w - m3) / m)
    h = m3 - x * (3 * m2 + m * x * x) - w
    dh = -3 * (m2 + m * x * x)
    return jnp.where(dh < 0, x - h / jnp.where(dh < 0, dh, -1), x)


def _piece_root(a, b, c0):
    """The root with negative slope of ``a y^2 - 2 b y + c0`` (``b >= 0``), without cancellation."""
    den = b + jnp.sqrt(jnp.maximum(b * b - a * c0, 0))
    return jnp.where(den > 0, c0 / jnp.where(den > 0, den, 1), 0)


def _cubic_value(st):
    """Value of a p = 4/3 block ``(m, mean, M2, M3, W, value)``: mean plus the cubic's root."""
    return st[1] + _cubic_offset(st[0], st[2], st[3], st[4])


def _chan(a, b):
    """The union of two p = 4/3 blocks (Chan, Golub, LeVeque's pairwise moment update)."""
    na, nb = a[0], b[0]
    n = na + nb
    delta = b[1] - a[1]
    m2 = a[2] + b[2] + delta * delta * na * nb / n
    m3 = (
        a[3]
        + b[3]
        + delta**3 * na * nb * (na - nb) / (n * n)
        + 3 * delta * (na * b[2] - nb * a[2]) / n
    )
    st = jnp.stack([n, a[1] + delta * nb / n, m2, m3, a[4] + b[4], a[5]])
    return st.at[5].set(_cubic_value(st))


def _range_sums(pre, lo, hi):
    """Sums over items ``[lo, hi)`` of one row from its exclusive and inclusive prefix sums."""
    excl, incl = pre
    return jnp.where(hi > lo, incl[jnp.maximum(hi - 1, 0)] - excl[lo], 0)


def _quadratic_value(d, pre, lo, hi, steps: int):
    """Value of the p = 3/2 block of items ``[lo, hi)``: ``gamma`` with sum phi(d - gamma) = W."""
    p1, p2, pw = pre
    w = _range_sums(pw, lo, hi)
    m = (hi - lo).astype(d.dtype)

    def f_at(j):  # the equation at gamma = d_j: squares above j minus squares below, minus W
        dj = d[j]
        before, after = (j - lo).astype(d.dtype), (hi - 1 - j).astype(d.dtype)
        s1a, s2a = _range_sums(p1, lo, j), _range_sums(p2, lo, j)
        s1b, s2b = _range_sums(p1, j + 1, hi), _range_sums(p2, j + 1, hi)
        up = s2a - dj * (2 * s1a - dj * before)
        down = s2b - dj * (2 * s1b - dj * after)
        return up - down - w

    def body(_, state):  # largest c in [0, m] with c == 0 or f_at(lo + c - 1) <= 0
        c_lo, c_hi = state
        mid = (c_lo + c_hi + 1) // 2
        ok = f_at(lo + mid - 1) <= 0
        return jnp.where(ok, mid, c_lo), jnp.where(ok, c_hi, mid - 1)

    init = _sharding.like_vma((jnp.zeros((), jnp.int32), hi - lo), d, hi)
    count = lax.fori_loop(0, steps, body, init)[0]
    ref = d[lo + jnp.maximum(count - 1, 0)]
    mid = lo + count
    ca = count.astype(d.dtype)
    cb = m - ca
    s1a, s2a = _range_sums(p1, lo, mid), _range_sums(p2, lo, mid)
    s1b, s2b = _range_sums(p1, mid, hi), _range_sums(p2, mid, hi)
    ea1, ea2 = s1a - ref * ca, s2a - ref * (2 * s1a - ref * ca)
    eb1, eb2 = s1b - ref * cb, s2b - ref * (2 * s1b - ref * cb)
    return ref + _piece_root(ca - cb, ea1 - eb1, ea2 - eb2 - w)


def _prefix(x):
    """Exclusive and inclusive prefix sums along rows, flattened."""
    incl = jnp.cumsum(x, axis=-1)
    return (incl - x).ravel(), incl.ravel()


def pool_round(d, w, starts, barrier, power: int):
    """One round: pools every run of adjacent violating blocks of ``starts`` at once.

    ``d``: ``z`` relative to the row's first item. Returns the pooled starts, whether each row
    pooled any pair (``[B]``; a row that pooled none is solved), and the statistics of the blocks
    of ``starts`` (row-relative, as the stack takes them).
    """
    pivot = run_bounds(starts)[1]
    offset = take_last(d, pivot)
    delta, _, stats = block_roots(d - offset, w, starts, power)
    value = delta + offset
    left = jnp.concatenate([jnp.full_like(value[:, :1], jnp.inf), value[:, :-1]], axis=1)
    viol = starts & ~barrier & (left <= value)  # the left block's value at or below this one's
    if power == 3:
        stats = stats.at[..., 1].add(offset).at[..., 5].add(offset)
    else:  # block ends as flat positions
        row = lax.broadcasted_iota(d.dtype, d.shape, 0) * d.shape[1]
        stats = stats.at[..., 0].add(row).at[..., 1].add(offset)
    return starts & ~viol, jnp.any(viol, axis=1), stats


def block_starts(d: jax.Array, w: jax.Array, barrier: jax.Array, power: int) -> jax.Array:
    """Block starts ``[B, n]`` (float64 ``d``, ``w``; ``barrier[:, 0]`` true) by stack PAV.

    ``d``: ``z`` relative to the row's first item. First vectorized rounds pool every run of
    adjacent violating items (and for p = 4/3 then of blocks): soft sort and rank inputs often
    leave few blocks. The stack then runs over those blocks, compacted.
    """
    bsz, n = d.shape
    size = bsz * n
    dtype = d.dtype
    steps = max(1, math.ceil(math.log2(n + 1)))
    single = d - (jnp.cbrt(w) if power == 3 else jnp.sign(w) * jnp.sqrt(jnp.abs(w)))
    left = jnp.concatenate([jnp.full_like(single[:, :1], jnp.inf), single[:, :-1]], axis=1)
    starts = barrier | (left > single)  # a run of items each at or below the next pools
    if power == 3:  # many short runs are left: one more round costs less than their steps
        starts = pool_round(d, w, starts, barrier, power)[0]
    _, live, stats = pool_round(d, w, starts, barrier, power)  # live: the rows not yet solved
    if power == 2:
        pre = (_prefix(d), _prefix(d * d), _prefix(w))
    flat = (starts & live[:, None]).ravel()  # the stack visits only the blocks of those rows
    slot = count_last(flat[None])[0] - 1
    total = slot[-1] + 1
    tgt = jnp.where(flat, slot, size)
    first = jnp.zeros((size,), jnp.int32).at[tgt].set(jnp.arange(size, dtype=jnp.int32))
    sstats = jnp.zeros((size, stats.shape[-1]), dtype).at[tgt].set(stats.reshape(size, -1))
    df, bar = d.ravel(), barrier.ravel()

    def pooled(start2, a, b):
        if power == 3:
            return _chan(a, b)
        return jnp.stack([b[0], _quadratic_value(df, pre, start2, b[0].astype(jnp.int32), steps)])

    def body(state):
        i, top, start, st, _ = state
        one_f = 1 + top.astype(dtype) * jnp.asarray(2.0**-90, dtype)  # exactly 1
        one_i = 1 + (top >> 31)  # exactly 1
        t1, t2 = jnp.maximum(top - 1, 0), jnp.maximum(top - 2, 0)
        s1, s2 = lax.div(start[t1], one_i), lax.div(start[t2], one_i)
        a, b = st[t2] / one_f, st[t1] / one_f
        viol = (top >= 2) & ~bar[s1] & (a[-1] <= b[-1])
        merge = lax.div(viol.astype(jnp.int32), one_i) > 0
        push = ~merge & (i < total)
        ic = jnp.minimum(i, size - 1)
        other = jnp.where(push, sstats[ic], b)
        if power == 3:  # cheap: computed every step, no branch
            new = jnp.where(merge, pooled(s2, a, b), other)
        else:
            new = lax.cond(merge, lambda: pooled(s2, a, b), lambda: other)
        pos = jnp.where(merge, t2, jnp.where(push, top, t1))
        ns = jnp.where(merge, s2, jnp.where(push, first[ic], s1))
        mi, pi = merge.astype(jnp.int32), push.astype(jnp.int32)
        return i + pi, top - mi + pi, start.at[pos].set(ns), st.at[pos].set(new), merge | push

    zero = jnp.zeros((), jnp.int32)
    init = (zero, zero, jnp.zeros((size,), jnp.int32), jnp.zeros_like(sstats), True)
    init = _sharding.like_vma(init, d)
    _, top, start, _, _ = lax.while_loop(lambda st: st[4], body, init)
    item = jnp.where(jnp.arange(size, dtype=jnp.int32) < top, start, size)
    stacked = jnp.zeros((size,), bool).at[item].set(True, mode="drop").reshape(bsz, n)
    return jnp.where(live[:, None], stacked, starts)
