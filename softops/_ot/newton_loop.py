r"""The semi-dual Newton loop of `softops._ot.newton` and its row helpers (private).

The helpers take rows with any leading batch axes (items last, anchors second to last); the loop
runs on rows [B, n] without gradient, per batch shard (`solve_rows`). The math, the start,
the screening and the reference semantics are in `softops._ot.newton`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from softops import _compat
from softops._ot.semidual import (
    anchor_logits,
    anchor_softmax,
    column_sums,
    errors,
    hessian,
    plan_softmax,
    solve_h,
    threshold_step,
)
from softops._sharding import batch_local, like_vma, scatter_last


class _Eval(NamedTuple):
    value: jax.Array  # the semi-dual up to a constant, [B]
    scale: jax.Array  # size of its terms (for the rounding slack), [B]
    error: jax.Array  # ||P^T 1 - b||_1, [B]
    grad: jax.Array  # (b - P^T 1) on the first m - 1 anchors, [B, m-1]
    hess: jax.Array  # H on the first m - 1 anchors, [B, m-1, m-1]


class _State(NamedTuple):
    d: jax.Array  # offsets of the thresholds from their reference
    value: jax.Array
    scale: jax.Array
    error: jax.Array
    step: jax.Array
    slope: jax.Array
    alpha: jax.Array
    done: jax.Array
    it: jax.Array
    hess: jax.Array  # H at t (from the evaluation that accepted t)
    best: jax.Array  # the smallest error so far
    since: jax.Array  # evaluations since the error last halved


def head_size(n: int, m: int) -> int | None:
    """Screening size for n items and m anchors, or None when screening would not pay."""
    head = 2 * m + 16
    return head if _compat.is_static(n) and 4 * head <= n else None


def chunk_size(nb: int, m: int, n: int) -> int | None:
    """Items per chunk in full-row evaluations (about 2**18 plan entries), or None for one."""
    if not _compat.is_static(nb, n):  # a symbolic batch or length: one chunk
        return None
    chunk = max(128, 1 << max(0, (2**18 // max(nb * m, 1)).bit_length() - 1))
    return chunk if chunk < n else None


# Helpers on rows with any leading batch axes: items last, anchors second to last.


def _direction(ev: _Eval, b):
    r"""Newton step z in g from an evaluation; far from the solution, on the log of the columns.

    An over-full anchor's column is about exponential in its g_j: plain Newton on b - col moves
    g_j by at most ε and divides the excess by about e per step. Far from the solution (error
    above an eighth of the first m - 1 anchors' mass) the over-full anchors' residuals are taken
    as $col_j \log(b_j / col_j)$ (Newton on log col = log b: exact for an isolated anchor;
    equal to b - col to first order). The plain step is kept where that is not an ascent
    direction of F, and near the solution (quadratic convergence, as measured).
    """
    m1 = ev.grad.shape[-1]
    col = b[..., :m1] - ev.grad
    far = ev.error > jnp.sum(b[..., :m1], axis=-1) / 8
    use = (col > b[..., :m1]) & far[..., None]
    glog = jnp.where(use, col * jnp.log(b[..., :m1] / jnp.where(use, col, 1)), ev.grad)
    zz = solve_h(ev.hess, b, jnp.stack([ev.grad, glog], -1))
    z, z_log = zz[..., 0], zz[..., 1]
    ascent = jnp.sum(ev.grad * z_log, axis=-1) > 0
    return jnp.where(ascent[..., None], z_log, z)


# The loop, on rows [B, n] without gradient.


def _sums(x, a, t, d, dy, eps, c, precise: bool):
    pi, lse = (
        plan_softmax(x, t, d, dy, eps)
        if precise
        else anchor_softmax(anchor_logits(x, t, d, dy, eps, c))
    )
    return column_sums(a, pi), hessian(a, pi), jnp.sum(a * lse, 1), jnp.sum(a * jnp.abs(lse), 1)


def _evaluate(x, a, b, t, d, dy, eps, c, chunk: int | None, precise: bool = False) -> _Eval:
    """The semi-dual and its derivatives at the thresholds ``t + d`` (``c``: centre of t).

    ``precise``: the plan from ``plan_softmax`` (else ``anchor_logits``, faster).
    """
    if chunk is None:
        col, hess, ent, ent_abs = _sums(x, a, t, d, dy, eps, c, precise)
    else:
        nb, n = x.shape
        xs, as_ = (
            jnp.moveaxis(jnp.pad(v, ((0, 0), (0, -n % chunk))).reshape(nb, -1, chunk), 1, 0)
            for v in (x, a)
        )

        def step(acc, xa):
            return jax.tree.map(jnp.add, acc, _sums(*xa, t, d, dy, eps, c, precise)), None

        m1, zero = t.shape[1], jnp.zeros((nb,), x.dtype)
        init = (jnp.zeros((nb, m1), x.dtype), jnp.zeros((nb, m1, m1), x.dtype), zero, zero)
        (col, hess, ent, ent_abs), _ = lax.scan(step, like_vma(init, x), (xs, as_))
    grad, error = errors(col, a, b)
    lin = 2 * dy * ((t - c[:, None]) + d) * jnp.cumsum(b[:, :-1], axis=1)
    value = -jnp.sum(lin, axis=1) - eps * ent
    scale = jnp.sum(jnp.abs(lin), axis=1) + eps * ent_abs
    return _Eval(value, scale, error, grad, hess)


_PATIENCE = 16  # fast-logit evaluations without halving the error before the precise plan


def _newton_loop(x, a, b, dy, eps, t, d, it, done, max_iter: int, tol: float, chunk=None,
                 hess=None, precise: bool = False):  # fmt: skip
    """Damped Newton from ``t + d`` on rows [B, n]: returns (d, iterations, error, H at t + d).

    The thresholds are carried as offsets ``d`` from the reference ``t`` (their start): in
    float32, t alone cannot resolve a threshold on a tie finely enough (measured: 200 equal items
    at ε = 1e-4, the float32 t nearest the solution leaves a residual of 5.5e-4 in mask units,
    above the tolerance). ``done`` rows are left alone (no evaluation at all when every row is
    done); at most ``max_iter`` evaluations per row. ``hess``: H at the start where known
    (default zero; a row that is never evaluated keeps it).

    ``precise``: evaluate the plan by ``plan_softmax``. Otherwise (the fast logits of
    ``anchor_logits``) a row also stops when its error has not halved in ``_PATIENCE``
    evaluations: in float32 at small ε it may sit at the rounding floor of those logits, above
    the tolerance, and ``solve_rows`` goes on with ``precise``.
    """
    dtype = x.dtype
    limit = it + max_iter
    c = jnp.mean(t, axis=1)
    valid = a > 0
    span = jnp.max(jnp.where(valid, x, -jnp.inf), 1) - jnp.min(jnp.where(valid, x, jnp.inf), 1)
    cap = jnp.where(jnp.isfinite(span), span, 0) + eps / jnp.min(dy, axis=1)  # first step size
    zero = jnp.zeros(it.shape, dtype)
    # A fresh state: the first evaluation (at t, alpha = 0, value -inf) is always accepted.
    hess = jnp.zeros(t.shape + t.shape[-1:], dtype) if hess is None else hess
    init = _State(d, zero - jnp.inf, zero, zero + jnp.inf, jnp.zeros_like(t), zero, zero,
                  done | (max_iter <= 0), it, hess, zero + jnp.inf, jnp.zeros_like(it))  # fmt: skip
    slack = 32 * jnp.finfo(dtype).eps

    def body(s: _State) -> _State:
        trial = s.d + s.alpha[:, None] * s.step
        ev = _evaluate(x, a, b, t, trial, dy, eps, c, chunk, precise)
        armijo = ev.value >= s.value + 1e-4 * s.alpha * s.slope
        # Near the solution F is flat to rounding: also accept a step that lowers the error
        # while F stays within its rounding.
        flat = (ev.value >= s.value - slack * jnp.maximum(ev.scale, s.scale)) & (ev.error < s.error)
        ok = (armijo | flat) & jnp.isfinite(ev.error)
        z = _direction(ev, b)
        step = threshold_step(z, dy, eps)
        first = jnp.minimum(1, cap / jnp.maximum(jnp.max(jnp.abs(step), 1), jnp.finfo(dtype).tiny))
        alpha = jnp.where(ok, first, s.alpha / 2)
        error = jnp.where(ok, ev.error, s.error)
        it = s.it + 1
        bad_data = ~jnp.isfinite(ev.error) & (s.alpha == 0)
        halved = error <= s.best / 2
        since = jnp.where(halved, 0, s.since + 1)
        stalled = (since >= _PATIENCE) if not precise else jnp.zeros_like(halved)
        done = (error <= tol) | (alpha < 2.0**-30) | (it >= limit) | bad_data | stalled
        o1 = ok[:, None]
        new = _State(
            jnp.where(o1, trial, s.d), jnp.where(ok, ev.value, s.value),
            jnp.where(ok, ev.scale, s.scale), error, jnp.where(o1, step, s.step),
            jnp.where(ok, eps * jnp.sum(ev.grad * z, axis=1), s.slope), alpha, done, it,
            jnp.where(ok[:, None, None], ev.hess, s.hess), jnp.where(halved, error, s.best), since,
        )  # fmt: skip
        keep = s.done
        return jax.tree.map(
            lambda old, nw: jnp.where(keep.reshape((-1,) + (1,) * (nw.ndim - 1)), old, nw), s, new
        )

    out = lax.while_loop(lambda s: jnp.any(~s.done), body, like_vma(init, x))
    return out.d, out.it, out.error, out.hess


def _start(x, a, b, dy, eps, size: int):
    r"""Starting thresholds, the indices of the ``size`` largest x, the diffuse rows, t at ∞.

    The sorted assignment (the ε → 0 solution) from the ``size`` largest items; for a diffuse
    row (ε at least the x-span times the largest anchor gap) the ε → ∞ solution instead, where
    $\pi_i \to b$: $t_j = \bar{x} - \varepsilon \log(b_j / b_{j+1}) / (2 \Delta
    y_j)$. Measured: 3-6 Newton steps instead of 8-10 at the paper's ε >= 0.1.
    """
    valid = a > 0
    top, idx = lax.top_k(jnp.where(valid, x, -jnp.inf), size)
    low = jnp.min(jnp.where(valid, x, jnp.inf), axis=1)
    high = jnp.max(jnp.where(valid, x, -jnp.inf), axis=1)
    top = jnp.where(jnp.isfinite(top), top, jnp.where(jnp.isfinite(low), low, 0)[:, None])
    mass = jnp.take_along_axis(a, idx, axis=1)
    centre = jnp.cumsum(mass, axis=1) - mass / 2  # mass above each item's midpoint
    cut = jnp.cumsum(b[:, :-1], axis=1)
    r = jnp.clip(jnp.sum(centre[:, None, :] < cut[:, :, None], axis=2), 1, size - 1)
    above = jnp.take_along_axis(top, r - 1, axis=1)
    below = jnp.take_along_axis(top, r, axis=1)
    mean = jnp.sum(a * jnp.where(valid, x, 0), axis=1) / jnp.sum(a, axis=1)
    log_b = jnp.log(b)
    t_inf = mean[:, None] - eps[:, None] * (log_b[:, :-1] - log_b[:, 1:]) / (2 * dy)
    diffuse = eps >= (high - low) * jnp.max(dy, axis=1)
    return jnp.where(diffuse[:, None], t_inf, (above + below) / 2), idx, diffuse, t_inf


def _tail_bound(x, a, in_head, t, dy, eps):
    """Bound on the mass that the items outside the head put on the first m - 1 anchors.

    If every threshold is above the largest such item, each of them has decreasing logits
    towards the first anchor, so sum_{j < m-1} pi_ij <= (m - 1) exp(L_i,m-2) (L_i,m-1 = 0): one
    exp per item. Otherwise the bound is infinite (no screening).
    """
    tail = (a > 0) & ~in_head
    edge = jnp.max(jnp.where(tail, x, -jnp.inf), axis=1)
    below = edge <= jnp.min(t, axis=1)
    gap = 2 * dy[:, -1:] * (jnp.where(tail, x, 0) - t[:, -1:]) / eps[:, None]
    terms = jnp.where(tail & below[:, None], a * jnp.exp(jnp.minimum(gap, 0)), 0)
    bound = (dy.shape[1]) * jnp.sum(terms, axis=1)
    return jnp.where(below | ~jnp.any(tail, axis=1), bound, jnp.inf)


@batch_local(item_ndims=(1, 1, 1, 1, 0), out_item_ndims=(1, 1, 0, 0, 2, 0, 0, 1), name="x")
def solve_rows(x, dy, a, b, eps, *, max_iter: int, tol: float, head: int | None):
    """Thresholds t + d [..., m-1], iterations, error, H [..., m-1, m-1] and how to plan them.

    t is the start and d the offsets from it (see ``_newton_loop``). Runs on values without
    gradient, shard by shard. ``head``: screening size (None: off). H is the Hessian of the last
    evaluation that accepted t (frozen items add exact zeros to it, so a certified row's head
    solve gives the full row's H); zero for a row never evaluated.

    Full rows run with the fast logits (``anchor_logits``); a row that stalls above the tolerance
    goes on with ``plan_softmax``, as do the head solves (a few items). The last three
    outputs say which plan the solver measured (``newton.output_plan`` builds it): ``fine``
    [...] the certified rows (the head [..., head] items from the precise plan, the others
    one-hot on the last anchor; ``head = 0`` without screening), ``precise`` [...] the rows
    solved on full rows with the precise plan.
    """
    batch, n, m1 = x.shape[:-1], x.shape[-1], dy.shape[-1]
    x, a = x.reshape(-1, n), a.reshape(-1, n)
    dy, b, eps = dy.reshape(-1, m1), b.reshape(-1, m1 + 1), eps.reshape(-1)
    nb = x.shape[0]
    it0 = jnp.zeros((nb,), jnp.int32)
    chunk = chunk_size(nb, m1 + 1, n)
    if head is None:
        t = _start(x, a, b, dy, eps, n)[0]
        d, it, err, hess = _newton_loop(
            x, a, b, dy, eps, t, jnp.zeros_like(t), it0, it0 < 0, max_iter, tol, chunk
        )
        fine = it0 < 0
    else:
        t0, idx, diffuse, t_inf = _start(x, a, b, dy, eps, head)
        x_h, a_h = jnp.take_along_axis(x, idx, axis=1), jnp.take_along_axis(a, idx, axis=1)
        # The rest of the row sits on the last anchor (a row whose first m - 1 anchors need more
        # mass than its head holds skips the head solve and starts the full rows at t_inf).
        rest = jnp.sum(a_h, axis=1) - jnp.sum(b[:, :-1], axis=1)
        b_h = jnp.concatenate([b[:, :-1], rest[:, None]], axis=1)
        solve_head = (rest > 0) & ~diffuse  # no head for a diffuse row: it will not be certified
        d_h, it_h, err_h, hess_h = _newton_loop(
            x_h, a_h, b_h, dy, eps, t0, jnp.zeros_like(t0), it0, ~solve_head, max_iter, tol,
            precise=True,
        )  # fmt: skip
        in_head = scatter_last(x.shape, jnp.int32, idx, jnp.ones(idx.shape, jnp.int32)) > 0
        bound = _tail_bound(x, a, in_head, t0 + d_h, dy, eps)
        fine = (bound <= tol / 8) & (err_h <= tol) & solve_head
        t = jnp.where((rest > 0)[:, None], t0, t_inf)
        d0 = jnp.where((rest > 0)[:, None], d_h, 0)
        hess0 = jnp.where(fine[:, None, None], hess_h, 0)
        d, it, err, hess = _newton_loop(
            x, a, b, dy, eps, t, d0, it_h, fine, max_iter, tol, chunk, hess0
        )
        err = jnp.where(fine, err_h, err)
    retry = (err > tol) & jnp.isfinite(err) & ~fine
    d, it, err_p, hess = _newton_loop(
        x, a, b, dy, eps, t, d, it, ~retry, max_iter, tol, chunk, hess, precise=True
    )
    err = jnp.where(retry, err_p, err)
    idx = idx if head is not None else jnp.zeros((nb, 0), jnp.int32)
    return (
        t.reshape(*batch, m1), d.reshape(*batch, m1), it.reshape(batch), err.reshape(batch),
        hess.reshape(*batch, m1, m1), fine.reshape(batch), retry.reshape(batch),
        idx.reshape(*batch, idx.shape[-1]),
    )  # fmt: skip
