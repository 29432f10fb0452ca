r"""Log-domain Sinkhorn with an implicit forward-mode derivative (private).

For problems with cost ``C`` [..., n, m], marginals ``a`` [..., n], ``b`` [..., m] and
regularization ε [...], the entropic optimal-transport dual is solved by alternating exact block
maximizations,

$$
g_j \leftarrow \varepsilon \log b_j - \varepsilon \mathrm{LSE}_i ((f_i - C_{ij})/\varepsilon),
\quad
f_i \leftarrow \varepsilon \log a_i - \varepsilon \mathrm{LSE}_j ((g_j - C_{ij})/\varepsilon),
$$

with plan $P_{ij} = \exp((f_i + g_j - C_{ij})/\varepsilon)$. Each iteration ends on an
``f`` update, so the row marginals are exact and the error is $\|P^\top 1 - b\|_1$.
The gauge $(f + c, g - c)$ is fixed by $g_{m-1} = 0$. All problems of a batch run in
one loop (finished ones frozen), shard by shard (``softops._sharding.batch_local``).

Derivative (forward mode, implicit). With $p = df/\varepsilon$, $q = dg/\varepsilon$ and
$w_{ij} = dC_{ij}/\varepsilon + h_{ij}\, d\varepsilon/\varepsilon$,
$h = (f_i + g_j - C_{ij})/\varepsilon$, the linearized marginal conditions are
$r_i p_i + (Pq)_i - u_i = da_i$ and $(P^\top p)_j + c_j q_j - v_j = db_j$ with
$r = P1$, $c = P^\top 1$, $u = (P \odot w)1$, $v = (P \odot w)^\top 1$.
Eliminating $p$ leaves $(\mathrm{diag}(c) - P^\top D_r^{-1} P) q = db - P^\top D_r^{-1}
(da + u) + v$, singular along $1$; the gauge $q_{m-1} = 0$ leaves an (m-1)×(m-1)
symmetric positive-definite system, solved densely: O(nm + m³), no loop in the tangent.

Marginal tangents that change the mass ($\sum da \ne \sum db$) leave the feasible set. The
rows of the loop's iterates are exact, so for any positive masses its limit (gauge fixed) solves the
problem with marginals $(a, \beta)$, $\beta = b \sum a / \sum b$; the tangent is
that of this map: ``db`` is replaced by $d\beta$ (equal to ``db`` when the masses balance),
which keeps the dropped last column equation satisfied and agrees with unrolled differentiation.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import logsumexp

from softops._sharding import batch_local, like_vma


class SinkhornOutput(NamedTuple):
    r"""Result of [`softops.sinkhorn`][softops.topk_ot.sinkhorn].

    Attributes:
        f: row potentials, ``[..., n]``.
        g: column potentials, ``[..., m]`` (gauge: ``g[..., -1] == 0``).
        plan: the transport plan $P_{ij} = \exp((f_i + g_j - C_{ij})/\varepsilon)$,
            ``[..., n, m]``; its rows sum to ``a`` exactly.
        iterations: Sinkhorn iterations used, int32 ``[...]``.
        residual: final column-marginal error $\|P^\top 1 - b\|_1$, in the units of ``b``.
        converged: ``residual <= tol``, bool ``[...]``.
    """

    f: jax.Array
    g: jax.Array
    plan: jax.Array
    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


def safe_log(a: jax.Array) -> jax.Array:
    """log(a) with -inf at a == 0 and a gradient-safe branch."""
    pos = a > 0
    return jnp.where(pos, jnp.log(jnp.where(pos, a, 1)), -jnp.inf)


def _f_update(g, cost, log_a, eps):
    """Row potentials [..., n] from column potentials; ``eps`` [...]."""
    e = eps[..., None]
    return e * log_a - e * logsumexp((g[..., None, :] - cost) / e[..., None], axis=-1)


def _col_lse(f, cost, eps):
    return logsumexp((f[..., :, None] - cost) / eps[..., None, None], axis=-2)


def _col_error(lse_col, g, b, eps):
    return jnp.sum(jnp.abs(jnp.exp(lse_col + g / eps[..., None]) - b), axis=-1)


def _gauge(f, g):
    """Fixes the gauge g[..., -1] = 0 (rows with f = -inf stay -inf)."""
    shift = g[..., -1:]
    return f + shift, g - shift


@batch_local(item_ndims=(2, 1, 1, 0), out_item_ndims=(1, 1, 0, 0), name="cost")
def _loop(cost, a, b, eps, *, max_iter: int, tol: float):
    """Iterates until every problem's column error is <= tol, or max_iter iterations."""
    shape = cost.shape
    cost = cost.reshape(-1, *shape[-2:])
    a, b, eps = a.reshape(-1, shape[-2]), b.reshape(-1, shape[-1]), eps.reshape(-1)
    log_a, log_b = safe_log(a), safe_log(b)
    g0 = jnp.zeros_like(b)
    f0 = _f_update(g0, cost, log_a, eps)
    lse0 = _col_lse(f0, cost, eps)
    err0 = _col_error(lse0, g0, b, eps)
    it0 = jnp.zeros(err0.shape, jnp.int32)

    def active(err, it):
        return (it < max_iter) & (err > tol)  # NaN errors stop at once

    def cond(state):
        *_, err, it = state
        return jnp.any(active(err, it))

    def body(state):
        f, g, lse_col, err, it = state
        go = active(err, it)
        g_n = eps[:, None] * (log_b - lse_col)
        f_n = _f_update(g_n, cost, log_a, eps)
        lse_n = _col_lse(f_n, cost, eps)
        err_n = _col_error(lse_n, g_n, b, eps)
        keep = go[:, None]
        return (
            jnp.where(keep, f_n, f),
            jnp.where(keep, g_n, g),
            jnp.where(keep, lse_n, lse_col),
            jnp.where(go, err_n, err),
            it + go.astype(jnp.int32),
        )

    init = like_vma((f0, g0, lse0, err0, it0), cost)
    f, g, _, err, it = lax.while_loop(cond, body, init)
    f, g = _gauge(f, g)
    batch = shape[:-2]
    return f.reshape(*batch, -1), g.reshape(*batch, -1), it.reshape(batch), err.reshape(batch)


