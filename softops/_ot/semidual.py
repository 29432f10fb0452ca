r"""Semi-dual row algebra of the top-k transport (private to `softops._ot`).

Rows with any leading batch axes (items last, anchors second to last): the logits and the plan
at thresholds ``t + d``, the Hessian H on the first m - 1 anchors and its solve, column sums and
errors, the threshold step. Used by the Newton loop (`softops._ot.newton_loop`) and by the
implicit tangents (`softops._ot.newton`); the math is in `softops._ot.newton`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def eye(m: int, ndim: int, dtype) -> jax.Array:
    """The identity [m, m] with ``ndim - 2`` leading unit axes (explicit rank promotion)."""
    return jnp.eye(m, dtype=dtype).reshape((1,) * (ndim - 2) + (m, m))


def suffix(v):
    """Suffix sums of [..., m-1] with a trailing zero: out_j = sum_{j' >= j} v_j', [..., m]."""
    s = jnp.flip(jnp.cumsum(jnp.flip(v, -1), axis=-1), -1)
    return jnp.concatenate([s, jnp.zeros_like(v[..., :1])], axis=-1)


def anchor_logits(x, t, d, dy, eps, c):
    r"""L [..., m, n]: logits relative to the last anchor at the thresholds ``t + d``.

    ``d``: offsets from a reference ``t`` (or None), x and t centred at c [...]:
    $L_{ij} = (2/\varepsilon)((Y_j (x_i - c) - \sum_{l \ge j} \Delta y_l (t_l - c)) -
    \sum_{l \ge j} \Delta y_l d_l)$. The offsets enter last, so that they resolve thresholds
    far below the ulp of t (float32 rows with ties: see `_newton_loop`).
    """
    v = suffix(dy * (t - c[..., None]))
    u = x - c[..., None]
    big_y = suffix(dy)
    base = big_y[..., :, None] * u[..., None, :] - v[..., :, None]
    if d is not None:
        base = base - suffix(dy * d)[..., :, None]
    return (2 / eps)[..., None, None] * base


def anchor_softmax(logits):
    """Softmax over the anchors and its log-normalizer [..., n]."""
    lmax = jnp.max(logits, axis=-2, keepdims=True)
    p = jnp.exp(logits - lmax)
    s = jnp.sum(p, axis=-2, keepdims=True)
    return p / s, lmax[..., 0, :] + jnp.log(s[..., 0, :])


def running_sum(v, reverse: bool):
    """Cumulative sums of [..., m-1, n] along the anchors (unrolled for a few anchors)."""
    m1 = v.shape[-2]
    if m1 > 64:
        return lax.associative_scan(jnp.add, v, axis=v.ndim - 2, reverse=reverse)
    order = range(m1 - 1, -1, -1) if reverse else range(m1)
    out: dict[int, jax.Array] = {}
    acc = None
    for j in order:
        acc = v[..., j, :] if acc is None else acc + v[..., j, :]
        out[j] = acc
    return jnp.stack([out[j] for j in range(m1)], axis=-2)


def plan_softmax(x, t, d, dy, eps):
    r"""(pi [..., m, n], lse [..., n]) at the thresholds ``t + d``, from the gaps of the logits.

    The logit gap of anchors j and j + 1 is $G_{ij} = (2/\varepsilon) \Delta y_j ((x_i -
    t_j) - d_j)$, and $L_{ij} = \sum_{l \ge j} G_{il}$ (relative to the last anchor). The
    softmax needs L only up to a constant per item: $L'_{ij} = \sum_{l \ge j} \min(G_{il},
    0) - \sum_{l < j} \max(G_{il}, 0)$ (the same differences $L'_j - L'_{j+1} = G_j$).
    With ordered thresholds the negative gaps are those above the item's own anchor and the
    positive ones below it, so each running sum starts at that anchor: the logits that matter
    carry the rounding of ``x - t`` near the item (exact for close values), not of
    $Y_j x_i$ (``anchor_logits``: about $k |x|$ times the dtype's eps, times
    $2/\varepsilon$; float32 rows at small ε stalled at a column error of 5e-4 to 1e-3
    in mask units with k = 31). ``lse`` is relative to the last anchor, as ``anchor_softmax``'s.
    """
    u = x[..., None, :] - t[..., :, None]
    if d is not None:
        u = u - d[..., :, None]
    g = (2 / eps)[..., None, None] * dy[..., :, None] * u
    below = running_sum(jnp.maximum(g, 0), reverse=False)
    above = running_sum(jnp.minimum(g, 0), reverse=True)
    zero = jnp.zeros_like(g[..., :1, :])
    logits = jnp.concatenate([above, zero], axis=-2) - jnp.concatenate([zero, below], axis=-2)
    pi, lse = anchor_softmax(logits)
    return pi, lse + below[..., -1, :]


def hessian(a, pi):
    """H on the first m - 1 anchors (full-width arrays sliced at the end: XLA fuses them)."""
    m1 = pi.shape[-2] - 1
    q = pi * jnp.sqrt(a)[..., None, :]
    off = -jnp.einsum("...jn,...kn->...jk", q, q)[..., :m1, :m1]
    diag = jnp.sum(a[..., None, :] * pi * (1 - pi), axis=-1)[..., :m1]  # no cancellation
    return jnp.where(eye(m1, off.ndim, bool), diag[..., :, None], off)


def column_sums(a, pi):
    """Column sums of the plan a pi on the first m - 1 anchors."""
    return jnp.einsum("...jn,...n->...j", pi, a)[..., :-1]


def dot_m(pi, v):
    """sum_j pi[..., j, i] v[..., j], [..., n]."""
    return jnp.sum(pi * v[..., :, None], axis=-2)


def errors(col, a, b):
    """(b - P^T 1) on the first m - 1 anchors and ||P^T 1 - b||_1.

    The rows of P sum to a and ``sum(a) == sum(b)`` (every caller's marginals), so the last
    column's error is minus the sum of the others': for top-k marginals the last column is a large
    sum (about 1 in plan units) whose rounding, n eps in mask units, would swamp a tolerance (as
    would that of ``sum(a)`` or of the last mass); the others are sums of about 1/n each.
    """
    del a
    m1 = col.shape[-1]
    grad = b[..., :m1] - col
    last = -jnp.sum(grad, axis=-1)
    return grad, jnp.sum(jnp.abs(grad), axis=-1) + jnp.abs(last)


def solve_h(h, b, rhs):
    """Solves H z = rhs with a tiny ridge that keeps H invertible when a plan is one-hot.

    ``rhs``: [..., m-1], or [..., m-1, r] for r right-hand sides.
    """
    m1 = h.shape[-1]
    size = jnp.trace(h, axis1=-2, axis2=-1) / m1 + jnp.max(b, axis=-1)
    ridge = 16 * jnp.finfo(h.dtype).eps * size
    h = h + ridge[..., None, None] * eye(m1, h.ndim, h.dtype)
    if rhs.ndim == h.ndim:
        return jnp.linalg.solve(h, rhs)
    return jnp.linalg.solve(h, rhs[..., None])[..., 0]


def threshold_step(z, dy, eps):
    """Thresholds' move for a Newton step z in g (gauge z_{m-1} = 0)."""
    zz = jnp.concatenate([z, jnp.zeros_like(z[..., :1])], axis=-1)
    return -eps[..., None] * (zz[..., :-1] - zz[..., 1:]) / (2 * dy)
