r"""Packed lists in one row: compact list ids, per-list sums and a soft top-n cutoff (private).

A row ``[..., n]`` holds several lists told apart by integer ids (``segments=``). `compact` maps
the ids of each row to ``0, 1, ...`` in increasing id order (one stable sort); a per-segment
reduction is then one scatter into ``n`` slots and a gather back (`Slots`): O(n), with batching
dimensions (partitioned along the batch like every other gather/scatter of the ops).

`cutoff` is the soft top-n selection of every segment: $A_i = \sigma((a_i - \tau_s)/T)$ with one
threshold $\tau_s$ per segment fixed by $\sum_{i \in s} A_i = \min(n, c_s)$, $c_s$ the number of
finite $a_i$ of the segment (items with $a_i = -\infty$ are outside every list and get 0; a
segment of at most n items keeps all of them, $A = 1$). The thresholds come from a safeguarded
Newton iteration on all segments at once (reference semantics for one segment:

    lo, hi = min(a) - T * (log(c) + 1), max(a) + T * (log(c) + 1)
    tau = (lo + hi) / 2
    while abs(F(tau)) > tol:  # F(tau) = sum(sigmoid((a - tau) / T)) - n, decreasing
        lo, hi = (tau, hi) if F(tau) > 0 else (lo, tau)
        step = tau + T * F(tau) / sum(sigmoid'((a - tau) / T))
        tau = step if lo < step < hi else (lo + hi) / 2

run on values without gradient, per batch shard), and the derivative from the implicit function
theorem: with $\sigma'_i = A_i(1 - A_i)$,
$dA_i = \sigma'_i/T\,(da_i - \textstyle\sum_s \sigma' da / \sum_s \sigma')$, O(n), no loop.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from softops import _sort
from softops._sharding import (
    batch_local,
    count_last,
    like_vma,
    run_bounds,
    scatter_last,
    take_last,
)


class Slots(NamedTuple):
    """The lists of rows ``[..., n]``: each item's compact segment id (``0 ..`` per row).

    ``ids`` None: one list per row (reductions are plain sums over the row, one slot).
    """

    ids: jax.Array | None  # int32 [..., n]
    n: int

    def sum(self, x: jax.Array) -> jax.Array:
        """Per-list sums of ``x`` [..., n], at slot ``j`` for list ``j`` (0 past the last)."""
        if self.ids is None:
            return jnp.sum(x, axis=-1, keepdims=True)
        return scatter_last(x.shape, x.dtype, self.ids, x, op="add")

    def max(self, x: jax.Array) -> jax.Array:
        """Per-list maxima of ``x`` at their slots (-inf past the last list)."""
        if self.ids is None:
            return jnp.max(x, axis=-1, keepdims=True, initial=-jnp.inf)
        return scatter_last(x.shape, x.dtype, self.ids, x, op="max", fill=-jnp.inf)

    def at(self, per_slot: jax.Array) -> jax.Array:
        """Each item's value of its list's slot."""
        if self.ids is None:
            return jnp.broadcast_to(per_slot, per_slot.shape[:-1] + (self.n,))
        return take_last(per_slot, self.ids)

    def total(self, x: jax.Array) -> jax.Array:
        """Each item's list sum of ``x``."""
        return self.at(self.sum(x))


def compact(ids: jax.Array) -> Slots:
    """Compact ids ``0, 1, ...`` per row, in increasing order of the given ids [..., n]."""
    order = _sort.argsort_ids(ids)
    ids_sorted = take_last(ids, order)
    new = jnp.concatenate(
        [jnp.ones_like(ids_sorted[..., :1], bool), ids_sorted[..., 1:] != ids_sorted[..., :-1]],
        axis=-1,
    )
    gid = count_last(new) - 1
    return Slots(scatter_last(ids.shape, jnp.int32, order, gid), ids.shape[-1])


def slots_of(ids: jax.Array | None, shape) -> Slots:
    """`compact` of ``ids``, or one list per row when ``ids`` is None."""
    return Slots(None, shape[-1]) if ids is None else compact(ids)


def row_mean(per_slot: jax.Array, present: jax.Array) -> jax.Array:
    """The mean over the lists that are ``present`` of per-slot values ``[..., slots]``: ``[...]``.

    0 for a row without any list.
    """
    count = jnp.sum(present, axis=-1)
    total = jnp.sum(jnp.where(present, per_slot, 0), axis=-1)
    return total / jnp.maximum(count, 1).astype(total.dtype)


def positions(ids_sorted: jax.Array) -> jax.Array:
    """0-based position of each item in its list, for rows sorted by list (``ids_sorted``)."""
    iota = lax.broadcasted_iota(jnp.int32, ids_sorted.shape, ids_sorted.ndim - 1)
    change = ids_sorted[..., 1:] != ids_sorted[..., :-1]
    starts = jnp.concatenate([jnp.ones_like(ids_sorted[..., :1], bool), change], axis=-1)
    return iota - run_bounds(starts)[1]


def present(slots: Slots, valid: jax.Array | None, shape) -> jax.Array:
    """Per slot: whether the list exists and has at least one valid item (bool)."""
    v = jnp.ones(shape, jnp.int32) if valid is None else valid.astype(jnp.int32)
    return slots.sum(v) > 0


