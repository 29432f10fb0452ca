r"""Bounded-depth finisher of the parallel isotonic solver: a merge tree over blocks (private).

The blocks left by the parallel rounds (``softops._isotonic.pav``) are merged bottom-up: at level
$\ell$ every row is cut into chunks of $2^\ell$ blocks whose solutions are known
(non-increasing block values), and each pair of neighbouring chunks (L, R) is solved at once.
Pooling L and R only ever pools a suffix of L with a prefix of R into one new block, of value
$v^\star$: the L blocks of value $\le v^\star$ and the R blocks of value
$\ge v^\star$. With $P(u)$ = {L blocks of value $\le u$} ∪ {R blocks of value
$\ge u$} and $F(u) = \mathrm{value}(P(u)) - u$, F is positive below
$v^\star$ and negative above it, so

- L block ``j`` is pooled iff $F(v_j) \ge 0$, R block ``j`` iff $F(v_j) \le 0$; the searches test
  the equivalent, rounding-safe form (the value of the other blocks of $P(v_j)$ against $v_j$);
- both sets are contiguous, so each is found by a binary search over its length, each step
  evaluating F with two inner binary searches (the sizes of $P(u)$ in L and in R) and
  suffix/prefix statistics of the chunks.

A level is O(n) data-parallel work plus O(log^2 n) binary-search steps; log2(n) levels. No
barrier (row start, masked entry) is ever crossed: the searched lengths stop at them.

Values and statistics are anchored (``blocks``): each block carries its value relative to its own
anchor item, and a merge of L and R re-anchors everything at the first item of R, so every
comparison sees differences of nearby values, never large absolute ones. ``kl_desc`` blocks go
into log space first (re-anchored at a later item, their linear sums could overflow).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from softops._isotonic.blocks import anchor_gap, combine, gaps, rel_value, shift
from softops._sharding import like_vma


def _identity(kind, dtype):
    return jnp.asarray(0.0 if kind == "l2" else -jnp.inf, dtype)


def _cumulative(kind, x, reverse):
    if kind == "l2":
        return lax.cumsum(x, axis=x.ndim - 1, reverse=reverse)
    return lax.cumlogsumexp(x, axis=x.ndim - 1, reverse=reverse)


def _lengths(kind, a, b):
    """[..., p + 1] statistics of the first c items (c = 0..p), identity at c = 0."""
    pad = [(0, 0)] * (a.ndim - 1) + [(1, 0)]
    ident = _identity(kind, a.dtype)
    return (
        jnp.pad(_cumulative(kind, a, False), pad, constant_values=ident),
        jnp.pad(_cumulative(kind, b, False), pad, constant_values=ident),
    )


def _take(x, i):
    return jnp.take_along_axis(x, i[..., None], axis=-1)[..., 0]


def _search(pred, hi, steps: int):
    """Largest c in [0, hi] with pred(c) (pred monotone: true up to some c, pred(0) true)."""
    lo = jnp.zeros_like(hi)

    def body(_, state):
        lo, hi = state
        mid = (lo + hi + 1) // 2
        ok = pred(mid)
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid - 1)

    lo, _ = lax.fori_loop(0, steps, body, like_vma((lo, hi), hi))
    return lo


def _merge_level(kind, p, rho, start, bar, a, b, first, anchor_gaps):
    """Merges chunk pairs of p blocks; arrays [B, P] (P a multiple of 2p). Returns (rho, start).

    ``rho``: each block's value relative to its anchor (the value of its pooled group).
    """
    bsz, size = rho.shape
    shape = (bsz, size // (2 * p), 2, p)
    g = jnp.broadcast_to(first.reshape(shape)[:, :, 1:, :1], shape).reshape(bsz, size)
    da, db = anchor_gaps(g, first)  # statistics at each anchor minus at g
    a, b = shift(kind, a, b, da, db)  # anchored at g
    gap = anchor_gap(kind, da, db)
    # A pooled group's value, read at its first block: recomputed at each member, rounding could
    # make the members differ, and the searches below could then split the group.
    pos = lax.broadcasted_iota(jnp.int32, rho.shape, 1)
    head = lax.cummax(jnp.where(start | bar, pos, 0), axis=1)
    v = jnp.take_along_axis(rho + gap, head, axis=1)
    v4, s4, bar4, a4, b4, gap4 = (x.reshape(shape) for x in (v, start, bar, a, b, gap))
    # L in reversed order (its suffixes become prefixes), R as is.
    vl, vr = v4[:, :, 0, ::-1], v4[:, :, 1]
    barl, barr = bar4[:, :, 0, ::-1], bar4[:, :, 1]
    sa_l, sb_l = _lengths(kind, a4[:, :, 0, ::-1], b4[:, :, 0, ::-1])
    sa_r, sb_r = _lengths(kind, a4[:, :, 1], b4[:, :, 1])
    idx = lax.broadcasted_iota(jnp.int32, vl.shape, vl.ndim - 1)
    # Longest poolable lengths: L up to and including its last barrier, R up to its first one.
    max_l = jnp.min(jnp.where(barl, idx + 1, p), axis=-1)
    max_r = jnp.min(jnp.where(barr & (idx > 0), idx, p), axis=-1)
    steps = max(1, math.ceil(math.log2(p + 1)))
    merge = ~barr[..., 0] & (vl[..., 0] <= vr[..., 0])

    def count(vs, hi, keep):  # number of blocks (from the chunk's inner end) with keep(value)
        return _search(lambda c: (c == 0) | keep(_take(vs, jnp.maximum(c - 1, 0))), hi, steps)

    def rest_value(cl, cr):  # value of the first cl blocks of L (reversed) and cr of R
        sa = combine(kind, _take(sa_l, cl), _take(sa_r, cr))
        sb = combine(kind, _take(sb_l, cl), _take(sb_r, cr))
        return rel_value(kind, sa, sb)

    # A block (with its group, value u) is pooled iff the others of P(u) have a value on its
    # other side: for an L block, the L blocks below u with the R blocks from u up reach u. In
    # exact arithmetic that is F(u) >= 0 (a pooled value lies between its parts'); in floating
    # point F(u) = 0 can be a false tie, where the block dominates P(u)'s sums and the others'
    # share rounds away (a KL soft sort with gaps of 1e2 / eps pooled two blocks that way). An
    # empty rest has a NaN value: not pooled.
    def pooled_l(c):
        u = _take(vl, jnp.maximum(c - 1, 0))
        rest = rest_value(count(vl, max_l, lambda v: v < u), count(vr, max_r, lambda v: v >= u))
        return (c <= 1) | (rest >= u)

    def pooled_r(c):
        u = _take(vr, jnp.maximum(c - 1, 0))
        rest = rest_value(count(vl, max_l, lambda v: v <= u), count(vr, max_r, lambda v: v > u))
        return (c <= 1) | (rest <= u)

    cl = jnp.where(merge, _search(pooled_l, max_l, steps), 0)
    cr = jnp.where(merge, _search(pooled_r, max_r, steps), 0)
    v_new = rel_value(
        kind,
        combine(kind, _take(sa_l, cl), _take(sa_r, cr)),
        combine(kind, _take(sb_l, cl), _take(sb_r, cr)),
    )
    in_l = idx < cl[..., None]  # reversed L
    in_r = idx < cr[..., None]
    vl = jnp.where(in_l, v_new[..., None], vl)
    vr = jnp.where(in_r, v_new[..., None], vr)
    sl = s4[:, :, 0, ::-1] & ~(in_l & (idx < cl[..., None] - 1))
    sr = s4[:, :, 1] & ~in_r
    v4 = jnp.stack([vl[..., ::-1], vr], axis=2)
    s4 = jnp.stack([sl[..., ::-1], sr], axis=2)
    pooled = jnp.stack([in_l[..., ::-1], in_r], axis=2)
    rho = jnp.where(pooled, v4 - gap4, rho.reshape(shape))
    return rho.reshape(bsz, size), s4.reshape(bsz, size)


def finish(kind, st, b_log, blk) -> jax.Array:
    """Element block starts ``[B, n]`` from the block-space state ``blk`` of ``pav``."""
    bsz, n = blk.a.shape
    size = 1 << max(0, (n - 1).bit_length())
    pos = lax.broadcasted_iota(jnp.int32, (bsz, size), 1)
    live = pos < blk.count[:, None]

    def pad(x, fill):
        return jnp.pad(x, [(0, 0), (0, size - n)], constant_values=fill)

    a, b = blk.a, blk.b
    if kind == "kl_desc":
        a, b, kind = jnp.log(a), jnp.log(b), "kl"
    a, b = pad(a, 0), pad(b, 1 if kind == "l2" else 0)
    first = jnp.where(live, pad(blk.first, 0), 0)
    bar = pad(blk.bar, True) | ~live | (pos == 0)
    rho = jnp.where(live, rel_value(kind, a, b), 0)
    start = live

    def anchor_gaps(f, g):
        return gaps(kind, st, f, g, b_log)

    p = 1
    while p < size:
        rho, start = _merge_level(kind, p, rho, start, bar, a, b, first, anchor_gaps)
        p *= 2
    first = jnp.where(start, first, n)
    rows = lax.broadcasted_iota(jnp.int32, first.shape, 0)
    return jnp.zeros((bsz, n), bool).at[rows, first].set(True, mode="drop")
