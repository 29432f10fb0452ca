"""Tests for softops._ot.newton: 1-D entropic OT onto sorted anchors by semi-dual Newton."""

import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from softops._ot.newton import head_size, newton_rows
from softops.topk_ot import soft_topk_solve
from tests._ot_reference import sinkhorn_ref, soft_topk_ref
from tests._ot_semidual_reference import semidual_ref
from tests.helpers import derivative_battery, fd_jvp

# Issue 11/13 batteries: run by CI in its slow pass (the README command stays under 5 min).
pytestmark = pytest.mark.slow

RNG = np.random.default_rng(0)
rows_jit = jax.jit(newton_rows, static_argnums=(5, 6, 7))


def topk_problem(x, k, valid=None):
    """The arguments of soft_topk's transport (anchors k..0, the rest on 0) for rows x [B, n]."""
    x = jnp.asarray(x)
    nb, n = x.shape
    valid = jnp.ones_like(x) if valid is None else jnp.asarray(valid, x.dtype)
    n_valid = valid.sum(1, keepdims=True)
    m = k + 1 if k < n else k
    y = jnp.arange(k, k - m, -1).astype(x.dtype)
    b = jnp.broadcast_to(1 / n_valid, (nb, m))
    if m > k:
        b = b.at[:, k].set((n_valid[:, 0] - k) / n_valid[:, 0])
    rows = jnp.where(valid > 0, x, 0)
    cost = jnp.where(valid[:, :, None] > 0, (rows[:, :, None] - y[None, None]) ** 2, 0)
    scale = lax.stop_gradient(jnp.max(cost, axis=(1, 2)))  # the paper's M: eps = epsilon M
    return rows, y, valid / n_valid, b, scale


@partial(jax.jit, static_argnames=("k", "tol", "head", "max_iter"))
def solve(x, k, epsilon, *, tol=1e-12, valid=None, head="auto", max_iter=200, scale=None):
    """soft_topk's transport of x [B, n] at eps = epsilon * M (M = max cost, or ``scale``)."""
    rows, y, a, b, m_cost = topk_problem(x, k, valid)
    eps = epsilon * (m_cost if scale is None else scale)
    return newton_rows(rows, y, a, b, eps, max_iter, tol, head)


# ----------------------------------------------------------------------------- references


def test_matches_reference_sinkhorn_general_marginals():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 7))
    y = np.sort(rng.uniform(-2, 2, size=4))[::-1]  # uneven anchor gaps
    a = rng.uniform(0.5, 1.5, size=(3, 7))
    a /= a.sum(1, keepdims=True)
    b = rng.uniform(0.5, 1.5, size=(3, 4))
    b /= b.sum(1, keepdims=True)
    eps = np.array([0.05, 0.3, 2.0])
    f, g, plan, it, err = rows_jit(
        jnp.asarray(x), jnp.asarray(y), jnp.asarray(a), jnp.asarray(b), jnp.asarray(eps), 100, 1e-13
    )
    assert bool(jnp.all(err <= 1e-13)) and int(it.max()) <= 30
    for i in range(3):
        want_plan, want_f, want_g = sinkhorn_ref((x[i, :, None] - y) ** 2, a[i], b[i], eps[i])
        np.testing.assert_allclose(plan[i], want_plan, atol=1e-12)
        np.testing.assert_allclose(g[i], want_g, atol=1e-9)
        np.testing.assert_allclose(f[i], want_f, atol=1e-9)


@pytest.mark.parametrize("k", [3, 8])  # k = n: no rest anchor
def test_topk_matches_reference(k):
    x = RNG.standard_normal((2, 8))
    for epsilon in [0.3, 10.0]:
        _, _, plan, _, err = solve(x, k, epsilon)
        assert bool(jnp.all(8 * err <= 1e-11))
        for i in range(2):
            want_vals, want_assign = soft_topk_ref(x[i], k, epsilon)
            assign = 8 * plan[i, :, :k].T
            np.testing.assert_allclose(assign, want_assign, atol=1e-10)
            np.testing.assert_allclose(assign @ x[i], want_vals, atol=1e-10)


