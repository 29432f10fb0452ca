"""Private kernels for decreasing isotonic regression: the block structure of the solution.

Both regularizations of Blondel et al. (2020) pool adjacent blocks by the same rule; they differ in
the statistics a block carries and in how two blocks combine:

====  =====================  ===========================  ==================
kind  per-element (a, b)     combine two blocks           block value
====  =====================  ===========================  ==================
l2    (weight * y, weight)   (a1 + a2, b1 + b2)           a / b
kl    (s, w)                 (logaddexp, logaddexp)       a - b
====  =====================  ===========================  ==================

``kl_desc`` is ``kl`` for statistics that do not increase along a row between barriers (soft
sort, soft rank, projections): the same blocks and values; only the stack PAV carries them
differently (`softops._isotonic.pav._stack_pav`).

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
from softops._isotonic.blocks import Kind, combine, segment_combine, value

Method = Literal["auto", "sequential", "parallel"]
METHODS: tuple[Method, ...] = get_args(Method)
ROUNDS = 4  # pooling rounds before the merge tree of the parallel solver
SEQUENTIAL_ROUNDS = 1  # before the stack PAV: on CPU a second round costs more than it saves


class _Blocks(NamedTuple):
    """Block-space state of the rounds.

    Block ``j < count[r]`` of row ``r`` has statistics ``a, b``, starts at element ``first``, and
    ``bar`` says whether it starts at a barrier; ``done`` rows are solved.
    """

    a: jax.Array
    b: jax.Array
    first: jax.Array
    bar: jax.Array
    count: jax.Array  # type: ignore[assignment]  # a field named like tuple.count
    done: jax.Array


def _violations(kind: Kind, blk: _Blocks) -> tuple[jax.Array, jax.Array]:
    """Live blocks, and whether each block (from the second) violates the order with its left."""
    pos = lax.broadcasted_iota(jnp.int32, blk.a.shape, 1)
    live = pos < blk.count[:, None]
    v = value(kind, blk.a, blk.b)
    return live, live[:, 1:] & ~blk.bar[:, 1:] & (v[:, :-1] <= v[:, 1:])


def _round(kind: Kind, blk: _Blocks) -> _Blocks:
    """Pools every run of adjacent violating blocks of every row at once.

    A row is done once its blocks no longer violate the order; that is checked on the pooled
    blocks, so a row that one round solves costs one round, not two.
    """
    n = blk.a.shape[1]
    live, viol = _violations(kind, blk)
    new = live & jnp.concatenate([jnp.ones((live.shape[0], 1), bool), ~viol], axis=1)
    ids = jnp.where(live, jnp.cumsum(new, axis=1, dtype=jnp.int32) - 1, n)
    tgt = jnp.where(new, ids, n)
    a, b = segment_combine(kind, (blk.a, blk.b), ids, n)
    # first and bar in one scatter: a barrier block's first item is stored as ~first (< 0)
    enc = _scatter_rows(tgt, jnp.where(blk.bar, ~blk.first, blk.first))
    bar = enc < 0
    first = jnp.where(bar, ~enc, enc)
    out = _Blocks(a, b, first, bar, new.sum(axis=1, dtype=jnp.int32), blk.done)
    return out._replace(done=blk.done | ~jnp.any(_violations(kind, out)[1], axis=1))


def _scatter_rows(tgt: jax.Array, x: jax.Array) -> jax.Array:
    """``out[r, tgt[r, j]] = x[r, j]`` (targets ``>= n`` dropped)."""
    rows = lax.broadcasted_iota(jnp.int32, x.shape, 0)
    return jnp.zeros_like(x).at[rows, tgt].set(x, mode="drop")


def _rounds(kind: Kind, a, b, barrier, max_rounds: int) -> tuple[jax.Array, _Blocks]:
    """Up to ``max_rounds`` pooling rounds (fewer once every row is done): (rounds run, blocks)."""
    bsz, n = a.shape
    iota = lax.broadcasted_iota(jnp.int32, a.shape, 1)
    blk = _Blocks(a, b, iota, barrier, jnp.full((bsz,), n, jnp.int32), jnp.zeros((bsz,), bool))

    def cond(state):
        it, blk = state
        return (it < max_rounds) & ~jnp.all(blk.done)

    def body(state):
        it, blk = state
        return it + 1, _round(kind, blk)

    # A loop even for one round: its carry holds the statistics as stored values. Fused into a
    # straight-line round, XLA recomputes them per use and may contract one use into an FMA
    # (a * b - m rounded once), so the KL shift x - max(x) of a singleton is not 0 (inf at 1e23;
    # an optimization_barrier did not prevent it).
    return lax.while_loop(cond, body, _sharding.like_vma((jnp.int32(0), blk), a))


def _starts_of(blk: _Blocks) -> jax.Array:
    n = blk.a.shape[1]
    pos = lax.broadcasted_iota(jnp.int32, blk.a.shape, 1)
    tgt = jnp.where(pos < blk.count[:, None], blk.first, n)
    rows = lax.broadcasted_iota(jnp.int32, tgt.shape, 0)
    return jnp.zeros(blk.a.shape, bool).at[rows, tgt].set(True, mode="drop")


def _stack_pav(kind: Kind, a, b, barrier, nxt, first):
    """Stack-based PAV over the slots ``first, nxt[first], nxt[nxt[first]], ...`` of flat arrays.

    Reference semantics (each step below is one ``while_loop`` iteration):

        stack = []
        for i in slots:  # i = first; i = nxt[i] while i < len(a)
            stack.append(block(i))
            while (len(stack) >= 2 and not barrier(stack[-1])
                   and value(stack[-2]) <= value(stack[-1])):
                stack[-2:] = [merge(stack[-2], stack[-1])]

    Returns the stack's slots (``-i - 1`` for a block starting at a barrier) and its height. Every
    step reads and writes O(1) scalars. XLA copies a loop buffer at every step (an O(n^2) loop) if
    a cheap function of a value read from it feeds another buffer's in-place update, because it
    then duplicates that read into each consumer. So every value read from the stacks passes
    through a division XLA counts as expensive and computes once (by ``one`` equal to 1 at run
    time, unknown to XLA; ``tests/test_pav.py`` checks the compiled loop for copies).

    ``"kl_desc"`` stacks hold, instead of the two logsumexps, the sums of ``exp`` of the slot
    statistics relative to the block's first slot ``f``: ``A = sum exp(a - a[f])`` and likewise
    ``B``. A merge is ``A2 + A1 * exp(a[f1] - a[f2])``: one ``exp`` per statistic and no ``log``
    (2 instead of 4 transcendentals a step, -33% time), and the sums, in ``[1, n^2]``, keep their
    relative precision where repeated ``logaddexp`` loses the digits of a large logsumexp (block
    values 3e-6 instead of 2.4e-3 from the float64 solution, float32, n = 3.2e5, stack alone).
    Nonincreasing statistics bound ``a[f1] - a[f2]`` by ``log n``, so nothing overflows.
    """
    size = a.shape[0]
    dtype = a.dtype
    tiny = jnp.asarray(2.0**-60 if dtype == jnp.float32 else 2.0**-90, dtype)
    anchored = kind == "kl_desc"

    def read(sa, sb, start, t, one_f, one_i):
        """A stack block: statistics, signed start, value, first slot's statistics (kl_desc)."""
        s = lax.div(start[t], one_i)
        if kind == "l2":
            return sa[t], sb[t], s, sa[t] / sb[t], None
        if not anchored:
            return sa[t], sb[t], s, (sa[t] - sb[t]) / one_f, None
        x, y = sa[t] / one_f, sb[t] / one_f
        f = _slot(s)
        head = a[f], b[f]
        return x, y, s, (head[0] - head[1]) + jnp.log(x / y), head

    def merged(blk2, blk1):
        (a2, b2, _, _, h2), (a1, b1, _, _, h1) = blk2, blk1
        if not anchored:
            return combine(kind, a2, a1), combine(kind, b2, b1)
        return a2 + a1 * jnp.exp(h1[0] - h2[0]), b2 + b1 * jnp.exp(h1[1] - h2[1])

    def body(st):
        i, top, start, sa, sb, _ = st
        t1, t2 = jnp.maximum(top - 1, 0), jnp.maximum(top - 2, 0)
        one_f = 1 + top.astype(dtype) * tiny  # exactly 1 (top < 2**31)
        one_i = 1 + (top >> 31)  # exactly 1 (top >= 0)
        blk1 = read(sa, sb, start, t1, one_f, one_i)
        blk2 = read(sa, sb, start, t2, one_f, one_i)
        (a1, b1, s1, v1, _), (_, _, s2, v2, _) = blk1, blk2
        merge = (top >= 2) & (s1 >= 0) & (v2 <= v1)
        push = ~merge & (i < size)
        ic = jnp.minimum(i, size - 1)
        pos = jnp.where(merge, t2, jnp.where(push, top, t1))
        ma, mb = merged(blk2, blk1)
        pa, pb = (jnp.ones((), dtype),) * 2 if anchored else (a[ic], b[ic])
        na = jnp.where(merge, ma, jnp.where(push, pa, a1))
        nb = jnp.where(merge, mb, jnp.where(push, pb, b1))
        ns = jnp.where(push, jnp.where(barrier[ic], -i - 1, i), jnp.where(merge, s2, s1))
        mi, pi = merge.astype(jnp.int32), push.astype(jnp.int32)
        return (
            jnp.where(push, nxt[ic], i),
            top - mi + pi,
            start.at[pos].set(ns),
            sa.at[pos].set(na),
            sb.at[pos].set(nb),
            merge | push,
        )

    zero = jnp.zeros((), jnp.int32)
    init = (first, zero, jnp.zeros((size,), jnp.int32), jnp.zeros_like(a), jnp.zeros_like(b), True)
    init = _sharding.like_vma(init, a)
    _, top, start, _, _, _ = lax.while_loop(lambda st: st[5], body, init)
    return _slot(start), top


