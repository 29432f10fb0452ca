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

The block structure comes from vectorized rounds that pool every run of adjacent violating
blocks at once, then stack PAV over the blocks they leave (``pnorm_stack``); for p = 3/2 the
rounds re-check the stack's result with block-local sums. The structure is integer data; the
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
from softops._isotonic import pnorm_stack
from softops._isotonic.pnorm_stack import block_roots, pool_round
from softops._sharding import run_bounds, scatter_last, take_last

POWERS = {"p=3/2": 2, "p=4/3": 3}


def _phi(t, power: int):
    return t * t * t if power == 3 else t * jnp.abs(t)


def _gap(za, ca, ra, f, g):
    """``z_g - z_f`` for ``z = ca * za + ra * i`` (float64, exact for float32 inputs)."""
    return ca * (take_last(za, g) - take_last(za, f)) + ra * (g - f).astype(za.dtype)


def _any(round_out):
    """(pooled starts, whether any row pooled) from ``pool_round``'s output."""
    return round_out[0], jnp.any(round_out[1])


def _to64(*xs):
    return tuple(x.astype(jnp.float64) for x in xs)


@_sharding.batch_local(item_ndims=(1,) * 5, out_item_ndims=(1,), name="x")
def _structure(za, ca, ra, w, barrier, *, power: int):
    """Block starts by stack PAV (``pnorm_stack``).

    For p = 3/2, rounds that pool every adjacent violating pair at once, from block-local sums,
    then check the stack's structure and pool what its rounding left apart (usually one round).
    """
    shape = za.shape
    with jax.enable_x64(True):
        za, ca, ra, w = (t.reshape(-1, t.shape[-1]) for t in _to64(za, ca, ra, w))
        barrier = barrier.reshape(-1, shape[-1])
        pos = lax.broadcasted_iota(jnp.int32, za.shape, 1)
        barrier = barrier | (pos == 0)

        d = _gap(za, ca, ra, jnp.zeros_like(pos), pos)  # z relative to the row's first item
        starts = pnorm_stack.block_starts(d, w, barrier, power)
        if power == 2:  # the stack's prefix sums round at the row's scale: re-check locally
            init = _sharding.like_vma((starts, jnp.asarray(True)), za)
            starts = lax.while_loop(
                lambda s: s[1], lambda s: _any(pool_round(d, w, s[0], barrier, power)), init
            )[0]
    return starts.reshape(shape)


@_sharding.batch_local(item_ndims=(1,) * 5, out_item_ndims=(1,), name="x")
def _values(za, ca, ra, w, starts, *, power: int):
    """``phi(z - v)`` from the block starts (rows with any leading axes)."""
    shape, dtype = za.shape, za.dtype
    with jax.enable_x64(True):
        za, ca, ra, w = (t.reshape(-1, t.shape[-1]) for t in _to64(za, ca, ra, w))
        starts = starts.reshape(za.shape)
        pos = lax.broadcasted_iota(jnp.int32, za.shape, 1)
        pivot = run_bounds(starts)[1]
        t = block_roots(_gap(za, ca, ra, pivot, pos), w, starts, power)[1]
        return _phi(t, power).astype(dtype).reshape(shape)


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
