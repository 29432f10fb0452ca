"""Private kernels for decreasing isotonic regression: the block structure of the solution.

Both regularizations of Blondel et al. (2020) pool adjacent blocks by the same rule; they differ in
the statistics a block carries and in how two blocks combine (``blocks``: L2 blocks carry weighted
sums, KL blocks logsumexps). Statistics come in a form whose differences are exact (an affine
function of the item's input and position, or the log of positive values), and every block keeps
its statistics relative to its first item: two blocks are compared through the gap between their
first items, computed from the inputs, so float32 decides the pooling at the scale of the values'
differences, not of the statistics themselves (``blocks``). Long blocks are summed pairwise (the
rounds) or with compensated sums (the stack), so their values stay within a few ulps.

The kernels return only the *structure* of the solution, a boolean ``[B, n]`` array that marks
the first element of each block; values, and through them every derivative, are closed-form
functions of the blocks (``rows``). The structure is integer data, so no tangent ever
enters a loop. Elements flagged in ``barrier`` always start a block (rows of a batch, masked
entries). PAV pools equal neighbours too (``value_left <= value_right``), as the reference
implementations do.

Solvers (both exact, both start with a few *rounds*):

- rounds: pool every run of adjacent violating blocks at once, in "block space" (each round
  compacts the blocks of every row), O(n) vectorized work per round; a row is done when its pooled
  blocks no longer violate the order. Soft sort/rank inputs often finish in one round. The
  sequential solver runs one round, the parallel one up to ``ROUNDS``;
- ``"sequential"`` then runs stack-based PAV over the blocks of the rows not yet solved, all rows
  laid end to end in one ``lax.while_loop`` of O(1) steps: O(n) in all, the fast shape on CPU;
- ``"parallel"`` instead merges solved chunks pairwise in a tree of depth log2(n) (each merge
  pools a suffix of the left chunk with a prefix of the right one, found by binary search): no
  sequential dependence longer than O(log^3 n), the shape for GPU/TPU.

``"auto"`` solves short L2 rows (``softops._isotonic.dense``) without any loop, by the min–max
characterization of the solution (O(n^2) work), and otherwise picks ``"sequential"`` on CPU and
``"parallel"`` elsewhere.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple, get_args

import jax
import jax.numpy as jnp
from jax import lax

from softops import _sharding
from softops._isotonic import dense, merge_tree
from softops._isotonic.blocks import (
    Kind,
    Stats,
    anchor_gap,
    gaps,
    item_stats,
    log_ratio,
    rel_value,
    run_combine,
    shift,
)

Method = Literal["auto", "sequential", "parallel"]
METHODS: tuple[Method, ...] = get_args(Method)
ROUNDS = 4  # pooling rounds before the merge tree of the parallel solver
SEQUENTIAL_ROUNDS = 1  # before the stack PAV: on CPU a second round costs more than it saves


class _Blocks(NamedTuple):
    """Block-space state of the rounds.

    Block ``j < count[r]`` of row ``r`` has statistics ``a, b`` relative to its anchor, the item
    ``first`` that starts it, and ``bar`` says whether it starts at a barrier; ``done`` rows are
    solved.
    """

    a: jax.Array
    b: jax.Array
    first: jax.Array
    bar: jax.Array
    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count
    done: jax.Array


def _violations(kind: Kind, st: Stats, b_log: bool, blk: _Blocks):
    """Live blocks, and whether each block (from the second) violates the order with its left."""
    pos = lax.broadcasted_iota(jnp.int32, blk.a.shape, 1)
    live = pos < blk.count[:, None]
    v = rel_value(kind, blk.a, blk.b)
    da, db = gaps(kind, st, blk.first[:, :-1], blk.first[:, 1:], b_log)
    viol = v[:, :-1] <= anchor_gap(kind, da, db) + v[:, 1:]
    return live, live[:, 1:] & ~blk.bar[:, 1:] & viol


def _round(kind: Kind, st: Stats, b_log: bool, blk: _Blocks) -> _Blocks:
    """Pools every run of adjacent violating blocks of every row at once.

    A row is done once its blocks no longer violate the order; that is checked on the pooled
    blocks, so a row that one round solves costs one round, not two.
    """
    n = blk.a.shape[1]
    live, viol = _violations(kind, st, b_log, blk)
    new = live & jnp.concatenate([jnp.ones((live.shape[0], 1), bool), ~viol], axis=1)
    ids = jnp.where(live, _sharding.count_last(new) - 1, n)
    tgt = jnp.where(new, ids, n)
    # first and bar in one scatter: a barrier block's first item is stored as ~first (< 0)
    enc = _scatter_rows(tgt, jnp.where(blk.bar, ~blk.first, blk.first))
    bar = enc < 0
    first = jnp.where(bar, ~enc, enc)
    # every block re-anchored at the first item of its run, then pooled
    run_first = jnp.take_along_axis(first, jnp.minimum(ids, n - 1), axis=1)
    da, db = gaps(kind, st, run_first, blk.first, b_log)
    a, b = run_combine(kind, shift(kind, blk.a, blk.b, da, db), new, live, ids)
    out = _Blocks(a, b, first, bar, new.sum(axis=1, dtype=jnp.int32), blk.done)
    return out._replace(done=blk.done | ~jnp.any(_violations(kind, st, b_log, out)[1], axis=1))


def _scatter_rows(tgt: jax.Array, x: jax.Array) -> jax.Array:
    """``out[r, tgt[r, j]] = x[r, j]`` (targets ``>= n`` dropped)."""
    rows = lax.broadcasted_iota(jnp.int32, x.shape, 0)
    return jnp.zeros_like(x).at[rows, tgt].set(x, mode="drop")


def _rounds(kind: Kind, st: Stats, b_log: bool, barrier, max_rounds: int):
    """Up to ``max_rounds`` pooling rounds (fewer once every row is done): (rounds run, blocks)."""
    bsz, n = st.za.shape
    iota = lax.broadcasted_iota(jnp.int32, st.za.shape, 1)
    a, b = item_stats(kind, st)
    blk = _Blocks(a, b, iota, barrier, jnp.full((bsz,), n, jnp.int32), jnp.zeros((bsz,), bool))

    def cond(state):
        it, blk = state
        return (it < max_rounds) & ~jnp.all(blk.done)

    def body(state):
        it, blk = state
        return it + 1, _round(kind, st, b_log, blk)

    # A loop even for one round: its carry holds the statistics as stored values. Fused into a
    # straight-line round, XLA recomputes them per use and may contract one use into an FMA
    # (a * b - m rounded once), so that two uses of one statistic differ.
    return lax.while_loop(cond, body, _sharding.like_vma((jnp.int32(0), blk), st.za))


def _starts_of(blk: _Blocks) -> jax.Array:
    n = blk.a.shape[1]
    pos = lax.broadcasted_iota(jnp.int32, blk.a.shape, 1)
    tgt = jnp.where(pos < blk.count[:, None], blk.first, n)
    rows = lax.broadcasted_iota(jnp.int32, tgt.shape, 0)
    return jnp.zeros(blk.a.shape, bool).at[rows, tgt].set(True, mode="drop")


class _Slots(NamedTuple):
    """Flat per-slot data of the stack PAV: block statistics, and its anchor's item data."""

    a: jax.Array
    b: jax.Array
    barrier: jax.Array
    nxt: jax.Array
    pos: jax.Array  # the anchor's position in its row
    za: jax.Array  # z of the anchor (a = ca * za + ra * pos)
    ca: jax.Array
    ra: jax.Array
    zb: jax.Array
    cb: jax.Array
    rb: jax.Array