@pytest.mark.parametrize("k", [1, 6])
def test_small_epsilon_matches_semidual_reference(k):
    # Sinkhorn needs O(1/eps) iterations here; the reference solves the semi-dual optimality
    # conditions with MINPACK (which itself fails below about 1e-3: see the next test).
    x = RNG.standard_normal((2, 12))
    rows, y, a, b, scale = topk_problem(x, k)
    for epsilon in [1e-2, 3e-2]:
        _, g, plan, _, err = solve(x, k, epsilon)
        assert bool(jnp.all(err <= 1e-12))
        for i in range(2):
            cost = (x[i][:, None] - np.asarray(y)) ** 2
            want_plan, want_g = semidual_ref(cost, a[i], b[i], epsilon * float(scale[i]))
            np.testing.assert_allclose(plan[i], want_plan, atol=1e-9)


def test_tiny_epsilon_satisfies_optimality_conditions():
    # Independent certificate (NumPy, float64): the plan has the entropic form
    # a_i softmax_j((g_j - C_ij) / eps) for the returned g, and its marginals are a and b.
    # These conditions determine the entropic optimum uniquely.
    x = RNG.standard_normal((3, 40))
    rows, y, a, b, scale = topk_problem(x, 5)
    for epsilon, i in itertools.product([1e-3, 1e-4, 1e-5], range(3)):
        _, g, plan, _, _ = solve(x, 5, epsilon)
        eps = epsilon * float(scale[i])
        z = (np.asarray(g[i])[None, :] - (x[i][:, None] - np.asarray(y)) ** 2) / eps
        z = z - z.max(axis=1, keepdims=True)
        form = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True) / 40
        np.testing.assert_allclose(plan[i], form, atol=1e-9)
        np.testing.assert_allclose(np.asarray(plan[i]).sum(0), b[i], atol=1e-12)
        np.testing.assert_allclose(np.asarray(plan[i]).sum(1), a[i], atol=1e-15)


def test_single_anchor_takes_everything():
    x = jnp.asarray(RNG.standard_normal((2, 3)))
    f, g, plan, it, err = rows_jit(x, jnp.zeros(1), jnp.full((2, 3), 1 / 3), jnp.ones((2, 1)),
                                      jnp.ones(2), 10, 1e-12)  # fmt: skip
    np.testing.assert_allclose(plan[..., 0], 1 / 3)
    assert g.shape == (2, 1) and bool(jnp.all(err < 1e-15)) and bool(jnp.all(it == 0))


# ----------------------------------------------------------------------------- convergence


def test_converges_at_every_epsilon_float64():
    x = RNG.standard_normal((4, 300))
    for epsilon in [10.0, 1e-1, 1e-3, 1e-5]:
        _, _, plan, it, err = solve(x, 5, epsilon, tol=1e-10 / 300)
        assert bool(jnp.all(300 * err <= 1e-10)), err
        assert int(it.max()) <= 30
        np.testing.assert_allclose(plan.sum(-1), 1 / 300, rtol=1e-12)
    # At epsilon = 1e-5 the sorted top-k values approach lax.top_k.
    vals = jnp.einsum("bnk,bn->bk", 300 * plan[:, :, :5], jnp.asarray(x))
    np.testing.assert_allclose(vals, lax.top_k(jnp.asarray(x), 5)[0], atol=1e-3)


def test_converges_on_hard_data():
    # Ties, all equal, huge scale, heavy tails, tight clusters: one row each.
    rng = np.random.default_rng(3)
    x = np.stack([
        rng.integers(0, 4, 200), np.ones(200), 1e4 * rng.standard_normal(200),
        rng.standard_cauchy(200), np.repeat(rng.standard_normal(5), 40) + 1e-4 * rng.random(200),
    ]).astype(np.float64)  # fmt: skip
    for epsilon in [1.0, 1e-3, 1e-5]:
        _, _, plan, it, err = solve(x, 6, epsilon, tol=1e-10 / 200)
        assert bool(jnp.all(200 * err <= 1e-10)), (epsilon, err)
        assert int(it.max()) <= 40
        # Tied items share the slots equally.
        np.testing.assert_allclose(200 * plan[1, :, :6], 1 / 200, atol=1e-9)


