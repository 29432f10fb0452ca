r"""The p-norm projections onto the permutahedron (private): soft sort and rank for p = 3/2, 4/3.

Sander et al. (2023) regularize the projection with $\Psi(\mu) = \sum_i |\mu_i|^p / p$,

$$
P_\Psi(z, w) = \arg\max_{\mu \in \mathcal{P}(w)} \langle z, \mu\rangle - \Psi(\mu),
$$

whose conjugate is $\sum_i |t_i|^q / q$ with $1/p + 1/q = 1$. As for L2 and KL (Blondel et
al., 2020), with $z$ sorted decreasingly and $w$ sorted decreasingly, the solution is
$\mu_i = \phi(z_i - v_i)$, $\phi(t) = \operatorname{sign}(t) |t|^r$, $r = q - 1 = 1/(p - 1)$
($r = 2$ for ``"p=3/2"``, $r = 3$ for ``"p=4/3"``), where $v$ is the decreasing isotonic
solution of $\min_v \sum_i |z_i - v_i|^q / q + w_i v_i$. On each block $B$ of $v$ its value
$\gamma_B$ is the root of the monotone equation

$$
\textstyle\sum_{i \in B} \phi(z_i - \gamma_B) = \sum_{i \in B} w_i .
$$

- $r = 3$: centred on the block's mean, a depressed cubic with one real root (``_roots``), from
  the block's centred moments, then one Newton step.
- $r = 2$: $\phi$ changes form at $t = 0$, but $z$ is sorted within the block, so the items
  above the root are a prefix of it: the equation at each item's own $z_j$ (from the block's
  prefix sums) says which prefix, and on it the equation is a quadratic, solved in the form
  without cancellation, relative to the prefix's last item.

The block structure comes from pooling *every* pair of adjacent violating blocks at once and
repeating until none is left (exact for any separable convex objective; each round is O(n) work
over the row, soft sort and rank inputs take a few rounds). The structure is integer data; the
block values are computed in float64 relative to each block's first item, so float32 inputs keep
their digits. The derivative is implicit, O(n) per row: with $g_i = \phi'(t_i)$,
$d\gamma_B = (\sum_B g\,dz - \sum_B dw) / \sum_B g$ and $d\mu_i = g_i (dz_i - d\gamma_B)$
(``custom_jvp``; its tangent calls the op itself, so it differentiates again).

Reference: Sander, Puigcerver, Djolonga, Peyré, Blondel, Fast, Differentiable and Sparse Top-k:
a Convex Analysis Perspective, ICML 2023, arXiv:2302.01425.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from softops import _sharding
from softops._isotonic.segments import segmented_scan
from softops._roots import depressed_cubic
from softops._sharding import run_bounds, scatter_last, take_last

POWERS = {"p=3/2": 2, "p=4/3": 3}


def _block_sums(ids, *xs):
    """Each item's block sum of each of ``xs`` (float64: a sequential sum rounds far below f32)."""
    return tuple(take_last(scatter_last(x.shape, x.dtype, ids, x, op="add"), ids) for x in xs)


def _roots(d, w, starts, power: int):
    """Per item: its block's root ``delta`` (relative to the block's first item) and ``t``.

    ``d``: the items' ``z`` minus their block's first ``z`` (<= 0, non-increasing in the block);
    ``t = d - delta``, so ``phi(t)`` sums to ``w`` over each block.
    """
    ids, pivot, end = run_bounds(starts)
    m = (end - pivot).astype(d.dtype)
    if power == 3:
        (sd, sw) = _block_sums(ids, d, w)
        mean = sd / m
        c = d - mean
        s1, s2, s3 = _block_sums(ids, c, c * c, c * c * c)
        x = depressed_cubic(3 * s2 / m, (sw - s3) / m)
        # one Newton step on sum (c - x)^3 - W, with the rounding of sum c kept
        h = s3 - x * (3 * s2 - x * (3 * s1 - m * x)) - sw
        dh = -3 * (s2 - x * (2 * s1 - m * x))
        x = jnp.where(dh < 0, x - h / jnp.where(dh < 0, dh, -1), x)
        return mean + x, c - x
    pos = lax.broadcasted_iota(jnp.int32, d.shape, d.ndim - 1)
    (p1, _), (p2, _) = segmented_scan(starts, (d, d * d))
    t1, t2, sw = _block_sums(ids, d, d * d, w)
    before = (pos - pivot).astype(d.dtype)
    after = (end - 1 - pos).astype(d.dtype)
    a1, a2, b1, b2 = p1 - d, p2 - d * d, t1 - p1, t2 - p2
    # the equation at z_j: sum over the items above j of (d - d_j)^2, minus those below, minus W
    f = (a2 - d * (2 * a1 - d * before)) - (b2 - d * (2 * b1 - d * after)) - sw
    count = _block_sums(ids, (f <= 0).astype(jnp.int32))[0]  # the prefix at or above the root
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
    den = b + jnp.sqrt(jnp.maximum(b * b - a * c0, 0))
    y = jnp.where(den > 0, c0 / jnp.where(den > 0, den, 1), 0)  # the root with slope < 0
    return ref + y, e - y


