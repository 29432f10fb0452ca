"""Private kernels for decreasing isotonic regression: the block structure of the solution.

Both regularizations of Blondel et al. (2020) pool adjacent blocks by the same rule; they differ in
the statistics a block carries and in how two blocks combine:

====  =====================  ===========================  ==================
kind  per-element (a, b)     combine two blocks           block value
====  =====================  ===========================  ==================
l2    (weight * y, weight)   (a1 + a2, b1 + b2)           a / b
kl    (s, w)                 (logaddexp, logaddexp)       a - b
====  =====================  ===========================  ==================

For ``l2`` the value is the weighted mean of ``y`` over the block; for ``kl`` it is
``logsumexp(s_B) - logsumexp(w_B)``, computed in log space so nothing overflows.

The kernels return only the *structure* of the solution: a boolean ``[B, n]`` array that marks the
first element of each block. Values, and through them every derivative, are computed from that
structure by segment reductions in :func:`block_values` (O(n), no n x n matrix, no tolerance-based
block detection). The structure is integer data, so no tangent ever enters a ``while_loop``: the ops
support ``jvp``, ``grad`` and ``hessian`` to any order.

PAV pools equal neighbours too (``value_left <= value_right``), as the reference implementations do;
at exact ties that fixes which of the valid derivatives is returned.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

Kind = Literal["l2", "kl"]
Method = Literal["auto", "sequential", "parallel"]
METHODS = ("auto", "sequential", "parallel")


def _combine(kind: Kind, p, q):
    return p + q if kind == "l2" else jnp.logaddexp(p, q)


def _value(kind: Kind, a, b):
    return a / b if kind == "l2" else a - b


def _test_value(kind: Kind, a, b, first):
    """The block value as the sequential loop compares it.

    For kl the value is a subtraction, which XLA duplicates into every in-place update of the
    loop's stacks; each update then re-reads the stacks and XLA copies them at every step (O(n^2)
    in all). A division is not duplicated, so the kl value is scaled by ``c`` in [1, 2) (from the
    block's first index) and divided by it again; ``(x * c) / c`` is ``x`` up to one rounding.
    """
    if kind == "l2":
        return a / b
    c = 1 + first.astype(a.dtype) * jnp.asarray(2.0**-31, a.dtype)
    return ((a - b) * c) / c


class _StackState(NamedTuple):
    i: jax.Array  # next element to read
    top: jax.Array  # number of blocks on the stack
    start: jax.Array  # [B * n] first element of each stacked block
    sa: jax.Array  # [B * n] block statistic a
    sb: jax.Array  # [B * n] block statistic b
    progress: jax.Array  # whether the last step changed the state


def _pav_sequential(a: jax.Array, b: jax.Array, kind: Kind) -> jax.Array:
    """Stack-based Pool-Adjacent-Violators over all rows laid end to end.

    Reference semantics for one row (each step below is one ``while_loop`` iteration)::

        stack = []
        for i in range(n):
            stack.append(block(i))
            while len(stack) >= 2 and value(stack[-2]) <= value(stack[-1]):
                stack[-2:] = [merge(stack[-2], stack[-1])]

    The B rows are processed as one sequence of B * n elements in which a block that starts a row
    never merges with the block before it. Every step reads and writes scalars (dynamic slices,
    in-place updates), so a step costs O(1) whatever B is, and the loop runs at most 2Bn + 1 steps.
    This is the fast shape on CPU; ``vmap`` of a per-row loop would instead select over the whole
    batched carry at every step.
    """
    bsz, n = a.shape
    size = bsz * n
    af, bf = a.ravel(), b.ravel()

    def body(st: _StackState) -> _StackState:
        t1 = jnp.maximum(st.top - 1, 0)
        t2 = jnp.maximum(st.top - 2, 0)
        a1, b1, s1 = st.sa[t1], st.sb[t1], st.start[t1]
        a2, b2, s2 = st.sa[t2], st.sb[t2], st.start[t2]
        merge = (
            (st.top >= 2)
            & (s1 % n != 0)
            & (_test_value(kind, a2, b2, s2) <= _test_value(kind, a1, b1, s1))
        )
        push = ~merge & (st.i < size)
        ic = jnp.minimum(st.i, size - 1)
        # A step that neither merges nor pushes rewrites the top block with its own values.
        pos = jnp.where(merge, t2, jnp.where(push, st.top, t1))
        new_a = jnp.where(merge, _combine(kind, a2, a1), jnp.where(push, af[ic], a1))
        new_b = jnp.where(merge, _combine(kind, b2, b1), jnp.where(push, bf[ic], b1))
        new_s = jnp.where(push, st.i, jnp.where(merge, s2, s1))
        merge_i, push_i = merge.astype(jnp.int32), push.astype(jnp.int32)
        return _StackState(
            i=st.i + push_i,
            top=st.top - merge_i + push_i,
            start=st.start.at[pos].set(new_s),
            sa=st.sa.at[pos].set(new_a),
            sb=st.sb.at[pos].set(new_b),
            progress=merge | push,
        )

    zero = jnp.zeros((), jnp.int32)
    init = _StackState(
        i=zero,
        top=zero,
        start=jnp.zeros((size,), jnp.int32),
        sa=jnp.zeros_like(af),
        sb=jnp.zeros_like(bf),
        progress=jnp.array(True),
    )
    st = lax.while_loop(lambda st: st.progress, body, init)
    live = jnp.arange(size, dtype=jnp.int32) < st.top
    starts = (
        jnp.zeros((size,), bool)
        .at[jnp.where(live, st.start, jnp.int32(size))]
        .set(True, mode="drop")
    )
    return starts.reshape(bsz, n)


def _segment_reduce(kind: Kind, x: jax.Array, ids: jax.Array) -> jax.Array:
    """Per-block sum (l2) or logsumexp (kl) of ``x`` [B, n]; block ``j`` of row ``r`` at [r, j]."""
    bsz, n = x.shape
    flat = (ids + n * jnp.arange(bsz, dtype=ids.dtype)[:, None]).ravel()
    seg = functools.partial(
        jax.ops.segment_sum, segment_ids=flat, num_segments=bsz * n, indices_are_sorted=True
    )
    if kind == "l2":
        return seg(x.ravel()).reshape(bsz, n)
    m = jax.ops.segment_max(
        lax.stop_gradient(x).ravel(), flat, num_segments=bsz * n, indices_are_sorted=True
    ).reshape(bsz, n)
    m = jnp.where(jnp.isfinite(m), m, jnp.zeros_like(m))
    m_el = jnp.take_along_axis(m, ids, axis=-1)
    return m + jnp.log(seg(jnp.exp(x - m_el).ravel()).reshape(bsz, n))


def block_ids(starts: jax.Array) -> jax.Array:
    """Block index of every element, from the block-start flags ``[B, n]``."""
    return jnp.cumsum(starts, axis=-1, dtype=jnp.int32) - 1


def block_values(a: jax.Array, b: jax.Array, starts: jax.Array, kind: Kind) -> jax.Array:
    """Each element's block value (the isotonic solution), differentiable in ``a`` and ``b``."""
    ids = block_ids(starts)
    val = _value(kind, _segment_reduce(kind, a, ids), _segment_reduce(kind, b, ids))
    return jnp.take_along_axis(val, ids, axis=-1)


def _pav_parallel(a: jax.Array, b: jax.Array, kind: Kind) -> jax.Array:
    """Pools every adjacent violating pair of blocks at once, and repeats until none is left.

    Reference semantics for one row::

            starts = [True] * n
            while True:
                v = block_values(starts)
                viol = [starts[i] and v[i - 1] <= v[i] for i in range(1, n)]
                if not any(viol): return starts
                starts = [s and not x for s, x in zip(starts, [False] + viol)]

    Pooling adjacent violators never separates elements that share a block in the solution, so this
    is exact. Each round is O(n) data-parallel work with no sequential dependence (the shape that
    suits GPU/TPU); random inputs take O(log n) rounds, but adversarial ones can take up to n.
    """

    def body(state):
        starts, _ = state
        v = block_values(a, b, starts, kind)
        viol = starts[:, 1:] & (v[:, :-1] <= v[:, 1:])
        return starts.at[:, 1:].set(starts[:, 1:] & ~viol), jnp.any(viol)

    init = (jnp.ones(a.shape, bool), jnp.array(True))
    starts, _ = lax.while_loop(lambda s: s[1], body, init)
    return starts


@functools.cache
def _batched_structure(kind: Kind, method: Method):
    """The structure kernel, with a vmap rule that folds vmapped axes into the kernel's batch."""

    def run(a, b):
        if method == "sequential":
            return _pav_sequential(a, b, kind)
        if method == "parallel":
            return _pav_parallel(a, b, kind)
        return lax.platform_dependent(
            a,
            b,
            cpu=functools.partial(_pav_sequential, kind=kind),
            default=functools.partial(_pav_parallel, kind=kind),
        )

    @jax.custom_batching.custom_vmap
    def structure(a, b):
        return run(a, b)

    @structure.def_vmap
    def _structure_vmap(axis_size, in_batched, a, b):
        a_batched, b_batched = in_batched
        a = a if a_batched else jnp.broadcast_to(a, (axis_size, *a.shape))
        b = b if b_batched else jnp.broadcast_to(b, (axis_size, *b.shape))
        out = structure(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]))
        return out.reshape(a.shape), True

    return structure


def block_starts(a: jax.Array, b: jax.Array, kind: Kind, method: Method) -> jax.Array:
    """Block-start flags ``[B, n]`` of the decreasing isotonic solution (no gradient flows)."""
    a = lax.stop_gradient(a)
    b = lax.stop_gradient(b)
    return _batched_structure(kind, method)(a, b)


def isotonic_decreasing(a: jax.Array, b: jax.Array, kind: Kind, method: Method) -> jax.Array:
    """Solution of the decreasing isotonic problem on ``[B, n]`` statistics ``(a, b)``."""
    if a.size == 0:
        return a
    return block_values(a, b, block_starts(a, b, kind, method), kind)