def test_float32_ties_converge_at_small_epsilon():
    # All equal, integer scores, clusters: the thresholds on a tie are carried as offsets from
    # their start (float32 t alone stalled at a residual of 5.5e-4 / 6.4e-4 in mask units).
    rng = np.random.default_rng(3)
    x = np.stack([
        np.ones(200), rng.integers(0, 4, 200), rng.integers(-2, 3, 200),
        np.repeat(rng.standard_normal(5), 40) + 1e-4 * rng.random(200),
    ])  # fmt: skip
    x = jnp.asarray(x, jnp.float32)
    for epsilon in [1.0, 1e-3, 1e-4]:
        out = soft_topk_solve(x, 6, epsilon=epsilon, max_iter=100)
        assert bool(jnp.all(out.converged)), (epsilon, out.residual, out.iterations)
        assert int(out.iterations.max()) <= 40
    # At epsilon = 1e-4 the tied items share the slots and the values are lax.top_k's.
    np.testing.assert_allclose(out.values, lax.top_k(x, 6)[0], atol=1e-4)
    for row, top in [(0, 200), (1, int(np.sum(np.asarray(x[1]) == 3)))]:
        share = np.where(np.asarray(x[row]) == np.asarray(x[row]).max(), 6 / top, 0)
        np.testing.assert_allclose(out.assignment[row].sum(0), share, atol=1e-4)


def test_float32_small_epsilon_converges_with_finite_gradients():
    n, k = 400, 8  # screened: head_size(400, 9) = 50
    x = jnp.asarray(RNG.standard_normal((4, n)), jnp.float32)
    u = jnp.asarray(RNG.standard_normal((4, k)), jnp.float32)
    tol = 16 * n * float(jnp.finfo(jnp.float32).eps)

    @jax.jit
    def run(x, epsilon):
        def vals(x):
            _, _, plan, _, err = solve(x, k, epsilon, tol=tol / n)
            return jnp.einsum("bnk,bn->bk", n * plan[:, :, :k], x), err

        grad = jax.grad(lambda x: jnp.sum(vals(x)[0] * u))(x)
        return *vals(x), grad

    for epsilon in [1.0, 1e-2, 1e-4]:
        v, err, grad = run(x, jnp.float32(epsilon))
        assert v.dtype == jnp.float32
        assert bool(jnp.all(n * err <= tol)), (epsilon, err)
        assert bool(jnp.all(jnp.isfinite(grad))) and bool(jnp.all(jnp.isfinite(v)))
    np.testing.assert_allclose(v, lax.top_k(x, k)[0], atol=0.05)


# ----------------------------------------------------------------------------- screening


@pytest.mark.parametrize("epsilon", [1e-4, pytest.param(1e-2, marks=pytest.mark.slow)])
def test_screened_solve_is_optimal_and_differentiable(epsilon):
    # n = 160 >= 4 * head_size(160, 2): the head of 20 items is solved first; at epsilon = 1e-4
    # the rest is certified negligible, at 1e-2 it is not and Newton goes on with the full rows.
    n, k = 160, 1
    head = head_size(n, k + 1)
    assert head is not None
    x = jnp.asarray(RNG.standard_normal((3, n)))
    v = jnp.asarray(RNG.standard_normal((3, n)))
    u = jnp.asarray(RNG.standard_normal((3, n, k + 1)))

    scale = topk_problem(x, k)[4]  # M held fixed, as soft_topk does

    def plan(x):
        return solve(x, k, epsilon, tol=1e-11 / n, scale=scale)[2]

    p_screen, jv = jax.jvp(plan, (x,), (v,))
    # Screened: the items outside the head sit exactly on the last anchor.
    exact_zeros = int(jnp.sum(p_screen[:, :, 0] == 0))
    assert exact_zeros >= 3 * (n - head) if epsilon == 1e-4 else exact_zeros == 0
    # Optimal: the plan has the entropic form for its own potentials and the right marginals.
    _, y, a, b, _ = topk_problem(x, k)
    pot_f, g, _, _, _ = solve(x, k, epsilon, tol=1e-11 / n, scale=scale)
    for i in range(3):
        cost = (np.asarray(x[i])[:, None] - np.asarray(y)) ** 2
        z = (np.asarray(pot_f[i])[:, None] + np.asarray(g[i]) - cost) / (epsilon * float(scale[i]))
        np.testing.assert_allclose(p_screen[i], np.exp(z), atol=1e-12)
        np.testing.assert_allclose(np.asarray(p_screen[i]).sum(0), b[i], atol=1e-11)
    np.testing.assert_allclose(jv, fd_jvp(plan, x, v), atol=1e-7)
    (ju,) = jax.vjp(plan, x)[1](u)
    np.testing.assert_allclose(jnp.vdot(u, jv), jnp.vdot(ju, v), rtol=1e-10)


