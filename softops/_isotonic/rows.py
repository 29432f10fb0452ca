r"""Row kernels of soft sort, soft rank and the permutahedron projection (private).

All kernels take rows ``[B, n]`` (items along the last axis), a per-row strength ``eps [B]`` and an
optional validity mask, and follow Blondel et al. (2020): sort once (descending), find the block
structure of one isotonic problem (``pav``), then write every output in closed form
from its block. In sorted order, with $w$ the weights sorted in decreasing order
($w_i = n_v - i$ for ranks) and $d_i = x_i - x_{p(i)}$ the difference between an item
and the first item $p(i)$ of its block (exact: both are neighbours in sorted order),

============  ===============================================================================
op            output at sorted position i of block B
============  ===============================================================================
rank, L2      $\mathrm{mean}_B(w) + \tfrac{\pm 1}{\varepsilon}(d_i - \mathrm{mean}_B d)$
rank, KL      $\textstyle\sum_B w \cdot \mathrm{softmax}_B(\pm d/\varepsilon)_i$
sort, L2      $x_{p(i)} + \mathrm{mean}_B d \pm (w_i - \mathrm{mean}_B w)/\varepsilon$
sort, KL      $x_{p(i)} \pm (\log\sum_B e^{\pm d} + \log\mathrm{softmax}_B(w/\varepsilon)_i)$
============  ===============================================================================

These equal the paper's $z - v$ (rank) and $\rho/\varepsilon - v$ (sort) but never
subtract two large numbers, so float32 keeps its digits at any ε: a block of one item gives
exactly $w_i$ (rank) or $x_i$ (sort). JAX differentiates them exactly. The pivot
$x_{p(i)}$ cancels out of every derivative (each formula is the same function for any value
of it), so it is held constant: its gather then needs no transpose (a scatter-add in reverse
mode). Rows with a non-finite entry (among the valid ones) or a strength that is not positive and
finite give NaN. Masked entries (``valid`` False) sort after the valid ones, never pool with them,
and get 0.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from softops import _sort
from softops._checks import clean_rows, finite_rows, nan_rows
from softops._isotonic import pav
from softops._sharding import scatter_last, take_last
from softops._straight_through import with_soft_derivative


class _Segments(NamedTuple):
    """Blocks of rows given by their start flags: per item, its block id and block start."""

    ids: jax.Array
    pivot: jax.Array

    def sum(self, x):
        """Each item's block sum of ``x``."""
        return take_last(scatter_last(x.shape, x.dtype, self.ids, x, op="add"), self.ids)

    def max(self, x):
        """Each item's block maximum of ``x``."""
        out = scatter_last(x.shape, x.dtype, self.ids, x, op="max", fill=-jnp.inf)
        return take_last(out, self.ids)

    def lse(self, x):
        """Each item's block logsumexp of ``x`` (shifted by the block maximum)."""
        m = lax.stop_gradient(self.max(x))
        m = jnp.where(jnp.isfinite(m), m, 0)
        return m + jnp.log(self.sum(jnp.exp(x - m)))


def _segments(starts: jax.Array) -> _Segments:
    n = starts.shape[-1]
    ids = jnp.cumsum(starts, axis=-1, dtype=jnp.int32) - 1
    iota = lax.broadcasted_iota(jnp.int32, starts.shape, starts.ndim - 1)
    first = scatter_last(starts.shape, jnp.int32, jnp.where(starts, ids, n), iota)
    return _Segments(ids, take_last(first, ids))


def _good(x, eps, valid, w=None):
    """Rows [...] with finite valid entries of x (and w) and a positive finite strength."""
    finite = finite_rows(x, valid) if w is None else finite_rows(x, valid) & finite_rows(w, valid)
    return finite & (eps > 0) & jnp.isfinite(eps)


def _finish(out, good, out_valid):
    """NaN rows where not ``good`` (see `_checks.nan_rows`); 0 at masked outputs."""
    out = nan_rows(out, good)
    return out if out_valid is None else jnp.where(out_valid, out, 0)


def _sort_desc(x, valid):
    """Descending order of ``x``, masked entries last.

    Returns the permutation, the sorted ``x`` (masked entries set to 0, differentiable through the
    gather) and the sorted validity.
    """
    perm = _sort.argsort(x, descending=True, last=None if valid is None else ~valid)
    xs = take_last(x, perm)
    if valid is None:
        return perm, xs, None
    vs = take_last(valid, perm)
    return perm, jnp.where(vs, xs, 0), vs


