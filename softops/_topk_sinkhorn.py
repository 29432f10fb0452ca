r"""Log-domain Sinkhorn kernel with an implicit forward-mode derivative (private).

For one problem (cost ``C`` [n, m], marginals ``a`` [n], ``b`` [m], regularization ε) the entropic
optimal-transport dual is solved by alternating exact block maximizations,

.. math::
    g_j \leftarrow \varepsilon \log b_j - \varepsilon \mathrm{LSE}_i ((f_i - C_{ij})/\varepsilon),
    \quad
    f_i \leftarrow \varepsilon \log a_i - \varepsilon \mathrm{LSE}_j ((g_j - C_{ij})/\varepsilon),

with plan :math:`P_{ij} = \exp((f_i + g_j - C_{ij})/\varepsilon)`. Each iteration ends on an
``f`` update, so the row marginals are exact and the error is :math:`\|P^\top 1 - b\|_1`.
The gauge :math:`(f + c, g - c)` is fixed by :math:`g_{m-1} = 0`.

Derivative (forward mode, implicit). With :math:`p = df/\varepsilon`, :math:`q = dg/\varepsilon` and
:math:`w_{ij} = dC_{ij}/\varepsilon + h_{ij}\, d\varepsilon/\varepsilon`,
:math:`h = (f_i + g_j - C_{ij})/\varepsilon`, the linearized marginal conditions are
:math:`r_i p_i + (Pq)_i - u_i = da_i` and :math:`(P^\top p)_j + c_j q_j - v_j = db_j` with
:math:`r = P1`, :math:`c = P^\top 1`, :math:`u = (P \odot w)1`, :math:`v = (P \odot w)^\top 1`.
Eliminating :math:`p` leaves :math:`(\mathrm{diag}(c) - P^\top D_r^{-1} P) q = db - P^\top D_r^{-1}
(da + u) + v`, singular along :math:`1`; the gauge :math:`q_{m-1} = 0` leaves an (m-1)×(m-1)
symmetric positive-definite system, solved densely: O(nm + m³) and no loop in the tangent.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import logsumexp


class SinkhornOutput(NamedTuple):
    r"""Result of :func:`softops.topk_ot.sinkhorn`.

    Attributes:
        f: row potentials, ``[..., n]``.
        g: column potentials, ``[..., m]`` (gauge: ``g[..., -1] == 0``).
        plan: the transport plan :math:`P_{ij} = \exp((f_i + g_j - C_{ij})/\varepsilon)`,
            ``[..., n, m]``; its rows sum to ``a`` exactly.
        iterations: Sinkhorn iterations used, int32 ``[...]``.
        error: final column-marginal error :math:`\|P^\top 1 - b\|_1`, in the units of ``b``.
        converged: ``error <= tol``, bool ``[...]``.
    """

    f: jax.Array
    g: jax.Array
    plan: jax.Array
    iterations: jax.Array
    error: jax.Array
    converged: jax.Array


def _safe_log(a: jax.Array) -> jax.Array:
    """log(a) with -inf at a == 0 and a gradient-safe branch."""
    pos = a > 0
    return jnp.where(pos, jnp.log(jnp.where(pos, a, 1)), -jnp.inf)


def _f_update(g, cost, log_a, eps):
    return eps * log_a - eps * logsumexp((g[None, :] - cost) / eps, axis=1)


def _col_lse(f, cost, eps):
    return logsumexp((f[:, None] - cost) / eps, axis=0)


def _col_error(lse_col, g, b, eps):
    return jnp.sum(jnp.abs(jnp.exp(lse_col + g / eps) - b))


def _finish(f, g):
    """Fixes the gauge g[-1] = 0 (rows with f = -inf stay -inf)."""
    shift = g[-1]
    return f + shift, g - shift


def _sinkhorn_loop(cost, a, b, eps, max_iter: int, tol: float):
    """Primal: iterate until the column error is <= tol or max_iter iterations."""
    log_a, log_b = _safe_log(a), _safe_log(b)
    g0 = jnp.zeros(cost.shape[1], cost.dtype)
    f0 = _f_update(g0, cost, log_a, eps)
    lse0 = _col_lse(f0, cost, eps)
    err0 = _col_error(lse0, g0, b, eps)

    def cond(state):
        _, _, _, err, it = state
        return (it < max_iter) & (err > tol)

    def body(state):
        f, g, lse_col, _, it = state
        g = eps * log_b - eps * lse_col
        f = _f_update(g, cost, log_a, eps)
        lse_col = _col_lse(f, cost, eps)
        return f, g, lse_col, _col_error(lse_col, g, b, eps), it + 1

    f, g, _, err, it = lax.while_loop(cond, body, (f0, g0, lse0, err0, jnp.int32(0)))
    f, g = _finish(f, g)
    return f, g, it, err


@partial(jax.custom_jvp, nondiff_argnums=(4, 5))
def sinkhorn_implicit(cost, a, b, eps, max_iter: int, tol: float):
    """Potentials (f, g), iterations and error; derivative by implicit differentiation."""
    return _sinkhorn_loop(cost, a, b, eps, max_iter, tol)


@sinkhorn_implicit.defjvp
def _sinkhorn_implicit_jvp(max_iter, tol, primals, tangents):
    cost, a, b, eps = primals
    dcost, da, db, deps = tangents
    f, g, it, err = sinkhorn_implicit(cost, a, b, eps, max_iter, tol)
    m = cost.shape[1]
    h = (f[:, None] + g[None, :] - cost) / eps
    plan = jnp.exp(h)
    live = plan > 0
    h = jnp.where(live, h, 0)
    w = dcost / eps + h * (deps / eps)
    pw = jnp.where(live, plan * w, 0)
    u, v = pw.sum(axis=1), pw.sum(axis=0)
    r, c = plan.sum(axis=1), plan.sum(axis=0)
    row_ok = r > 0
    inv_r = jnp.where(row_ok, 1 / jnp.where(row_ok, r, 1), 0)
    rhs = db - plan.T @ ((da + u) * inv_r) + v
    q = jnp.zeros_like(g)
    if m > 1:
        pr = plan[:, : m - 1]
        schur = jnp.diag(c[: m - 1]) - pr.T @ (pr * inv_r[:, None])
        q = q.at[: m - 1].set(jnp.linalg.solve(schur, rhs[: m - 1]))
    p = (da + u - plan @ q) * inv_r
    df = jnp.where(row_ok, eps * p, 0)
    dg = eps * q
    return (f, g, it, err), (df, dg, np.zeros(it.shape, jax.dtypes.float0), jnp.zeros_like(err))


def sinkhorn_unrolled(cost, a, b, eps, max_iter: int, tol: float):
    """Exactly ``max_iter`` iterations in a ``lax.scan``, differentiated by plain autodiff."""
    log_a, log_b = _safe_log(a), _safe_log(b)
    g0 = jnp.zeros(cost.shape[1], cost.dtype)
    f0 = _f_update(g0, cost, log_a, eps)

    def step(carry, _):
        f, _ = carry
        g = eps * log_b - eps * _col_lse(f, cost, eps)
        return (_f_update(g, cost, log_a, eps), g), None

    (f, g), _ = lax.scan(step, (f0, g0), None, length=max_iter)
    err = _col_error(_col_lse(f, cost, eps), g, b, eps)
    f, g = _finish(f, g)
    return f, g, jnp.int32(max_iter), err