def test_head_skipped_when_marginals_are_not_topk_like():
    # Uniform b needs half of each row on the first anchor: a head of 20 items cannot hold it.
    n, m = 160, 2
    x = jnp.asarray(RNG.standard_normal((2, n)))
    a = jnp.full((2, n), 1 / n)
    b = jnp.full((2, m), 1 / m)
    y = jnp.arange(m, 0, -1.0)
    _, _, plan, _, err = jax.jit(newton_rows, static_argnums=(5, 6))(
        x, y, a, b, jnp.full(2, 0.01), 100, 1e-12
    )
    assert bool(jnp.all(err <= 1e-12))
    np.testing.assert_allclose(plan.sum(1), 1 / m, atol=1e-12)


# ----------------------------------------------------------------------------- derivatives


def test_derivative_battery_all_inputs():
    # Every input in one vector: x, eps (fixed in cost units, as soft_topk holds M constant),
    # anchors y, and shifts of a and b that keep sum(a) == sum(b); outputs plan, f and g.
    a0 = jnp.full((2, 5), 0.2)
    b0 = jnp.asarray([[0.3, 0.2, 0.5], [0.1, 0.4, 0.5]])

    def run(p):
        x, eps, y = p[:10].reshape(2, 5), p[10:12], p[12:15]
        da, db = p[15:25].reshape(2, 5), p[25:]
        a = a0 + da - da.mean(1, keepdims=True)
        b = b0 + jnp.stack([db, -db / 2, -db / 2], axis=1)
        f, g, plan, _, _ = newton_rows(x, y, a, b, eps, 100, 1e-14)
        return jnp.concatenate([plan.ravel(), f.ravel(), g.ravel()])

    p0 = np.concatenate([
        RNG.standard_normal(10), [0.2, 0.7], [1.5, 0.2, -1.0], 0.01 * RNG.standard_normal(10),
        [0.01, -0.02],
    ])  # fmt: skip
    derivative_battery(jax.jit(run), p0, order=1)


@pytest.mark.slow
def test_derivative_battery_x_second_order():
    def f(x):
        return solve(x.reshape(1, 6), 2, 0.3, tol=1e-14, scale=jnp.asarray([4.0]))[2].ravel()

    derivative_battery(jax.jit(f), RNG.standard_normal(6), order=2, atol=1e-4, rtol=1e-4)


def test_potentials_are_consistent_with_the_plan():
    x = jnp.asarray(RNG.standard_normal((1, 6)))
    y = jnp.asarray([2.0, 1.0, 0.0])
    a, b, eps = jnp.full((1, 6), 1 / 6), jnp.asarray([[1 / 6, 1 / 6, 2 / 3]]), jnp.asarray([0.4])
    f, g, plan, _, _ = rows_jit(x, y, a, b, eps, 100, 1e-14)
    cost = (x[0][:, None] - y[None]) ** 2
    np.testing.assert_allclose(
        plan[0], jnp.exp((f[0][:, None] + g[0][None] - cost) / 0.4), atol=1e-13
    )


# ----------------------------------------------------------------------------- edge cases


def test_masked_items_and_nan_rows():
    x = RNG.standard_normal((3, 9))
    valid = RNG.uniform(size=(3, 9)) > 0.3
    valid[:, :3] = True
    x_bad = np.where(valid, x, np.nan)
    x_bad[2, 0] = np.nan  # a NaN among the valid entries of row 2
    valid_j = jnp.asarray(valid)
    _, _, plan, _, err = solve(jnp.asarray(np.where(valid, x_bad, 0)), 2, 0.2, valid=valid_j)
    assert bool(jnp.all(plan[:2][~valid[:2]] == 0)) and bool(jnp.all(jnp.isnan(plan[2])))
    assert bool(jnp.all(err[:2] <= 1e-12)) and not bool(err[2] <= 1e-12)
    for i in range(2):
        row = x[i][valid[i]]
        _, want = soft_topk_ref(row, 2, 0.2)
        np.testing.assert_allclose(row.size * plan[i][valid[i]][:, :2].T, want, atol=1e-9)


def test_jit_vmap_and_batch_agree():
    x = jnp.asarray(RNG.standard_normal((4, 10)))

    def one(row):
        return solve(row[None], 3, 0.1)[2][0]

    batched = solve(x, 3, 0.1)[2]
    np.testing.assert_allclose(jax.jit(jax.vmap(one))(x), batched, atol=1e-12)