def _ranks_desc(valid, shape, dtype):
    """The ranks (n_v, n_v - 1, ..., 1) at the valid sorted positions, 0 after them."""
    iota = lax.broadcasted_iota(dtype, shape, len(shape) - 1)
    if valid is None:
        return shape[-1] - iota
    return jnp.maximum(valid.sum(-1, keepdims=True).astype(dtype) - iota, 0)


def _unsort(out_sorted, perm):
    iota = lax.broadcasted_iota(jnp.int32, perm.shape, perm.ndim - 1)
    return take_last(out_sorted, scatter_last(perm.shape, jnp.int32, perm, iota))


def _structure(kind, a, b, vs, method):
    barrier = None if vs is None else ~vs
    return pav.block_starts(a, b, kind, method, barrier)


def _cuts(zs, inv_eps, wd, vs, regularization):
    """Sorted positions that cannot pool with their predecessor, as block barriers.

    A gap between sorted neighbours, in units of theta, wider than the largest difference of the
    isotonic values on either side (L2: the range of w; KL: log(sum w / min w) + log n) is never
    crossed by a block. The threshold is doubled (plus 1) so that rounding cannot cut a block.
    """
    n = zs.shape[-1]
    first = lax.broadcasted_iota(jnp.int32, zs.shape, zs.ndim - 1) == 0
    masked = jnp.zeros(zs.shape, bool) if vs is None else ~vs
    if n < 2:
        return first | masked
    inside = jnp.ones(zs.shape, bool) if vs is None else vs
    w_max = jnp.max(jnp.where(inside, wd, -jnp.inf), axis=-1, keepdims=True)
    w_min = jnp.min(jnp.where(inside, wd, jnp.inf), axis=-1, keepdims=True)
    if regularization == "l2":
        spread = w_max - w_min
    else:
        w_sum = jnp.sum(jnp.where(inside, wd, 0), axis=-1, keepdims=True)
        spread = jnp.log(w_sum) - jnp.log(w_min) + jnp.log(jnp.asarray(n, wd.dtype))
    gap = (zs[..., :-1] - zs[..., 1:]) * inv_eps
    cut = gap > 2 * spread + 1  # NaN spread or gap (bad rows, empty rows): no cut
    cut = jnp.concatenate([jnp.zeros_like(cut[..., :1]), cut], axis=-1)
    return first | masked | cut


def _project(z, inv_eps, w_desc, valid, regularization, method):
    """P(z * inv_eps, w) in the input order, rows [B, n]; ``w_desc`` sorted decreasingly."""
    perm, zs, vs = _sort_desc(z, valid)
    wd = lax.stop_gradient(w_desc)
    barrier = _cuts(lax.stop_gradient(zs), inv_eps, wd, vs, regularization)
    # theta relative to the first item of its segment (<= 0): far-apart items never pool, and
    # measuring theta from the row's maximum would round away the gaps that decide the pooling
    # (an outlier of 1e8 with gaps of 2 in float32).
    zs0 = lax.stop_gradient(zs)
    theta0 = (zs0 - take_last(zs0, _segments(barrier).pivot)) * lax.stop_gradient(inv_eps)
    if regularization == "l2":
        starts = pav.block_starts(theta0 - wd, jnp.ones_like(wd), "l2", method, barrier)
    else:
        log_w = jnp.log(jnp.where(wd > 0, wd, 1))
        starts = pav.block_starts(theta0, log_w, "kl_desc", method, barrier)
    seg = _segments(starts)
    block_sum = seg.sum
    t = (zs - take_last(zs0, seg.pivot)) * inv_eps  # theta_i - theta_p <= 0
    count = block_sum(jnp.ones_like(t))
    if regularization == "l2":
        out = (block_sum(w_desc) + t * count - block_sum(t)) / count
    else:
        e = jnp.exp(t)
        out = block_sum(w_desc) * e / block_sum(e)
    return _unsort(out, perm)