def _stack_pav(kind: Kind, b_log: bool, sl: _Slots, first):
    """Stack-based PAV over the slots ``first, nxt[first], nxt[nxt[first]], ...`` of flat arrays.

    Reference semantics (each step below is one ``while_loop`` iteration):

        stack = []
        for i in slots:  # i = first; i = nxt[i] while i < len(a)
            stack.append(block(i))
            while (len(stack) >= 2 and not barrier(stack[-1])
                   and value(stack[-2]) <= value(stack[-1])):
                stack[-2:] = [merge(stack[-2], stack[-1])]

    Returns the stack's slots (``-i - 1`` for a block starting at a barrier) and its height. Every
    step reads and writes O(1) scalars. A stack block keeps the anchor of its first slot; a merge
    re-anchors the right block by the gap between the two anchors, computed from the slots' item
    data (``blocks``). XLA copies a loop buffer at every step (an O(n^2) loop) if a cheap function
    of a value read from it feeds another buffer's in-place update, because it then duplicates
    that read into each consumer. So every value read from the stacks passes through a division
    XLA counts as expensive and computes once (by ``one`` equal to 1 at run time, unknown to XLA;
    ``tests/test_pav.py`` checks the compiled loop for copies).
    """
    size = sl.a.shape[0]
    dtype = sl.a.dtype
    tiny = jnp.asarray(2.0**-60 if dtype == jnp.float32 else 2.0**-90, dtype)

    def read(stats, start, t, one_f, one_i):
        """A stack block: statistics ``((P, P_lo), (Q, Q_lo))``, signed start, slot."""
        s = lax.div(start[t], one_i)
        x = stats[t] / one_f
        return ((x[0], x[1]), (x[2], x[3])), s, _slot(s)

    def step(f2, f1, blk2, blk1):
        """Whether block 2 (left) and block 1 (right) violate the order, and their union.

        ``da, db``: the statistics at the anchor of 1 minus at that of 2 (``blocks``).
        """
        (a2, b2), (a1, b1) = blk2, blk1
        dp = (sl.pos[f1] - sl.pos[f2]).astype(dtype)
        da = sl.ca[f2] * (sl.za[f1] - sl.za[f2]) + sl.ra[f2] * dp
        va2, vb2, va1, vb1 = (x[0] + x[1] for x in (a2, b2, a1, b1))
        if kind == "l2":
            shifted = _two_sum(a1[0], vb1 * da)
            shifted = shifted[0], shifted[1] + a1[1]
            return va2 / vb2 <= da + va1 / vb1, (_df_add(a2, shifted), _df_add(b2, b1))
        if kind == "kl_desc":
            # Re-anchoring multiplies the right block by exp(da) = 1 + expm1(da): written so, its
            # rounding is relative to |da| (a block re-anchored K times drifts by about K ulps
            # with a rounded exp(da): 40 ulps at n = 3e5).
            if b_log:  # exp(db) - 1 = (zb1 - zb2) / zb2, no transcendental
                db = log_ratio(sl.zb[f1], sl.zb[f2])
                eb1 = (sl.zb[f1] - sl.zb[f2]) / sl.zb[f2]
            else:
                db = sl.cb[f2] * (sl.zb[f1] - sl.zb[f2]) + sl.rb[f2] * dp
                eb1 = jnp.expm1(db)
            ea1 = jnp.expm1(da)
            # log(a2 / b2) - log(a1 / b1) <= da - db, with one log of the sums (db may be far
            # below the smallest float's log: no exp(db) in the test)
            viol = jnp.log(va2 * vb1 / (vb2 * va1)) + db <= da
            return viol, (_reanchor(a2, a1, ea1), _reanchor(b2, b1, eb1))
        if b_log:
            db = log_ratio(sl.zb[f1], sl.zb[f2])
        else:
            db = sl.cb[f2] * (sl.zb[f1] - sl.zb[f2]) + sl.rb[f2] * dp
        viol = va2 - vb2 <= (da - db) + (va1 - vb1)
        zero = jnp.zeros((), dtype)
        return viol, ((jnp.logaddexp(va2, va1 + da), zero), (jnp.logaddexp(vb2, vb1 + db), zero))

    def body(st):
        i, top, start, stats, _ = st
        t1, t2 = jnp.maximum(top - 1, 0), jnp.maximum(top - 2, 0)
        one_f = 1 + top.astype(dtype) * tiny  # exactly 1 (top < 2**31)
        one_i = 1 + (top >> 31)  # exactly 1 (top >= 0)
        blk1, s1, f1 = read(stats, start, t1, one_f, one_i)
        blk2, s2, f2 = read(stats, start, t2, one_f, one_i)
        viol, union = step(f2, f1, blk2, blk1)
        # the test through a division as well: else XLA recomputes it (its logs and exps) in
        # each of the fusions that read it (four per step)
        merge = lax.div(((top >= 2) & (s1 >= 0) & viol).astype(jnp.int32), one_i) > 0
        push = ~merge & (i < size)
        ic = jnp.minimum(i, size - 1)
        pos = jnp.where(merge, t2, jnp.where(push, top, t1))
        zero = jnp.zeros((), dtype)
        pushed = jnp.stack([sl.a[ic], zero, sl.b[ic], zero])
        kept = jnp.stack([blk1[0][0], blk1[0][1], blk1[1][0], blk1[1][1]])
        new = jnp.where(merge, jnp.stack([*union[0], *union[1]]), jnp.where(push, pushed, kept))
        ns = jnp.where(push, jnp.where(sl.barrier[ic], -i - 1, i), jnp.where(merge, s2, s1))
        mi, pi = merge.astype(jnp.int32), push.astype(jnp.int32)
        return (
            jnp.where(push, sl.nxt[ic], i),
            top - mi + pi,
            start.at[pos].set(ns),
            stats.at[pos].set(new),
            merge | push,
        )

    zero = jnp.zeros((), jnp.int32)
    init = (first, zero, jnp.zeros((size,), jnp.int32), jnp.zeros((size, 4), dtype), True)
    init = _sharding.like_vma(init, sl.a)
    _, top, start, _, _ = lax.while_loop(lambda st: st[4], body, init)
    return _slot(start), top


