"""Block algebra shared by the isotonic solvers (private): statistics, values, segment reductions.

====  =====================  ===========================  ==================
kind  per-element (a, b)     combine two blocks           block value
====  =====================  ===========================  ==================
l2    (weight * y, weight)   (a1 + a2, b1 + b2)           a / b
kl    (s, w)                 (logaddexp, logaddexp)       a - b
====  =====================  ===========================  ==================

``kl_desc`` is ``kl`` for statistics that do not increase along a row between barriers (soft
sort, soft rank, projections): the same blocks and values; only the stack PAV carries them
differently (`softops._isotonic.pav._stack_pav`).
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax

Kind = Literal["l2", "kl", "kl_desc"]  # kl_desc: kl, statistics nonincreasing along rows


def combine(kind: Kind, p, q):
    """Statistics of the union of two blocks."""
    return p + q if kind == "l2" else jnp.logaddexp(p, q)


def value(kind: Kind, a, b):
    """Block value from its statistics."""
    return a / b if kind == "l2" else a - b


def segment_combine(kind: Kind, xs: tuple[jax.Array, ...], ids: jax.Array, num: int) -> tuple:
    """Per-segment sum (l2) or logsumexp (kl) of each array of ``xs`` (all [B, n], one dtype).

    Segment ``j`` of row ``r`` lands at ``[r, j]``; ``ids`` are non-decreasing along rows and
    values ``>= num`` are dropped. L2 sums travel together in one scatter (stacking the KL
    statistics measured slower: their shifts make copies).
    """
    bsz, n = ids.shape
    rows = lax.broadcasted_iota(ids.dtype, ids.shape, 0)
    flat = jnp.where(ids < num, ids + rows * num, bsz * num).ravel()
    seg = functools.partial(jax.ops.segment_sum, segment_ids=flat, num_segments=bsz * num)
    if kind == "l2":
        x = jnp.stack(xs, axis=-1).reshape(bsz * n, len(xs))
        out = seg(x).reshape(bsz, num, len(xs))
        return tuple(out[..., i] for i in range(len(xs)))

    def lse(x):
        m = jax.ops.segment_max(lax.stop_gradient(x).ravel(), flat, num_segments=bsz * num)
        m = jnp.where(jnp.isfinite(m), m, 0).reshape(bsz, num)
        m_el = jnp.take_along_axis(m, jnp.minimum(ids, num - 1), axis=-1)
        return m + jnp.log(seg(jnp.exp(x - m_el).ravel()).reshape(bsz, num))

    return tuple(lse(x) for x in xs)