def sinkhorn_implicit(cost, a, b, eps, max_iter: int, tol: float):
    """Potentials (f, g), iterations and error of problems [..., n, m]; implicit derivative.

    The loop runs on values without gradient; `_potentials_at` gives the derivatives.
    """
    sg = lax.stop_gradient
    f, g, it, err = _loop(sg(cost), sg(a), sg(b), sg(eps), max_iter=max_iter, tol=tol)
    f, g = _potentials_at(cost, a, b, eps, f, g)
    return f, g, it, err


@jax.custom_jvp
def _potentials_at(cost, a, b, eps, f, g):
    """The potentials found by the loop, with the tangent of the optimality conditions."""
    del cost, a, b, eps
    return f, g


def _column_target_tangent(a, b, da, db):
    r"""Tangent of the column marginal the iteration reaches, $\beta = b\,\sum a/\sum b$.

    Rows are exact, so the loop's limit (gauge fixed) solves the problem with marginals
    ``(a, β)``; for mass-balanced tangents (``sum(da) == sum(db)`` at ``sum(a) == sum(b)``)
    ``dβ == db``.
    """
    sa, sb = a.sum(axis=-1, keepdims=True), b.sum(axis=-1, keepdims=True)
    dsa, dsb = da.sum(axis=-1, keepdims=True), db.sum(axis=-1, keepdims=True)
    return (sa * db + b * dsa) / sb - b * (sa * dsb) / (sb * sb)


@_potentials_at.defjvp
def _potentials_at_jvp(primals, tangents):
    cost, a, b, eps, f, g = primals
    dcost, da, db, deps = tangents[:4]
    f, g = _potentials_at(cost, a, b, eps, f, g)  # so that higher orders see the fixed point
    db = _column_target_tangent(a, b, da, db)
    m = cost.shape[-1]
    e = eps[..., None, None]
    h = (f[..., :, None] + g[..., None, :] - cost) / e
    plan = jnp.exp(h)
    live = plan > 0
    h = jnp.where(live, h, 0)
    w = dcost / e + h * (deps[..., None, None] / e)
    pw = jnp.where(live, plan * w, 0)
    u, v = pw.sum(axis=-1), pw.sum(axis=-2)
    r, c = plan.sum(axis=-1), plan.sum(axis=-2)
    row_ok = r > 0
    inv_r = jnp.where(row_ok, 1 / jnp.where(row_ok, r, 1), 0)
    rhs = db - jnp.einsum("...nm,...n->...m", plan, (da + u) * inv_r) + v
    q = jnp.zeros_like(g)
    if m > 1:
        pr = plan[..., : m - 1]
        schur = jnp.einsum("...m,mk->...mk", c[..., : m - 1], jnp.eye(m - 1, dtype=c.dtype))
        schur = schur - jnp.einsum("...nm,...nk->...mk", pr, pr * inv_r[..., None])
        sol = jnp.linalg.solve(schur, rhs[..., : m - 1, None])[..., 0]
        q = jnp.concatenate([sol, jnp.zeros_like(g[..., :1])], axis=-1)
    p = (da + u - jnp.einsum("...nm,...m->...n", plan, q)) * inv_r
    df = jnp.where(row_ok, eps[..., None] * p, 0)
    return (f, g), (df, eps[..., None] * q)


def sinkhorn_unrolled(cost, a, b, eps, max_iter: int, tol: float):
    """Exactly ``max_iter`` iterations in a ``lax.scan``, differentiated by plain autodiff."""
    del tol
    log_a, log_b = safe_log(a), safe_log(b)
    g0 = jnp.zeros_like(b)
    f0 = _f_update(g0, cost, log_a, eps)

    def step(carry, _):
        f, _ = carry
        g = eps[..., None] * (log_b - _col_lse(f, cost, eps))
        return (_f_update(g, cost, log_a, eps), g), None

    (f, g), _ = lax.scan(step, like_vma((f0, g0), cost, a, b, eps), None, length=max_iter)
    err = _col_error(_col_lse(f, cost, eps), g, b, eps)
    f, g = _gauge(f, g)
    return f, g, jnp.full(err.shape, max_iter, jnp.int32), err


def plan_of(f, g, cost, eps):
    """The plan from potentials; rows with ``f = -inf`` (zero mass) are zero."""
    f_ok = f > -jnp.inf
    h = (jnp.where(f_ok, f, 0)[..., :, None] + g[..., None, :] - cost) / eps[..., None, None]
    return jnp.where(f_ok[..., :, None], jnp.exp(h), 0)