def _two_sum(x, y):
    """``(s, e)`` with ``s = fl(x + y)`` and ``s + e = x + y`` exactly (Knuth)."""
    s = x + y
    yy = s - x
    return s, (x - (s - yy)) + (y - yy)


def _reanchor(p2, p1, em1):
    """``p2 + p1 * (1 + em1)`` for compensated ``p2, p1`` (``em1 = exp(gap) - 1``)."""
    return _df_add(_df_add(p2, p1), (p1[0] * em1, p1[1] * em1))


def _df_add(p, q):
    """Sum of two compensated numbers ``(hi, lo)``: the block sums stay within a few ulps."""
    s, e = _two_sum(p[0], q[0])
    return s, (p[1] + q[1]) + e


def _slot(start):
    """The slot of a signed stack start (``~slot``, i.e. ``-slot - 1``, marks a barrier)."""
    return jnp.where(start < 0, ~start, start)


def _finish_sequential(kind: Kind, st: Stats, b_log: bool, blk: _Blocks) -> jax.Array:
    """Stack PAV over the blocks of the unfinished rows, all rows laid end to end."""
    bsz, n = blk.a.shape
    size = bsz * n
    pos = lax.broadcasted_iota(jnp.int32, blk.a.shape, 1)
    live = ~blk.done & (blk.count > 0)
    # nxt[i]: the next slot to visit after slot i (size when none): the next block of its row, or
    # the first block of the next unfinished row (a running minimum over rows only).
    row_first = jnp.where(live, jnp.arange(bsz, dtype=jnp.int32) * n, size)
    later = lax.cummin(
        jnp.concatenate([row_first[1:], jnp.full((1,), size, jnp.int32)]), reverse=True
    )
    slot = jnp.arange(size, dtype=jnp.int32).reshape(bsz, n)
    nxt = jnp.where(pos + 1 < blk.count[:, None], slot + 1, later[:, None]).ravel()
    first = jnp.min(row_first)

    slots = _Slots(
        blk.a.ravel(),
        blk.b.ravel(),
        (blk.bar | (pos == 0)).ravel(),
        nxt,
        blk.first.ravel(),
        jnp.take_along_axis(st.za, blk.first, axis=1).ravel(),
        jnp.broadcast_to(st.ca, blk.a.shape).ravel(),
        jnp.broadcast_to(st.ra, blk.a.shape).ravel(),
        jnp.take_along_axis(st.zb, blk.first, axis=1).ravel(),
        jnp.broadcast_to(st.cb, blk.a.shape).ravel(),
        jnp.broadcast_to(st.rb, blk.a.shape).ravel(),
    )
    start, top = _stack_pav(kind, b_log, slots, first)
    item = jnp.where(jnp.arange(size, dtype=jnp.int32) < top, start, size)
    row = jnp.where(item < size, item // n, bsz)
    elem = jnp.take(blk.first.ravel(), item, mode="fill", fill_value=n)
    starts = jnp.where(blk.done[:, None], _starts_of(blk), False)
    return starts.at[row, elem].set(True, mode="drop")


def _solve(kind: Kind, b_log: bool, method: str, st: Stats, barrier):
    if method == "sequential":  # an empty loop when every row is done
        blk = _rounds(kind, st, b_log, barrier, SEQUENTIAL_ROUNDS)[1]
        return _finish_sequential(kind, st, b_log, blk)
    blk = _rounds(kind, st, b_log, barrier, ROUNDS)[1]
    return merge_tree.finish(kind, st, b_log, blk)


@_sharding.batch_local(item_ndims=(1,) * 7, out_item_ndims=(1,), name="x")
def _structure(za, ca, ra, zb, cb, rb, barrier, *, kind: Kind, b_log: bool, method: str):
    """Block starts of rows with any leading axes (run per batch shard, vmap folded in)."""
    shape = za.shape
    st = Stats(*(t.reshape(-1, t.shape[-1]) for t in (za, ca, ra, zb, cb, rb)))
    barrier = barrier.reshape(-1, shape[-1])
    if method == "auto" and dense.use(kind, st.za.shape):  # short rows: no loop at all
        out = dense.block_starts(st, barrier)
    elif method != "auto":
        out = _solve(kind, b_log, method, st, barrier)
    else:
        out = lax.platform_dependent(
            st,
            barrier,
            cpu=functools.partial(_solve, kind, b_log, "sequential"),
            default=functools.partial(_solve, kind, b_log, "parallel"),
        )
    return out.reshape(shape)


def affine(z, c=None, r=None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """An affine item statistic ``c * z + r * i`` (``i`` the position along the last axis).

    ``c`` and ``r`` are ``[..., 1]`` (or None: 1 and 0).
    """
    col = z.shape[:-1] + (1,)
    c = jnp.ones(col, z.dtype) if c is None else jnp.broadcast_to(c, col).astype(z.dtype)
    r = jnp.zeros(col, z.dtype) if r is None else jnp.broadcast_to(r, col).astype(z.dtype)
    return z, c, r


def block_starts(
    kind: Kind,
    a: tuple[jax.Array, jax.Array, jax.Array],
    b: jax.Array | tuple[jax.Array, jax.Array, jax.Array],
    method: str,
    barrier: jax.Array | None = None,
) -> jax.Array:
    """Block-start flags ``[..., n]`` of the decreasing isotonic solution (no gradient flows).

    ``a`` is an ``affine`` statistic (l2: the values y; kl: the first statistic). ``b``: the
    weights ``[..., n]`` (l2), or the second statistic, ``affine`` or, as a plain array of
    positive values ``z``, ``log z`` (kl). ``barrier`` (optional, bool like ``a``) marks items
    that must start a block; the first item of every row always does.
    """
    za, ca, ra = (lax.stop_gradient(t) for t in a)
    b_log = not isinstance(b, tuple)
    zb, cb, rb = (b, ca, ra) if b_log else b
    zb, cb, rb = (lax.stop_gradient(t) for t in (zb, cb, rb))
    first = lax.broadcasted_iota(jnp.int32, za.shape, za.ndim - 1) == 0
    barrier = first if barrier is None else barrier | first
    if za.size == 0:
        return barrier
    return _structure(
        za, ca, ra, zb, cb, rb, barrier, kind=kind, b_log=b_log and kind != "l2", method=method
    )
