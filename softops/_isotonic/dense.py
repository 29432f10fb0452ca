r"""Loop-free block structure of the decreasing L2 isotonic problem for short rows (private).

For short rows the fixed cost of the PAV solvers (``pav``: a ``while_loop`` of pooling
rounds, then a second loop) dominates a soft sort/rank call. Here the structure comes from the
exact min–max characterization instead, O(n^2) data-parallel work with no control flow.

With per-element statistics ``(a, b)`` (``a = w * y``, ``b = w > 0``) and
$V(j, k) = \sum_{i=j}^{k} a_i / \sum_{i=j}^{k} b_i$ the mean of items ``j..k``, the
decreasing isotonic solution is $v_i = \min_{j \le i} \max_{k \ge i} V(j, k)$; its blocks
are the pieces of the least concave majorant of the cumulative-sum diagram. Item ``m`` starts a
block iff point ``m`` of that diagram is a strict vertex of the majorant, i.e. iff every chord
over it passes strictly below it:

$$
\min_{j < m} V(j, m - 1) > \max_{l \ge m} V(m, l).
$$

(PAV pools equal neighbours, so equality pools too.) Barriers split a row into independent
segments: ``j`` and ``l`` range over the segment of ``m`` only, and every barrier starts a block.
The structure is integer data derived from comparisons of input statistics, exactly like the PAV's
own pooling tests; no solution value is ever compared with a tolerance.

The segment sums are differences of prefix sums computed in float64, whose rounding is far below
that of the float32 PAV; for float64 rows they round like the PAV's own block sums up to a factor
of about n (only exact-arithmetic ties, where the derivative jumps, can be decided either way).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from softops import _compat
from softops._isotonic.blocks import Stats

MAX_N = 100  # longest row solved here (no gain measured at 128)
MAX_WORK = 2**14  # largest batch * n * n solved here (the PAV is faster beyond)


def use(kind: str, shape: tuple) -> bool:
    """Whether rows of ``shape`` [..., n] go through the dense solver (static)."""
    if not _compat.is_static(*shape):  # a symbolic batch or length: the solver for any size
        return False
    n = shape[-1]
    return kind == "l2" and 2 <= n <= MAX_N and math.prod(shape[:-1]) * n * n <= MAX_WORK


def block_starts(st: Stats, barrier: jax.Array) -> jax.Array:
    """Block-start flags [B, n] of the decreasing L2 isotonic problem (``barrier[:, 0]`` true).

    ``st``: the values ``y = ca * za + ra * i`` and the weights ``zb`` (``blocks.Stats``),
    formed in float64 (exact products of float32 numbers).
    """
    with jax.enable_x64(True):
        za, ca, ra, zb = (t.astype(jnp.float64) for t in st[:4])
        pos = lax.broadcasted_iota(jnp.float64, za.shape, 1)
        return _starts(zb * (ca * za + ra * pos), zb, barrier)


def _prefix(x):
    x = x.astype(jnp.float64)
    zero = jnp.zeros(x.shape[:-1] + (1,), x.dtype)
    return jnp.concatenate([zero, jnp.cumsum(x, axis=-1)], axis=-1)  # [B, n + 1]


def _starts(a, b, barrier):
    pa, pb = _prefix(a), _prefix(b)
    seg = jnp.cumsum(barrier, axis=-1, dtype=jnp.int32)
    shape = barrier.shape + barrier.shape[-1:]  # [B, n, n]
    row = lax.broadcasted_iota(jnp.int32, shape, 1)
    col = lax.broadcasted_iota(jnp.int32, shape, 2)
    same = seg[:, :, None] == seg[:, None, :]
    # low[k] = min over j <= k of V(j, k): rows k, columns j (reduced along the last axis).
    v_end = (pa[:, 1:, None] - pa[:, None, :-1]) / (pb[:, 1:, None] - pb[:, None, :-1])
    low = jnp.min(jnp.where(same & (col <= row), v_end, jnp.inf), axis=-1)
    # high[m] = max over l >= m of V(m, l): rows m, columns l.
    v_start = (pa[:, None, 1:] - pa[:, :-1, None]) / (pb[:, None, 1:] - pb[:, :-1, None])
    high = jnp.max(jnp.where(same & (col >= row), v_start, -jnp.inf), axis=-1)
    cut = low[:, :-1] > high[:, 1:]  # NaN rows: no cut (their outputs are NaN anyway)
    return barrier | jnp.concatenate([jnp.zeros_like(cut[:, :1]), cut], axis=-1)