# ------------------------------------------------------------------------ the soft top-n cutoff
def _sig_parts(z):
    """sigmoid(z) and sigmoid'(z) = sigmoid(z) sigmoid(-z), without cancellation."""
    e = jnp.exp(-jnp.abs(z))
    r = 1 / (1 + e)
    return jnp.where(z >= 0, r, e * r), e * r * r


@batch_local(item_ndims=(1, 1, 1, 1), out_item_ndims=(1,), name="a")
def _thresholds(a, finite, ids, target, *, temperature: float, max_iter: int):
    """Per-item threshold of its segment (stopped gradient), for segments with target < count."""
    dtype = a.dtype
    slots = Slots(ids, ids.shape[-1])
    t = jnp.asarray(temperature, dtype)
    fa = jnp.where(finite, a, 0)
    count = slots.sum(finite.astype(dtype))
    pad = t * (jnp.log(jnp.maximum(count, 1)) + 1)
    lo = -slots.max(jnp.where(finite, -a, -jnp.inf)) - pad
    hi = slots.max(jnp.where(finite, a, -jnp.inf)) + pad
    live = (count > target) & jnp.isfinite(lo) & jnp.isfinite(hi)
    lo, hi = jnp.where(live, lo, 0), jnp.where(live, hi, 0)
    tol = 64 * float(jnp.finfo(dtype).eps) * (target + 1)
    ulp = 8 * float(jnp.finfo(dtype).eps)

    def residual(tau):
        s, d = _sig_parts((fa - slots.at(tau)) / t)
        return slots.sum(jnp.where(finite, s, 0)) - target, slots.sum(jnp.where(finite, d, 0))

    def done_of(f, lo, hi, tau):
        flat = (hi - lo) <= ulp * jnp.maximum(jnp.abs(tau), 1)
        return ~live | (jnp.abs(f) <= tol) | flat | jnp.isnan(f)

    def cond(state):
        it, _, _, _, done = state
        return (it < max_iter) & ~jnp.all(done)

    def body(state):
        it, tau, lo, hi, done = state
        f, d = residual(tau)
        lo = jnp.where(f > 0, tau, lo)
        hi = jnp.where(f > 0, hi, tau)
        step = tau + t * f / jnp.where(d > 0, d, 1)
        step = jnp.where((d > 0) & (step > lo) & (step < hi), step, 0.5 * (lo + hi))
        done_now = done_of(f, lo, hi, tau)
        tau = jnp.where(done | done_now, tau, step)
        return it + 1, tau, lo, hi, done | done_now

    state = (jnp.int32(0), 0.5 * (lo + hi), lo, hi, ~live)
    _, tau, _, _, _ = lax.while_loop(cond, body, like_vma(state, a))
    return slots.at(tau)


@functools.partial(jax.custom_jvp, nondiff_argnums=(5,))
def _cutoff_at(a, finite, ids, keep_all, tau, temperature):
    """The cutoff at the thresholds ``tau`` [..., n] (per item), with the implicit tangent."""
    z = (jnp.where(finite, a, 0) - tau) / temperature
    s = _sig_parts(z)[0]
    return jnp.where(finite, jnp.where(keep_all, 1, s), 0).astype(a.dtype)


@_cutoff_at.defjvp
def _cutoff_at_jvp(temperature, primals, tangents):
    a, finite, ids, keep_all, tau = primals
    da = jnp.where(finite, tangents[0], 0)
    out = _cutoff_at(a, finite, ids, keep_all, tau, temperature)
    dsig = jnp.where(keep_all, 0, out * (1 - out))
    slots = Slots(ids, ids.shape[-1])
    total = slots.total(dsig)
    dtau = slots.total(dsig * da) / jnp.where(total > 0, total, 1)
    return out, dsig / temperature * (da - dtau)


def cutoff(a, n: int, slots: Slots, *, temperature: float, max_iter: int = 100):
    """Soft top-``n`` of every segment of rows ``a`` [..., n_items] (see the module docstring)."""
    finite = jnp.isfinite(a) | jnp.isnan(a)  # NaN stays in its segment (and makes it NaN)
    count = slots.total(finite.astype(jnp.int32))
    keep_all = count <= n
    sg = lax.stop_gradient
    target = jnp.full(a.shape, n, a.dtype)
    ids = jnp.zeros(a.shape, jnp.int32) if slots.ids is None else slots.ids
    tau = _thresholds(sg(a), finite, ids, target, temperature=temperature, max_iter=max_iter)
    tau = jnp.where(keep_all, 0, sg(tau))
    return _cutoff_at(a, finite, ids, keep_all, tau, temperature)


def relative_scale(x: jax.Array, valid: jax.Array | None, slots: Slots) -> jax.Array:
    r"""Each item's list spread $\sigma \sqrt{12} / m$ over its ``m`` valid items (differentiable).

    The mean gap of ``m`` evenly spaced values with the standard deviation $\sigma$ of the
    segment's valid scores; 1 for segments with fewer than two valid items or no spread.
    """
    if valid is not None:
        x = jnp.where(valid, x, 0)
    v = jnp.ones(x.shape, x.dtype) if valid is None else valid.astype(x.dtype)
    m = slots.total(v)
    m_safe = jnp.maximum(m, 1)
    dev = v * (x - slots.total(v * x) / m_safe)
    var = slots.total(dev * dev) / m_safe
    ok = (m >= 2) & (var > 0)
    std = jnp.sqrt(jnp.where(ok, var, 1))
    return jnp.where(ok, std * math.sqrt(12) / m_safe, 1)