def _slot(start):
    """The slot of a signed stack start (``~slot``, i.e. ``-slot - 1``, marks a barrier)."""
    return jnp.where(start < 0, ~start, start)


def _finish_sequential(kind: Kind, blk: _Blocks) -> jax.Array:
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
    start, top = _stack_pav(
        kind, blk.a.ravel(), blk.b.ravel(), (blk.bar | (pos == 0)).ravel(), nxt, first
    )
    item = jnp.where(jnp.arange(size, dtype=jnp.int32) < top, start, size)
    row = jnp.where(item < size, item // n, bsz)
    elem = jnp.take(blk.first.ravel(), item, mode="fill", fill_value=n)
    starts = jnp.where(blk.done[:, None], _starts_of(blk), False)
    return starts.at[row, elem].set(True, mode="drop")


def _solve(kind: Kind, method: str, a, b, barrier):
    if method == "sequential":  # an empty loop when every row is done
        return _finish_sequential(kind, _rounds(kind, a, b, barrier, SEQUENTIAL_ROUNDS)[1])
    return merge_tree.finish(kind, _rounds(kind, a, b, barrier, ROUNDS)[1])


@_sharding.batch_local(item_ndims=(1, 1, 1), out_item_ndims=(1,), name="x")
def _structure(a, b, barrier, *, kind: Kind, method: str):
    """Block starts of rows with any leading axes (run per batch shard, vmap folded in)."""
    shape = a.shape
    a, b, barrier = (t.reshape(-1, shape[-1]) for t in (a, b, barrier))
    if method == "auto" and dense.use(kind, a.shape):  # short rows: no loop at all
        out = dense.block_starts(a, b, barrier)
    elif method != "auto":
        out = _solve(kind, method, a, b, barrier)
    else:
        out = lax.platform_dependent(
            a,
            b,
            barrier,
            cpu=functools.partial(_solve, kind, "sequential"),
            default=functools.partial(_solve, kind, "parallel"),
        )
    return out.reshape(shape)


def block_starts(
    a: jax.Array, b: jax.Array, kind: Kind, method: str, barrier: jax.Array | None = None
) -> jax.Array:
    """Block-start flags ``[..., n]`` of the decreasing isotonic solution (no gradient flows).

    ``barrier`` (optional, bool like ``a``) marks elements that must start a block; the first
    element of every row always does.
    """
    a = lax.stop_gradient(a)
    b = lax.stop_gradient(b)
    first = lax.broadcasted_iota(jnp.int32, a.shape, a.ndim - 1) == 0
    barrier = first if barrier is None else barrier | first
    if a.size == 0:
        return barrier
    return _structure(a, b, barrier, kind=kind, method=method)
