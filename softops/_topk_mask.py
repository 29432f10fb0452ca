r"""Two-anchor entropic top-k: a scalar root find per row and an O(n) derivative (private).

With two anchors, eliminating the row potentials of the entropic OT dual leaves one scalar per
row: :math:`A_i = \sigma(s_i + \tau)` with :math:`\tau` fixed by :math:`\sum_i A_i = k`. The map
:math:`F(\tau) = \sum_i \sigma(s_i + \tau) - k` is increasing, and with :math:`q = k/n`,

.. math::
    F(\operatorname{logit} q - \max_i s_i) \le 0 \le F(\operatorname{logit} q - \min_i s_i),

so a safeguarded Newton iteration on that bracket (bisect when the Newton step leaves it) finds
:math:`\tau`. Reference semantics for one row::

    lo, hi = logit(k / n) - max(s), logit(k / n) - min(s)
    tau = logit(k / n) - mean(s)  # or log(k) - logsumexp(s) when k is tiny
    while abs(sum(sigmoid(s + tau)) - k) > tol:
        F, D = sum(sigmoid(s + tau)) - k, sum(sigmoid'(s + tau))
        lo, hi = (tau, hi) if F < 0 else (lo, tau)
        tau = tau - F / D if lo < tau - F / D < hi else (lo + hi) / 2

The JAX loop runs all rows of a batch at once (per-row state vectors, finished rows frozen, per
batch shard) and also stops when the bracket has shrunk to a few ulps (the best the dtype can do)
or at ``max_iter``. Derivative: :math:`dA = \sigma' \odot (ds + d\tau)` with
:math:`d\tau = (dk - \langle \sigma', ds\rangle)/\sum \sigma'`,
:math:`\sigma' = \sigma(z)\sigma(-z)` (both factors computed directly: no cancellation).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from softops._sharding import batch_local, like_vma


def _logit(q):
    return jnp.log(q) - jnp.log1p(-q)


def _eval(s, tau, valid, k):
    """A, F = sum(A) - k and D = sum(A (1 - A))."""
    a = jax.nn.sigmoid(s + tau[..., None]) * valid
    return a, a.sum(axis=-1) - k, (a * (1 - a)).sum(axis=-1)


@batch_local(item_ndims=(1, 0, 1), out_item_ndims=(0, 0, 0, 0), name="x")
def _root_find(s, k, valid, *, max_iter: int, tol: float):
    """(tau, iterations, |F|, ok) per row for rows ``s`` [..., n] with 0 < k < n_valid.

    ``ok``: the residual is within ``tol`` or the bracket has shrunk to a few ulps (the best the
    dtype can do); False only when ``max_iter`` stopped the search (or the row is NaN).
    """
    dtype = s.dtype
    n_valid = valid.sum(axis=-1)
    big = jnp.finfo(dtype).max
    s_max = jnp.max(jnp.where(valid > 0, s, -big), axis=-1, initial=-big)  # no items: -big
    s_min = jnp.min(jnp.where(valid > 0, s, big), axis=-1, initial=big)
    s_mean = (s * valid).sum(axis=-1) / n_valid
    t0 = _logit(k / n_valid)
    lo, hi = t0 - s_max, t0 - s_min
    # When k (or n - k) is tiny the mask lives in the exponential tail of the sigmoid:
    # sigma(z) <= e^z makes tau = log k - LSE(s) a lower bound on the root, close to it then
    # (symmetrically LSE(-s) - log(n - k) an upper bound). Elsewhere start from the mean.
    small = k <= 0.5 * n_valid
    masked = jnp.where(valid > 0, jnp.where(small[..., None], s, -s), -jnp.inf)
    lse = jax.nn.logsumexp(masked, axis=-1)
    tail = jnp.where(small, jnp.log(k) - lse, lse - jnp.log(n_valid - k))
    use_tail = (jnp.minimum(k, n_valid - k) <= 8) & jnp.isfinite(tail)
    tau = jnp.clip(jnp.where(use_tail, tail, t0 - s_mean), lo, hi)
    ulp = jnp.asarray(8 * jnp.finfo(dtype).eps, dtype)

    def flat(lo, hi, tau):
        return (hi - lo) <= ulp * jnp.maximum(jnp.abs(tau), 1)

    def done_of(f_val, lo, hi, tau):
        return (jnp.abs(f_val) <= tol) | flat(lo, hi, tau) | ~jnp.isfinite(f_val)

    _, f_val, d_val = _eval(s, tau, valid, k)

    def cond(state):
        it, _, _, _, _, _, done = state
        return jnp.any(~done & (it < max_iter))

    def body(state):
        it, tau, lo, hi, f_val, d_val, done = state
        lo_n = jnp.where(f_val < 0, tau, lo)
        hi_n = jnp.where(f_val > 0, tau, hi)
        newton = tau - f_val / jnp.where(d_val > 0, d_val, 1)
        ok = (d_val > 0) & (newton > lo_n) & (newton < hi_n)
        tau_n = jnp.where(ok, newton, 0.5 * (lo_n + hi_n))
        _, f_n, d_n = _eval(s, tau_n, valid, k)
        keep = done | (it >= max_iter)
        tau = jnp.where(keep, tau, tau_n)
        lo = jnp.where(keep, lo, lo_n)
        hi = jnp.where(keep, hi, hi_n)
        f_val = jnp.where(keep, f_val, f_n)
        d_val = jnp.where(keep, d_val, d_n)
        done = done_of(f_val, lo, hi, tau)
        return it + (~keep).astype(jnp.int32), tau, lo, hi, f_val, d_val, done

    done0 = done_of(f_val, lo, hi, tau)
    it0 = jnp.zeros(tau.shape, jnp.int32)
    state = like_vma((it0, tau, lo, hi, f_val, d_val, done0), s)
    it, tau, lo, hi, f_val, _, _ = lax.while_loop(cond, body, state)
    ok = (jnp.abs(f_val) <= tol) | flat(lo, hi, tau)
    return tau, it, jnp.abs(f_val), ok


def _interior(k, n_valid):
    return (k > 0) & (k < n_valid)


def topk_mask_rows(s, k, valid, max_iter: int, tol: float):
    """A = sigmoid(s + tau) with sum(A) = k per row; ``s``, ``valid`` [..., n], ``k`` [...].

    ``valid`` is 1 for entries that take part and 0 for masked ones (no tangent). Returns
    (A, tau, iterations, residual |sum(A) - k|, ok). The root find runs on values without
    gradient; derivatives come from :func:`_mask_at` (implicit, closed form).
    """
    n_valid = valid.sum(axis=-1)
    inner = _interior(k, n_valid)
    k_safe = jnp.where(inner, k, 0.5 * n_valid)
    sg = lax.stop_gradient
    tau, it, res, ok = _root_find(sg(s), sg(k_safe), valid, max_iter=max_iter, tol=tol)
    a, tau = _mask_at(s, k, valid, tau)
    res = jnp.where(inner, res, jnp.abs(a.sum(axis=-1) - k))
    ok = jnp.where(inner, ok, jnp.isfinite(k))
    return a, tau, it, res, ok


@jax.custom_jvp
def _mask_at(s, k, valid, tau):
    """The mask at the root ``tau`` (found without gradient) and tau, with the implicit tangent."""
    inner = _interior(k, valid.sum(axis=-1))
    a, _, _ = _eval(s, tau, valid, k)
    a = jnp.where(inner[..., None], a, jnp.where((k > 0)[..., None], valid, 0))
    return a, tau


@_mask_at.defjvp
def _mask_at_jvp(primals, tangents):
    s, k, valid, tau = primals
    ds, dk = tangents[0], tangents[1]
    a, tau = _mask_at(s, k, valid, tau)
    z = s + tau[..., None]
    inner = _interior(k, valid.sum(axis=-1))
    dsig = jnp.where(inner[..., None], a * jax.nn.sigmoid(-z), 0)
    total = dsig.sum(axis=-1)
    pos = total > 0
    dtau = jnp.where(pos, (dk - (dsig * ds).sum(axis=-1)) / jnp.where(pos, total, 1), 0)
    return (a, tau), (dsig * (ds + dtau[..., None]), dtau)