def _phi(t, power: int):
    return t * t * t if power == 3 else t * jnp.abs(t)


def _gap(za, ca, ra, f, g):
    """``z_g - z_f`` for ``z = ca * za + ra * i`` (float64, exact for float32 inputs)."""
    return ca * (take_last(za, g) - take_last(za, f)) + ra * (g - f).astype(za.dtype)


def _to64(*xs):
    return tuple(x.astype(jnp.float64) for x in xs)


@_sharding.batch_local(item_ndims=(1,) * 5, out_item_ndims=(1,), name="x")
def _structure(za, ca, ra, w, barrier, *, power: int):
    """Block starts: every adjacent violating pair of blocks pooled at once, until none is left."""
    shape = za.shape
    with jax.enable_x64(True):
        za, ca, ra, w = (t.reshape(-1, t.shape[-1]) for t in _to64(za, ca, ra, w))
        barrier = barrier.reshape(-1, shape[-1])
        pos = lax.broadcasted_iota(jnp.int32, za.shape, 1)
        barrier = barrier | (pos == 0)

        def body(state):
            starts, _ = state
            pivot = run_bounds(starts)[1]
            delta = _roots(_gap(za, ca, ra, pivot, pos), w, starts, power)[0]
            left = jnp.maximum(pos - 1, 0)
            prev_pivot, prev_delta = take_last(pivot, left), take_last(delta, left)
            # the left block's value at or below the right one's: they pool
            viol = starts & ~barrier & (prev_delta <= _gap(za, ca, ra, prev_pivot, pivot) + delta)
            return starts & ~viol, jnp.any(viol)

        init = _sharding.like_vma((jnp.ones(za.shape, bool), jnp.asarray(True)), za)
        starts = lax.while_loop(lambda s: s[1], body, init)[0]
    return starts.reshape(shape)


@_sharding.batch_local(item_ndims=(1,) * 5, out_item_ndims=(1,), name="x")
def _values(za, ca, ra, w, starts, *, power: int):
    dtype = za.dtype
    with jax.enable_x64(True):
        za, ca, ra, w = _to64(za, ca, ra, w)
        pos = lax.broadcasted_iota(jnp.int32, za.shape, za.ndim - 1)
        pivot = run_bounds(starts)[1]
        t = _roots(_gap(za, ca, ra, pivot, pos), w, starts, power)[1]
        return _phi(t, power).astype(dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(5,))
def _project(za, ca, ra, w, starts, power):
    return _values(za, ca, ra, w, starts, power=power)


@_project.defjvp
def _project_jvp(power, primals, tangents):
    za, ca, ra, w, starts = primals
    dza, dca, dra, dw, _ = tangents
    out = _project(za, ca, ra, w, starts, power)
    pos = lax.broadcasted_iota(za.dtype, za.shape, za.ndim - 1)
    dz = dca * za + ca * dza + dra * pos
    ids, pivot, end = run_bounds(starts)

    def bsum(x):
        return take_last(scatter_last(x.shape, x.dtype, ids, x, op="add"), ids)

    # phi'(t) from |t| = |out|^(1/r), with a zero derivative at out = 0: an exact zero (a block
    # of one item of weight 0) stays exactly 0 nearby, so every derivative of it is 0
    nonzero = out != 0
    mag = jnp.abs(jnp.where(nonzero, out, 1))
    g = jnp.where(nonzero, 3 * jnp.cbrt(mag) ** 2 if power == 3 else 2 * jnp.sqrt(mag), 0)
    sg = bsum(g)
    share = jnp.where(sg > 0, g / jnp.where(sg > 0, sg, 1), 1 / (end - pivot).astype(out.dtype))
    gdz = g * dz
    return out, gdz - share * (bsum(gdz) - bsum(dw))


def project(za, ca, ra, w, barrier, regularization: str) -> jax.Array:
    """``mu = phi(z - v)`` in sorted order, rows ``[..., n]``, for ``z = ca * za + ra * i``.

    ``z`` non-increasing along each row between barriers, ``w`` the weights sorted decreasingly
    (``ca, ra``: ``[..., 1]``); ``barrier`` (bool or None) marks items that start a block.
    """
    power = POWERS[regularization]
    ca, ra = (jnp.broadcast_to(c, za.shape[:-1] + (1,)).astype(za.dtype) for c in (ca, ra))
    w = w.astype(za.dtype)
    if barrier is None:
        barrier = jnp.zeros(za.shape, bool)
    if za.size == 0:
        return jnp.zeros_like(za)
    stop = lax.stop_gradient
    starts = _structure(stop(za), stop(ca), stop(ra), stop(w), barrier, power=power)
    return _project(za, ca, ra, w, starts, power)
