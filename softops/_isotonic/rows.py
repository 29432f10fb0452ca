r"""Row kernels of soft sort, soft rank and the permutahedron projection (private).

All kernels take rows ``[B, n]`` (items along the last axis), a per-row strength ``eps [B]`` and an
optional validity mask, and follow Blondel et al. (2020): sort once (descending), find the block
structure of one isotonic problem (``pav``), then write every output in closed form
from its block. In sorted order, with $w$ the weights sorted in decreasing order
($w_i = n_v - i$ for ranks) and $d_i = x_i - x_{p(i)}$ the difference between an item
and the first item $p(i)$ of its block (exact: both are neighbours in sorted order),

| op       | output at sorted position $i$ of block $B$                                      |
|----------|----------------------------------------------------------------------------------|
| rank, L2 | $\mathrm{mean}_B(w) + \tfrac{\pm 1}{\varepsilon}(d_i - \mathrm{mean}_B d)$        |
| rank, KL | $\sum_B w \cdot \mathrm{softmax}_B(\pm d/\varepsilon)_i$                          |
| sort, L2 | $\mathrm{mean}_B(x) \pm (w_i - \mathrm{mean}_B w)/\varepsilon$                    |
| sort, KL | $x_{p(i)} \pm (\log(\sum_B e^{\pm d} / \sum_B e^{u}) + u_i)$                   |

with $u_i = (w_i - w_{p(i)})/\varepsilon$.

These equal the paper's $z - v$ (rank) and $\rho/\varepsilon - v$ (sort) but never
subtract two large numbers, so float32 keeps its digits at any ε: a block of one item gives
exactly $w_i$ (rank) or $x_i$ (sort). Block sums are exact or nearly (``segments``): counts and
sums of the ranks $w$ are closed forms in the block's bounds ($\mathrm{mean}_B(w) = n_v - (p + e -
1)/2$ for a block $[p, e)$; $\sum_B e^{u}$ is a geometric series), the others pairwise, and
$\mathrm{mean}_B(x)$ compensated (it can be far smaller than the values it averages). JAX
differentiates the formulas exactly. The pivot $x_{p(i)}$ cancels out of every derivative (each
formula is the same function for any value of it), so it is held constant: its gather then needs
no transpose (a scatter-add in reverse mode). Rows with a non-finite entry (among the valid ones)
or a strength that is not positive and finite give NaN. Masked entries (``valid`` False) sort
after the valid ones, never pool with them, and get 0. Segment ids (``ids``, packed lists:
`softops._isotonic.packed`) split a row into lists that never pool with each other: each is
ranked $(n_s, \dots, 1)$ over its own $n_s$ valid items, so the closed forms above hold with
$n_v$ replaced by the list's start plus $n_s$ (a bad entry in any list still makes the whole row
NaN).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from softops import _sort
from softops._checks import clean_rows, finite_rows, nan_rows
from softops._isotonic import packed, pav, pnorm
from softops._isotonic.blocks import Kind
from softops._isotonic.segments import Segments, segments
from softops._sharding import scatter_last, take_last
from softops._straight_through import with_soft_derivative


def _good(x, eps, valid, w=None):
    """Rows [...] with finite valid entries of x (and w) and a positive finite strength."""
    finite = finite_rows(x, valid) if w is None else finite_rows(x, valid) & finite_rows(w, valid)
    return finite & (eps > 0) & jnp.isfinite(eps)


def _finish(out, good, out_valid):
    """NaN rows where not ``good`` (see `_checks.nan_rows`); 0 at masked outputs."""
    out = nan_rows(out, good)
    return out if out_valid is None else jnp.where(out_valid, out, 0)


def _sort_desc(x, valid, ids=None):
    """Descending order of ``x``, masked entries last (last in their segment, with ``ids``).

    Returns the permutation, the sorted ``x`` (masked entries set to 0, differentiable through the
    gather) and the sorted validity.
    """
    last = None if valid is None else ~valid
    if ids is None:
        perm = _sort.argsort(x, descending=True, last=last)
    else:
        perm = _sort.argsort_segments(x, ids, descending=True, last=last)
    xs = take_last(x, perm)
    if valid is None:
        return perm, xs, None
    vs = take_last(valid, perm)
    return perm, jnp.where(vs, xs, 0), vs


def _groups(ids, perm, vs):
    """The segments of a row sorted by `_sort_desc` (None without segment ids)."""
    return None if ids is None else packed.groups(take_last(ids, perm), vs)


def _barrier(vs, groups):
    """Sorted positions that must start a block: masked items and segment starts (or None)."""
    barrier = None if vs is None else ~vs
    if groups is not None:
        barrier = groups.starts if barrier is None else barrier | groups.starts
    return barrier


def _ranks_desc(valid, shape, dtype, groups=None):
    """The ranks (n_v, n_v - 1, ..., 1) at the valid sorted positions, 0 after them.

    With ``groups`` (packed lists), the ranks of each segment.
    """
    if groups is not None:
        return packed.ranks_desc(groups, dtype)
    iota = lax.broadcasted_iota(dtype, shape, len(shape) - 1)
    if valid is None:
        return shape[-1] - iota
    return jnp.maximum(valid.sum(-1, keepdims=True).astype(dtype) - iota, 0)


def _unsort(out_sorted, perm):
    iota = lax.broadcasted_iota(jnp.int32, perm.shape, perm.ndim - 1)
    return take_last(out_sorted, scatter_last(perm.shape, jnp.int32, perm, iota))


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


def _valid_count(vs, shape, groups=None):
    """The number of valid items ``n_v`` of each row, ``[B, 1]`` int32 (rank ``n_v - i`` at i).

    With ``groups``, per item ``[B, n]``: its segment's start plus its segment's valid count.
    """
    if groups is not None:
        return groups.top
    if vs is None:
        return jnp.full(shape[:-1] + (1,), shape[-1], jnp.int32)
    return vs.sum(-1, keepdims=True, dtype=jnp.int32)


def _rank_mean(seg: Segments, vs, dtype, groups=None):
    """Each item's block mean of the ranks ``(n_v, ..., 1)``: ``n_v - (p + e - 1) / 2``, exact.

    ``p`` and ``e`` bound the block; masked items (singleton blocks) get 0, their weight. With
    ``groups`` the ranks of each segment: ``n_v`` is the segment's start plus its valid count.
    """
    twice = 2 * _valid_count(vs, seg.ids.shape, groups) - seg.pivot - seg.end + 1
    mean = twice.astype(dtype) * 0.5
    return mean if vs is None else jnp.where(vs, mean, 0)


def _project(z, inv_eps, w_desc, valid, regularization, method, ids=None):
    """P(z * inv_eps, w) in the input order, rows [B, n].

    ``w_desc``: ``w`` sorted decreasingly, or None for the ranks ``(n_v, ..., 1)`` (of each
    segment, with ``ids``), whose block sums are closed forms.
    """
    perm, zs, vs = _sort_desc(z, valid, ids)
    groups = _groups(ids, perm, vs)
    ranks = w_desc is None
    if regularization in pnorm.POWERS:  # theta = z / eps; w differentiable (ranks: constant)
        w = _ranks_desc(vs, z.shape, z.dtype, groups) if ranks else w_desc
        out = pnorm.project(zs, inv_eps, 0.0, w, _barrier(vs, groups), regularization)
        return _unsort(out, perm)
    wd = _ranks_desc(vs, z.shape, z.dtype, groups) if ranks else lax.stop_gradient(w_desc)
    barrier = _cuts(lax.stop_gradient(zs), inv_eps, wd, vs, regularization)
    if groups is not None:  # segments never pool; each is shifted by its own n_v (a constant)
        barrier = barrier | groups.starts
    # theta relative to the first item of its segment (<= 0): far-apart items never pool, and
    # measuring theta from the row's maximum would round away the gaps that decide the pooling
    # (an outlier of 1e8 with gaps of 2 in float32).
    zs0 = lax.stop_gradient(zs)
    c = lax.stop_gradient(jnp.broadcast_to(inv_eps, zs.shape[:-1] + (1,))).astype(zs.dtype)
    if regularization == "kl":  # theta = c * z, and log w
        theta = pav.affine(zs0, c)
        starts = pav.block_starts("kl_desc", theta, jnp.where(wd > 0, wd, 1), method, barrier)
    elif ranks:  # theta - w = c * z + i - n_v: every gap exact
        starts = pav.block_starts("l2", pav.affine(zs0, c, 1), jnp.ones_like(wd), method, barrier)
    else:  # theta - w, theta measured from the first item of its segment
        theta0 = (zs0 - take_last(zs0, segments(barrier).pivot)) * c
        starts = pav.block_starts("l2", pav.affine(theta0 - wd), jnp.ones_like(wd), method, barrier)
    seg = segments(starts)
    t = (zs - take_last(zs0, seg.pivot)) * inv_eps  # theta_i - theta_p <= 0
    count = seg.size(t.dtype)
    mean_w = _rank_mean(seg, vs, t.dtype, groups) if ranks else seg.sum(w_desc) / count
    if regularization == "l2":
        out = mean_w + (t - seg.sum(t) / count)
    else:
        e = jnp.exp(t)
        out = mean_w * count * e / seg.sum(e)
    return _unsort(out, perm)


def rank_rows(
    x,
    eps,
    valid,
    ids=None,
    *,
    descending: bool,
    regularization: str,
    method: str,
    straight_through=False,
):
    """Soft ranks of rows ``x`` [..., n] with strengths ``eps`` [...].

    Rank 1 is the smallest unless ``descending``. ``straight_through``: the hard ranks (ties
    averaged), with the soft derivative. ``ids``: segment ids, each segment ranked on its own.
    """
    good = _good(x, eps, valid)
    x, eps = clean_rows(good, x), jnp.where(good, eps, 1)
    z = -x if descending else x
    out = _project(z, 1 / eps[..., None], None, valid, regularization, method, ids)
    if straight_through:
        out = with_soft_derivative(_hard_ranks(z, valid, ids), out)
    return _finish(out, good, valid)


def _hard_ranks(z, valid, ids=None):
    """Hard ranks from the descending order of ``z``, tied values sharing their mean rank.

    The mean over ties is the limit of the soft ranks as the strength goes to 0.
    """
    perm, zs, vs = _sort_desc(lax.stop_gradient(z), valid, ids)
    groups = _groups(ids, perm, vs)
    new = jnp.concatenate([jnp.ones_like(zs[..., :1], bool), zs[..., 1:] != zs[..., :-1]], -1)
    barrier = _barrier(vs, groups)
    if barrier is not None:
        new = new | barrier
    return _unsort(_rank_mean(segments(new), vs, z.dtype, groups), perm)


def project_rows(z, w, valid, *, regularization: str, method: str):
    """Projection of rows ``z`` onto the permutahedron of rows ``w`` (None: ranks n..1)."""
    good = _good(z, jnp.ones(z.shape[:-1], z.dtype), valid, w)
    if regularization == "kl" and w is not None:  # log w: a row with a valid w <= 0 is NaN
        positive = (w > 0) if valid is None else (w > 0) | ~valid
        good = good & jnp.all(positive, axis=-1)
    z = clean_rows(good, z)
    w_desc = None if w is None else _sort_desc(clean_rows(good, w, 1.0), valid)[1]
    out = _project(z, 1.0, w_desc, valid, regularization, method)
    return _finish(out, good, valid)


def _sorted_blocks(s, w, inv_eps, barrier, regularization, method):
    """The L2 or KL soft sort in sorted order, from ``s`` sorted decreasingly and ranks ``w``."""
    # statistics w / eps (the ramp -i / eps up to a constant, one per segment: segment starts are
    # barriers) and s, given exactly (``blocks``)
    s_c = lax.stop_gradient(s)
    ramp = -lax.stop_gradient(inv_eps)
    if regularization == "l2":
        y = pav.affine(s_c, -1.0, ramp)  # w / eps - s
        seg = segments(pav.block_starts("l2", y, jnp.ones_like(s), method, barrier))
        # w_i - mean_B(w) = (p + e - 1) / 2 - i, exact (0 for masked items: singleton blocks), in
        # a segment too: its ranks are its top minus the position, and a block stays inside it
        pos = lax.broadcasted_iota(jnp.int32, s.shape, s.ndim - 1)
        w_dev = (seg.pivot + seg.end - 1 - 2 * pos).astype(s.dtype) * 0.5
        # the block mean of s from a compensated sum: it may be far below the values it averages
        return seg.sum(s, compensated=True) / seg.size(s.dtype) + w_dev * inv_eps
    a = pav.affine(jnp.zeros_like(s_c), 0.0, ramp)
    seg = segments(pav.block_starts("kl_desc", a, pav.affine(s_c), method, barrier))
    sp = take_last(s_c, seg.pivot)
    d = s - sp  # <= 0
    u = (w - take_last(w, seg.pivot)) * inv_eps  # <= 0
    # sum_B exp(u) = sum_{k < m} exp(-k / eps), a geometric series; one log of the ratio of
    # the two block sums (both near m) keeps the block's offset at the scale of the output
    m = seg.size(s.dtype)
    geo = jnp.expm1(-m * inv_eps) / jnp.expm1(-inv_eps)
    return sp + jnp.log(seg.sum(jnp.exp(d)) / geo) + u


def sort_rows(
    x,
    eps,
    valid,
    ids=None,
    *,
    descending: bool,
    regularization: str,
    method: str,
    straight_through=False,
):
    """Soft-sorted rows ``x`` [..., n], ascending unless ``descending``.

    Masked entries trail as 0. ``straight_through``: the hard sorted values, with the soft
    derivative. ``ids``: segment ids; each segment is sorted into the positions its items hold
    (in index order), its masked items' positions last.
    """
    good = _good(x, eps, valid)
    x, eps = clean_rows(good, x), jnp.where(good, eps, 1)
    sign = 1.0 if descending else -1.0
    perm, s, vs = _sort_desc(sign * x, valid, ids)  # s = sign * x, sorted decreasingly
    groups = _groups(ids, perm, vs)
    w = _ranks_desc(vs, x.shape, x.dtype, groups)
    inv_eps = 1 / eps[..., None]
    barrier = _barrier(vs, groups)
    if regularization in pnorm.POWERS:  # theta = w / eps: the ramp -i / eps up to a constant
        out = pnorm.project(jnp.zeros_like(s), 0.0, -inv_eps, s, barrier, regularization)
    else:
        out = _sorted_blocks(s, w, inv_eps, barrier, regularization, method)
    if straight_through:
        out = with_soft_derivative(s, out)
    if ids is not None:  # the j-th of a segment to the j-th position of its items
        place = _sort.argsort_ids(ids)
        out = _unsort(out, place)
        vs = None if vs is None else _unsort(vs, place)
    return _finish(sign * out, good, vs)


def isotonic_rows(a, b, *, kind: Kind, method: str):
    """Decreasing isotonic solution from per-item statistics [..., n].

    ``l2``: ``(y, w)``, the w-weighted mean of y per block; ``kl``: ``(s, w)``,
    ``logsumexp(s_B) - logsumexp(w_B)``. Rows with a non-finite statistic give NaN.
    """
    good = jnp.all(jnp.isfinite(a) & jnp.isfinite(b), axis=-1)
    a, b = clean_rows(good, a), clean_rows(good, b, 1.0 if kind == "l2" else 0.0)
    b_stat = b if kind == "l2" else pav.affine(b)
    seg = segments(pav.block_starts(kind, pav.affine(a), b_stat, method))
    if kind == "l2":
        out = seg.sum(b * a) / seg.sum(b)
    else:
        (ma, la), (mb, lb) = seg.lse(a), seg.lse(b)
        out = (ma - mb) + (la - lb)
    return nan_rows(out, good)
