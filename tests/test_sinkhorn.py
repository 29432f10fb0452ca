"""Derivatives of softops.sinkhorn with respect to the marginals ``a`` and ``b``.

Along tangents that keep the masses equal (``sum(da) == sum(db)``) the derivative is that of the
OT problem. Other tangents leave the feasible set; the derivative is then that of the map the
iteration computes (rows exact): the solution with marginals ``(a, b * sum(a) / sum(b))``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from softops.topk_ot import sinkhorn
from tests.helpers import fd_jvp

RNG = np.random.default_rng(3)
N, M, EPS = 40, 5, 0.01
_X, _Y = RNG.uniform(size=N), RNG.uniform(size=M)
COST = jnp.asarray((_X[:, None] - _Y[None, :]) ** 2)
A = jnp.asarray(RNG.uniform(0.5, 1.5, N))
A = A / A.sum()
B = jnp.asarray(RNG.uniform(0.5, 1.5, M))
B = B / B.sum()
# Perturbed marginals of unequal mass never converge: the loop runs to max_iter, by which time the
# potentials (gauge fixed) have reached their limit.
KW = dict(epsilon=EPS, tol=1e-13, max_iter=20_000)


@jax.jit
def _plan(a, b):
    return sinkhorn(COST, a, b, **KW).plan


@jax.jit
def _unrolled(a, b):
    return sinkhorn(COST, a, b, epsilon=EPS, max_iter=3000, differentiation="unrolled").plan


def _zero_sum(v):
    return v - v.mean()


@pytest.mark.parametrize("which", ["a", "b", "both"])
def test_marginal_derivative_along_balanced_tangents(which):
    # The OT derivative: finite differences stay on the feasible set.
    da = _zero_sum(RNG.standard_normal(N)) if which != "b" else np.zeros(N)
    db = _zero_sum(RNG.standard_normal(M)) if which != "a" else np.zeros(M)
    if which == "both":  # mass moves, equally on both sides
        da, db = da + 0.3 / N, db + 0.3 / M
    da, db = jnp.asarray(da), jnp.asarray(db)
    _, jv = jax.jvp(_plan, (A, B), (da, db))

    def along(t):
        return _plan(A + t[0] * da, B + t[0] * db)

    for h in (1e-6, 1e-7):
        fd = fd_jvp(along, [0.0], [1.0], eps=h)
        np.testing.assert_allclose(jv, fd, atol=1e-7 * float(jnp.abs(jv).max()))
    _, ju = jax.jvp(_unrolled, (A, B), (da, db))
    np.testing.assert_allclose(jv, ju, atol=1e-9)


def test_marginal_derivative_along_any_tangent():
    # Regression: the implicit rule once let the last column take the mass a tangent adds,
    # 2.8 (absolute, plan entries of size ~3) away from finite differences and from unrolling.
    da, db = jnp.asarray(RNG.standard_normal(N)), jnp.asarray(RNG.standard_normal(M))
    _, jv = jax.jvp(_plan, (A, B), (da, db))

    def rescaled(a, b):
        return sinkhorn(COST, a, b * (a.sum() / b.sum()), **KW).plan

    _, want = jax.jvp(rescaled, (A, B), (da, db))  # a balanced tangent of the rescaled problem
    np.testing.assert_allclose(jv, want, atol=1e-10)
    _, ju = jax.jvp(_unrolled, (A, B), (da, db))
    np.testing.assert_allclose(jv, ju, atol=1e-9)
    fd = fd_jvp(lambda t: _plan(A + t[0] * da, B + t[0] * db), [0.0], [1.0], eps=1e-6)
    np.testing.assert_allclose(jv, fd, atol=1e-7 * float(jnp.abs(jv).max()))
    # b scaled alone changes nothing; scaling a scales the plan.
    _, d_scale_b = jax.jvp(_plan, (A, B), (jnp.zeros(N), B))
    np.testing.assert_allclose(d_scale_b, 0, atol=1e-12)
    plan, d_scale_a = jax.jvp(_plan, (A, B), (A, jnp.zeros(M)))
    np.testing.assert_allclose(d_scale_a, plan, atol=1e-12)


@pytest.mark.parametrize("order", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_marginal_check_grads(order):
    # Tangents in every direction: most of them change the mass.
    a, b = A[:6] / A[:6].sum(), B[:3] / B[:3].sum()

    # Traced marginals (jit): known ones of different mass raise, traced ones are solved with b
    # scaled to the mass of a, the map whose derivative is documented (finite differences leave
    # the feasible set).
    @jax.jit
    def plan(a, b):
        return sinkhorn(COST[:6, :3], a, b, epsilon=0.1, tol=1e-14, max_iter=5000).plan

    check_grads(plan, (a, b), order=order, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)