def rank_rows(
    x, eps, valid, *, descending: bool, regularization: str, method: str, straight_through=False
):
    """Soft ranks of rows ``x`` [..., n] with strengths ``eps`` [...].

    Rank 1 is the smallest unless ``descending``. ``straight_through``: the hard ranks (ties
    averaged), with the soft derivative.
    """
    good = _good(x, eps, valid)
    x, eps = clean_rows(good, x), jnp.where(good, eps, 1)
    z = -x if descending else x
    w = _ranks_desc(valid, x.shape, x.dtype)
    out = _project(z, 1 / eps[..., None], w, valid, regularization, method)
    if straight_through:
        out = with_soft_derivative(_hard_ranks(z, w, valid), out)
    return _finish(out, good, valid)


def _hard_ranks(z, w_desc, valid):
    """Hard ranks from the descending order of ``z``, tied values sharing their mean rank.

    ``w_desc`` gives the rank of each sorted position; the mean over ties is the limit of the soft
    ranks as the strength goes to 0.
    """
    perm, zs, vs = _sort_desc(lax.stop_gradient(z), valid)
    new = jnp.concatenate([jnp.ones_like(zs[..., :1], bool), zs[..., 1:] != zs[..., :-1]], -1)
    if vs is not None:
        new = new | ~vs
    seg = _segments(new)
    ranks = seg.sum(w_desc) / seg.sum(jnp.ones_like(w_desc))
    return _unsort(ranks, perm)


def project_rows(z, w, valid, *, regularization: str, method: str):
    """Projection of rows ``z`` onto the permutahedron of rows ``w`` (None: ranks n..1)."""
    good = _good(z, jnp.ones(z.shape[:-1], z.dtype), valid, w)
    if regularization == "kl" and w is not None:  # log w: a row with a valid w <= 0 is NaN
        positive = (w > 0) if valid is None else (w > 0) | ~valid
        good = good & jnp.all(positive, axis=-1)
    z = clean_rows(good, z)
    if w is None:
        w_desc = _ranks_desc(valid, z.shape, z.dtype)
    else:
        w_desc = _sort_desc(clean_rows(good, w, 1.0), valid)[1]
    out = _project(z, 1.0, w_desc, valid, regularization, method)
    return _finish(out, good, valid)


def sort_rows(
    x, eps, valid, *, descending: bool, regularization: str, method: str, straight_through=False
):
    """Soft-sorted rows ``x`` [..., n], ascending unless ``descending``.

    Masked entries trail as 0. ``straight_through``: the hard sorted values, with the soft
    derivative.
    """
    good = _good(x, eps, valid)
    x, eps = clean_rows(good, x), jnp.where(good, eps, 1)
    sign = 1.0 if descending else -1.0
    _, s, vs = _sort_desc(sign * x, valid)  # s = sign * x, sorted decreasingly
    w = _ranks_desc(vs, x.shape, x.dtype)
    inv_eps = 1 / eps[..., None]
    s0 = lax.stop_gradient(s - s[..., :1])
    a = lax.stop_gradient((w - w[..., :1]) * inv_eps)
    if regularization == "l2":
        starts = _structure("l2", a - s0, jnp.ones_like(a), vs, method)
    else:
        starts = _structure("kl_desc", a, s0, vs, method)
    seg = _segments(starts)
    block_sum, pivot = seg.sum, seg.pivot
    sp = take_last(lax.stop_gradient(s), pivot)
    d = s - sp  # <= 0
    count = block_sum(jnp.ones_like(d))
    if regularization == "l2":
        out = sp + block_sum(d) / count + (w * count - block_sum(w)) / count * inv_eps
    else:
        u = (w - take_last(w, pivot)) * inv_eps  # <= 0
        out = sp + jnp.log(block_sum(jnp.exp(d))) + u - jnp.log(block_sum(jnp.exp(u)))
    if straight_through:
        out = with_soft_derivative(s, out)
    return _finish(sign * out, good, vs)


def isotonic_rows(a, b, *, kind: str, method: str):
    """Decreasing isotonic solution from per-item statistics [..., n].

    ``l2``: ``(w * y, w)``, the weighted mean of y per block; ``kl``: ``(s, w)``,
    ``logsumexp(s_B) - logsumexp(w_B)``. Rows with a non-finite statistic give NaN.
    """
    good = jnp.all(jnp.isfinite(a) & jnp.isfinite(b), axis=-1)
    a, b = clean_rows(good, a), clean_rows(good, b, 1.0 if kind == "l2" else 0.0)
    seg = _segments(_structure(kind, a, b, None, method))
    out = seg.sum(a) / seg.sum(b) if kind == "l2" else seg.lse(a) - seg.lse(b)
    return nan_rows(out, good)
