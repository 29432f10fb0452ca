"""Tests for softops.topk_ot: entropic-OT top-k (Xie et al., 2020)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.test_util import check_grads

from softops.topk_ot import (
    sinkhorn,
    soft_topk,
    soft_topk_mask,
    soft_topk_mask_solve,
    soft_topk_solve,
)
from tests._ot_reference import sinkhorn_ref, soft_topk_ref, topk_mask_ref
from tests.helpers import RTOL32, derivative_battery, fd_jvp

RNG = np.random.default_rng(0)
X8 = RNG.standard_normal(8)
X8_TIES = np.array([0.3, 1.2, -0.5, 1.2, 0.3, 0.3, -2.0, 0.9])


def battery(f, x, **kwargs):
    """``derivative_battery`` on the jitted op (compiled once instead of op by op)."""
    derivative_battery(jax.jit(f), x, **kwargs)


# ----------------------------------------------------------------------------- references


@pytest.mark.parametrize("x", [X8, X8_TIES], ids=["random", "ties"])
@pytest.mark.parametrize("k", [0, 1, 3, 7, 8])
@pytest.mark.parametrize("largest", [True, False])
def test_mask_matches_reference(x, k, largest):
    got = soft_topk_mask(jnp.asarray(x), k, largest=largest, epsilon=0.3)
    if 0 < k < x.size:
        want = topk_mask_ref(x, k, 0.3, largest=largest)
    else:
        want = np.full(x.size, float(k > 0))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(got.sum(), k, atol=1e-10)


@pytest.mark.parametrize("x", [X8, X8_TIES], ids=["random", "ties"])
@pytest.mark.parametrize("k", [1, 3])
def test_mask_sinkhorn_solver_agrees_with_newton(x, k):
    x = jnp.asarray(x)
    newton = soft_topk_mask_solve(x, k, epsilon=0.2)
    sink = soft_topk_mask_solve(x, k, epsilon=0.2, solver="sinkhorn", max_iter=10_000)
    assert bool(newton.converged) and bool(sink.converged)
    np.testing.assert_allclose(newton.mask, sink.mask, atol=1e-10)
    np.testing.assert_allclose(newton.threshold, sink.threshold, atol=1e-8)
    v = jnp.asarray(RNG.standard_normal(8))
    _, jn = jax.jvp(lambda x: soft_topk_mask(x, k, epsilon=0.2), (x,), (v,))
    _, js = jax.jvp(
        lambda x: soft_topk_mask(x, k, epsilon=0.2, solver="sinkhorn", max_iter=10_000), (x,), (v,)
    )
    np.testing.assert_allclose(jn, js, atol=1e-8)


@pytest.mark.parametrize("x", [X8, X8_TIES], ids=["random", "ties"])
@pytest.mark.parametrize("k", [0, 1, 3, 7, 8])
@pytest.mark.parametrize("largest", [True, False])
def test_soft_topk_matches_reference(x, k, largest):
    vals, assign = soft_topk(jnp.asarray(x), k, largest=largest, epsilon=0.3, tol=1e-12)
    assert vals.shape == (k,) and assign.shape == (k, 8)
    if k == 0:
        return
    want_vals, want_assign = soft_topk_ref(x, k, 0.3, largest=largest)
    np.testing.assert_allclose(assign, want_assign, atol=1e-9)
    np.testing.assert_allclose(vals, want_vals, atol=1e-9)


def test_sinkhorn_matches_reference():
    cost = RNG.uniform(size=(2, 6, 4))
    a = RNG.uniform(0.5, 1.5, size=(2, 6))
    a /= a.sum(-1, keepdims=True)
    b = RNG.uniform(0.5, 1.5, size=(2, 4))
    b /= b.sum(-1, keepdims=True)
    out = sinkhorn(jnp.asarray(cost), jnp.asarray(a), jnp.asarray(b), epsilon=0.1, tol=1e-13)
    assert bool(jnp.all(out.converged)) and bool(jnp.all(out.residual <= 1e-13))
    for i in range(2):
        plan, f, g = sinkhorn_ref(cost[i], a[i], b[i], 0.1)
        np.testing.assert_allclose(out.plan[i], plan, atol=1e-12)
        np.testing.assert_allclose(out.f[i], f, atol=1e-10)
        np.testing.assert_allclose(out.g[i], g, atol=1e-10)
    np.testing.assert_allclose(out.plan.sum(-1), a, atol=1e-14)


# ----------------------------------------------------------------------------- derivatives


@pytest.mark.slow  # about 18 s; the fast pass checks the mask's derivative in the tests below
@pytest.mark.parametrize("largest", [True, False])
def test_mask_derivative_battery(largest):
    battery(lambda x: soft_topk_mask(x, 3, largest=largest, temperature=0.5), X8)
    battery(lambda x: soft_topk_mask(x, 3, largest=largest, temperature=0.4), X8_TIES)


# x of the probe, the same with a tie in the max (the max is differentiable almost
# everywhere; at a tie JAX's rule splits the tangent equally, which is the symmetric derivative
# that central differences measure), and a tie in the min.
X6 = np.array([0.3, -1.2, 2.5, 0.0, 1.1, 0.7])
X6_TIE_MAX = np.array([0.3, -1.2, 2.5, 0.0, 2.5, 0.7])
X6_TIE_MIN = np.array([0.3, -1.2, 2.5, -1.2, 1.1, 0.7])
_W6 = jnp.asarray([True, True, False, True, True, True])
# Every top-k op at its default strength (epsilon=0.1, M = max C a function of x), by kernel.
DEFAULT_STRENGTH_OPS = {
    "mask": lambda x: jnp.concatenate([
        soft_topk_mask(x, 3),
        soft_topk_mask(x, 2, largest=False, where=_W6),
        soft_topk_mask(x, 3, solver="sinkhorn"),
    ]),
    "newton": lambda x: jnp.concatenate([
        o.ravel() for o in (*soft_topk(x, 3), *soft_topk(x, 2, where=_W6), *soft_topk(x, 6))
    ]),
    "sinkhorn": lambda x: jnp.concatenate([
        o.ravel()
        for o in (
            *soft_topk(x, 3, solver="sinkhorn"),
            *soft_topk(x, 2, solver="sinkhorn", where=_W6),
            *soft_topk(x, 6, solver="sinkhorn"),
        )
    ]),
}  # fmt: skip


def test_epsilon_derivative_is_the_derivative_of_the_value():
    # The probe: the gradient of sum(mask * u) under epsilon= agrees with central finite
    # differences (it was off by 0.78 on a gradient of size 2.0 with M held constant).
    x, u = jnp.asarray(X6), jnp.arange(6.0)
    f = lambda x: jnp.sum(soft_topk_mask(x, 3, epsilon=0.1) * u)  # noqa: E731
    fd = np.array([fd_jvp(f, x, e) for e in np.eye(6)])
    np.testing.assert_allclose(jax.grad(f)(x), fd, atol=1e-7)


@pytest.mark.slow  # about 100 s: a forward-mode and a reverse-mode compile of every kernel
@pytest.mark.parametrize("op", sorted(DEFAULT_STRENGTH_OPS))
def test_default_strength_check_grads(op):
    # check_grads (fwd and rev, float64) for soft_topk_mask / soft_topk (newton and sinkhorn;
    # values, assignment, where=, k = n) at their defaults, at distinct scores and at ties in the
    # max and in the min. eps=1e-6: at a tie in the max the central difference carries an
    # O(eps) term (the second derivative differs on either side of the kink).
    for x in (X6, X6_TIE_MAX, X6_TIE_MIN):
        check_grads(
            DEFAULT_STRENGTH_OPS[op], (jnp.asarray(x),), order=1, modes=("fwd", "rev"), eps=1e-6
        )


@pytest.mark.slow
def test_mask_derivative_battery_with_where_and_float_k():
    where = jnp.asarray(X8 > -1.0)
    battery(lambda x: soft_topk_mask(x, 2, where=where, temperature=0.5), X8)
    battery(lambda k: soft_topk_mask(jnp.asarray(X8), k[0], temperature=0.5), [2.5], order=1)
    battery(lambda t: soft_topk_mask(jnp.asarray(X8), 2, temperature=t[0]), [0.7], order=1)
    dk = jax.jacfwd(lambda k: soft_topk_mask(jnp.asarray(X8), k, temperature=0.5))(2.5)
    np.testing.assert_allclose(dk.sum(), 1.0, rtol=1e-12)


@pytest.mark.parametrize("order", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_soft_topk_derivative_battery(order):
    def f(x):
        vals, assign = soft_topk(x, 3, temperature=1.0, tol=1e-13)
        return jnp.concatenate([vals, assign.ravel()])

    battery(f, X8, order=order, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("order", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_sinkhorn_derivative_battery(order):
    cost0 = RNG.uniform(size=(5, 3))
    b = jnp.asarray([0.2, 0.3, 0.5])

    def plan(c):
        return sinkhorn(c.reshape(5, 3), b=b, epsilon=0.3, tol=1e-14).plan.ravel()

    battery(plan, cost0.ravel(), order=order)

    def by_eps(e):
        return sinkhorn(jnp.asarray(cost0), epsilon=e[0], tol=1e-14).plan.ravel()

    battery(by_eps, [0.3], order=order)


@pytest.mark.slow  # 8 s; the fast pass checks these derivatives against finite differences
def test_implicit_matches_unrolled_to_convergence():
    x = jnp.asarray(X8)
    v = jnp.asarray(RNG.standard_normal(8))

    def f(mode, it):
        return jax.jit(
            lambda x: soft_topk(
                x, 3, temperature=1.0, max_iter=it, tol=1e-14, differentiation=mode,
                solver="sinkhorn" if mode == "unrolled" else "newton",
            )
        )  # fmt: skip

    (vi, ai), (dvi, dai) = jax.jvp(f("implicit", 10_000), (x,), (v,))
    (vu, au), (dvu, dau) = jax.jvp(f("unrolled", 2000), (x,), (v,))
    np.testing.assert_allclose(vi, vu, atol=1e-12)
    np.testing.assert_allclose(dvi, dvu, atol=1e-9)
    np.testing.assert_allclose(dai, dau, atol=1e-9)
    gi = jax.grad(lambda x: f("implicit", 10_000)(x)[0] @ v[:3])(x)
    gu = jax.grad(lambda x: f("unrolled", 2000)(x)[0] @ v[:3])(x)
    np.testing.assert_allclose(gi, gu, atol=1e-9)
    fd = fd_jvp(lambda x: f("implicit", 10_000)(x)[0], x, v)
    np.testing.assert_allclose(dvi, fd, atol=1e-6)


def test_mask_fd_on_batch_with_axis():
    x = jnp.asarray(RNG.standard_normal((6, 3)))
    v = jnp.asarray(RNG.standard_normal((6, 3)))
    f = lambda x: soft_topk_mask(x, 2, axis=0, temperature=0.7)  # noqa: E731
    _, jv = jax.jvp(f, (x,), (v,))
    np.testing.assert_allclose(jv, fd_jvp(f, x, v), atol=1e-7)


# ----------------------------------------------------------------------------- batching


def test_vmap_and_axis_equivalence():
    x = jnp.asarray(RNG.standard_normal((4, 7)))
    k = jnp.asarray([1, 2, 3, 6])
    mask = jax.jit(lambda x, k: soft_topk_mask(x, k, epsilon=0.3))
    batched = mask(x, k)
    np.testing.assert_allclose(jax.vmap(mask)(x, k), batched, atol=1e-12)
    by_axis = jax.jit(lambda x, k: soft_topk_mask(x, k, axis=0, epsilon=0.3))(x.T, k)
    np.testing.assert_allclose(by_axis, batched.T, atol=1e-12)
    np.testing.assert_allclose(batched.sum(-1), k, atol=1e-10)
    sorted_op = jax.jit(lambda x: soft_topk(x, 2, epsilon=0.3))
    v1, a1 = sorted_op(x)
    v2, a2 = jax.vmap(sorted_op)(x)
    np.testing.assert_allclose(v1, v2, atol=1e-12)
    np.testing.assert_allclose(a1, a2, atol=1e-12)
    v3, a3 = jax.jit(lambda x: soft_topk(x, 2, axis=0, epsilon=0.3))(x.T)
    np.testing.assert_allclose(v3, v1.T, atol=1e-12)
    np.testing.assert_allclose(a3, a1, atol=1e-12)
    eager = soft_topk_mask(x, k, epsilon=0.3)
    np.testing.assert_allclose(eager, batched, atol=1e-12)


def test_traced_k_is_clipped_and_exact_at_ends():
    x = jnp.asarray(RNG.standard_normal((3, 5)))
    k = jnp.asarray([0, 5, 9])
    out = jax.jit(lambda x, k: soft_topk_mask(x, k, epsilon=0.3))(x, k)
    np.testing.assert_array_equal(out, np.array([[0.0] * 5, [1.0] * 5, [1.0] * 5]))


# ----------------------------------------------------------------------------- limits, invariants


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("largest", [True, False])
def test_small_epsilon_recovers_hard_topk(k, largest):
    # Distinct scores 0.05 apart: with epsilon = 1e-4 (T = eps M / 2 < 1e-4) the mask is hard.
    x = jnp.asarray(np.stack([RNG.permutation(20) * 0.05 - 0.5 for _ in range(5)]))
    sign = 1 if largest else -1
    _, idx = lax.top_k(sign * x, k)
    hard = jnp.zeros_like(x).at[jnp.arange(5)[:, None], idx].set(1.0)
    np.testing.assert_allclose(soft_topk_mask(x, k, largest=largest, epsilon=1e-4), hard, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("largest", [True, False])
def test_sorted_small_temperature_approaches_hard_topk(largest):
    # Sinkhorn needs O(1/T) iterations, so the sorted limit is checked on a grid of spacing 0.1.
    x = jnp.asarray(np.stack([RNG.permutation(20) * 0.1 for _ in range(3)]))
    sign = 1 if largest else -1
    hard_vals, idx = lax.top_k(sign * x, 3)
    hard = jnp.zeros((3, 3, 20)).at[jnp.arange(3)[:, None], jnp.arange(3)[None, :], idx].set(1.0)
    errors = []
    for t in [0.04, 0.02, 0.01]:
        out = soft_topk_solve(x, 3, largest=largest, temperature=t, max_iter=20_000, tol=1e-7)
        assert bool(jnp.all(out.converged))
        errors.append(float(jnp.max(jnp.abs(out.assignment - hard))))
        np.testing.assert_allclose(out.values, sign * hard_vals, atol=5 * errors[-1])
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.05, errors


def test_sum_equals_k_to_tolerance():
    x = jnp.asarray(RNG.standard_normal((16, 50)))
    k = jnp.asarray(RNG.integers(1, 50, size=16)).astype(jnp.float64) + 0.25
    out = soft_topk_mask_solve(x, k, epsilon=0.05, tol=1e-11)
    assert bool(jnp.all(out.converged))
    assert float(jnp.max(jnp.abs(out.mask.sum(-1) - k))) <= 1e-11
    assert float(jnp.max(out.residual)) <= 1e-11
    assert bool(jnp.all((out.mask >= 0) & (out.mask <= 1)))
    sorted_out = soft_topk_solve(x, 4, epsilon=0.2, tol=1e-10)
    assert bool(jnp.all(sorted_out.converged))
    np.testing.assert_allclose(sorted_out.assignment.sum(-1), 1.0, atol=1e-10)


def test_float32_robust_small_epsilon_large_n():
    n = 100_000
    x = jnp.asarray(RNG.standard_normal((2, n)), jnp.float32)
    u = jnp.asarray(RNG.standard_normal((2, n)), jnp.float32)

    @jax.jit
    def run(x, eps):
        out = soft_topk_mask_solve(x, n // 8, epsilon=eps)
        grad = jax.grad(lambda x: jnp.vdot(soft_topk_mask(x, n // 8, epsilon=eps), u))(x)
        return out, grad

    tol = 4 * n * float(jnp.finfo(jnp.float32).eps)
    for eps in [1e-4, 1e-2, 1.0, 10.0]:
        out, grad = run(x, jnp.float32(eps))
        assert out.mask.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(out.mask))) and bool(jnp.all(jnp.isfinite(grad)))
        assert bool(jnp.all(out.converged)), (eps, out.residual)
        sums = np.asarray(out.mask, np.float64).sum(-1)
        np.testing.assert_allclose(sums, n // 8, atol=2 * tol)


def test_float32_mask_sums_to_k_on_tied_rows():
    # The probe: float32 rows with two values, heavy ties or all equal, k = 16, small
    # epsilon; the threshold resolved below an ulp of the scores (carried as an offset). Rows
    # were reported converged with |sum A - k| up to 0.32 (two-point, 1e-5).
    rng = np.random.default_rng(3)
    n, k = 256, 16
    two = rng.integers(0, 2, size=(6, n)) * rng.uniform(0.5, 3, (6, 1)) + rng.normal(0, 3, (6, 1))
    heavy = rng.integers(-2, 3, size=(6, n)) + rng.normal(0, 3, (6, 1))
    equal = np.ones((2, n)) * rng.normal(0, 3, (2, 1))
    x = jnp.asarray(np.concatenate([two, heavy, equal]), jnp.float32)
    run = jax.jit(lambda x, eps: soft_topk_mask_solve(x, k, epsilon=eps))
    tol = 4 * n * float(jnp.finfo(jnp.float32).eps)  # the default
    for eps in (1e-4, 1e-5):
        out = run(x, jnp.float32(eps))
        assert bool(jnp.all(out.converged)), (eps, out.residual)
        assert float(out.residual.max()) <= tol
        err = np.abs(np.asarray(out.mask, np.float64).sum(-1) - k)
        assert err.max() <= tol, (eps, err)


def test_float32_sorted_finite_at_small_epsilon():
    x = jnp.asarray(RNG.standard_normal((2, 2000)), jnp.float32)

    @jax.jit
    def run(x, eps):
        out = soft_topk_solve(x, 8, epsilon=eps, max_iter=300)
        grad = jax.grad(lambda x: soft_topk(x, 8, epsilon=eps, max_iter=300)[0].sum())(x)
        return out, grad

    for eps in [1e-4, 1e-2, 10.0]:
        out, grad = run(x, jnp.float32(eps))
        assert bool(jnp.all(jnp.isfinite(out.values))) and bool(jnp.all(jnp.isfinite(grad)))
        # Sinkhorn needs O(1/eps) iterations: at eps = 1e-4 it stops at max_iter, unconverged,
        # and says so.
        assert bool(jnp.all(out.converged | (out.iterations == 300)))
        if eps >= 1e-2:
            assert bool(jnp.all(out.converged))


@pytest.mark.slow  # about 80 s: float32 and float64 compiles of the sorted solver at n = 2000
def test_float32_sorted_values_match_float64_at_small_epsilon():
    # The probe: float32 sorted top-k of normal rows stopped at a residual of 4e-3
    # (the old tolerance 16 n eps) with values 4e-3 away from float64's at eps = 1e-4, and at
    # eps = 1e-5 rows did not converge. The plan is now evaluated from the logit gaps where the
    # fast logits stall, and the tolerance is sqrt(eps) in mask units.
    rng = np.random.default_rng(0)
    n, k = 2000, 31
    x = rng.standard_normal((24, n))
    run = jax.jit(lambda x, eps: soft_topk_solve(x, k, epsilon=eps))
    for eps in (1e-3, 1e-4, 1e-5):
        o32 = run(jnp.asarray(x, jnp.float32), jnp.float32(eps))
        o64 = run(jnp.asarray(x), eps)
        assert bool(jnp.all(o32.converged)) and bool(jnp.all(o64.converged)), eps
        tol = float(jnp.finfo(jnp.float32).eps) ** 0.5
        assert float(o32.residual.max()) <= tol, eps
        if eps >= 1e-4:
            err = np.abs(np.asarray(o32.values, np.float64) - np.asarray(o64.values))
            assert err.max() <= 1e-3, (eps, err.max())


def test_float32_matches_float64():
    x = RNG.standard_normal((3, 40))
    mask = jax.jit(lambda x: soft_topk_mask(x, 5, epsilon=0.05))
    grad = jax.jit(jax.grad(lambda x: mask(x)[0, 0]))
    m32, m64 = mask(jnp.asarray(x, jnp.float32)), mask(jnp.asarray(x))
    assert m32.dtype == jnp.float32
    np.testing.assert_allclose(m32, m64, rtol=RTOL32, atol=1e-5)
    g32, g64 = grad(jnp.asarray(x, jnp.float32)), grad(jnp.asarray(x))
    np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-3 * float(jnp.abs(g64).max()))


def test_where_gives_exact_zeros():
    x = jnp.asarray(RNG.standard_normal((2, 9)))
    where = jnp.asarray(RNG.uniform(size=(2, 9)) > 0.3)
    x_bad = jnp.where(where, x, jnp.nan)
    out = soft_topk_mask(x_bad, 2, epsilon=0.2, where=where)
    assert bool(jnp.all(out[~where] == 0.0))
    for i in range(2):
        row = np.asarray(x[i])[np.asarray(where[i])]
        np.testing.assert_allclose(out[i][where[i]], topk_mask_ref(row, 2, 0.2), atol=1e-10)
    loss = jax.jit(lambda x: jnp.sum(soft_topk_mask(x, 2, epsilon=0.2, where=where) ** 2))
    grad = jax.grad(loss)(x_bad)
    assert bool(jnp.all(grad[~where] == 0.0)) and bool(jnp.all(jnp.isfinite(grad)))
    vals, assign = soft_topk(x_bad, 2, epsilon=0.2, where=where)
    assert bool(jnp.all(jnp.swapaxes(assign, -1, -2)[~where] == 0.0))
    for i in range(2):
        row = np.asarray(x[i])[np.asarray(where[i])]
        want_vals, _ = soft_topk_ref(row, 2, 0.2)
        np.testing.assert_allclose(vals[i], want_vals, atol=1e-7)


def test_nan_row_does_not_affect_others():
    x = jnp.asarray(RNG.standard_normal((3, 6))).at[1, 2].set(jnp.nan)
    out = soft_topk_mask_solve(x, 2, epsilon=0.3)
    assert bool(jnp.all(jnp.isnan(out.mask[1]))) and not bool(out.converged[1])
    np.testing.assert_allclose(out.mask[0], soft_topk_mask(x[0], 2, epsilon=0.3), atol=1e-14)
    np.testing.assert_allclose(out.mask[2].sum(), 2.0, atol=1e-10)


def test_temperature_relation():
    x = jnp.asarray(X8)
    eps = 0.3
    m = float(jnp.max(jnp.maximum(x**2, (x - 1) ** 2)))
    np.testing.assert_allclose(
        soft_topk_mask(x, 3, epsilon=eps), soft_topk_mask(x, 3, temperature=eps * m / 2), atol=1e-12
    )


# ----------------------------------------------------------------------------- memory


def test_compiled_memory_does_not_grow_with_iterations():
    x = jnp.asarray(RNG.standard_normal((4, 64)))

    def temp_bytes(max_iter, mode):
        def loss(x):
            solver = "sinkhorn" if mode == "unrolled" else "newton"
            vals, _ = soft_topk(
                x, 8, epsilon=0.1, max_iter=max_iter, differentiation=mode, solver=solver
            )
            return vals.sum()

        f = jax.jit(jax.value_and_grad(loss))
        return f.lower(x).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes(10, "implicit") == temp_bytes(5000, "implicit")
    assert temp_bytes(200, "unrolled") > 10 * temp_bytes(10, "unrolled")


# ----------------------------------------------------------------------------- errors


def test_errors_name_argument_and_value():
    x = jnp.ones(5)
    msg = "`k` must satisfy 0 <= k <= n along axis -1, got k=7 for n=5"
    with pytest.raises(ValueError, match=re.escape(msg)):
        soft_topk_mask(x, 7)
    with pytest.raises(ValueError, match="got k=-1"):
        soft_topk(x, -1)
    with pytest.raises(TypeError, match="`k` must be a Python int"):
        soft_topk(x, 2.5)
    with pytest.raises(TypeError, match="`k` must be a Python int"):
        soft_topk_mask(x, 1.5)  # a Python float k: not an int, not an array
    with pytest.raises(ValueError, match="got k=7.5 for n=5"):
        soft_topk_mask(x, jnp.asarray(7.5))
    with pytest.raises(TypeError, match="`k` must be"):
        soft_topk_mask(x, True)
    with pytest.raises(TypeError, match="`k` must be a Python int"):
        soft_topk(x, jnp.asarray(2))
    with pytest.raises(ValueError, match="`k` must be a scalar or broadcast"):
        soft_topk_mask(jnp.ones((2, 5)), jnp.asarray([1, 2, 3]))
    for bad in [0.0, -1.0, float("nan"), float("inf")]:
        with pytest.raises(ValueError, match="`epsilon` must be positive and finite"):
            soft_topk_mask(x, 2, epsilon=bad)
    with pytest.raises(ValueError, match="`temperature` must be positive"):
        soft_topk(x, 2, temperature=0.0)
    with pytest.raises(ValueError, match="mutually exclusive"):
        soft_topk_mask(x, 2, epsilon=0.1, temperature=0.1)
    with pytest.raises(ValueError, match="`where` must have the shape"):
        soft_topk_mask(x, 2, where=jnp.ones(4, bool))
    with pytest.raises(TypeError, match="`where` must be a boolean"):
        soft_topk_mask(x, 2, where=jnp.ones(5))
    with pytest.raises(TypeError, match="`x` must have a floating-point dtype"):
        soft_topk_mask(jnp.arange(5), 2)
    with pytest.raises(ValueError, match="`axis` must satisfy"):
        soft_topk(x, 2, axis=1)
    with pytest.raises(ValueError, match="`solver` must be one of"):
        soft_topk_mask(x, 2, solver="bisect")
    with pytest.raises(ValueError, match="`differentiation` must be one of"):
        soft_topk(x, 2, differentiation="auto")
    with pytest.raises(ValueError, match="`cost` must have shape"):
        sinkhorn(jnp.ones(3), epsilon=0.1)
    with pytest.raises(ValueError, match="`b` must broadcast"):
        sinkhorn(jnp.ones((3, 2)), b=jnp.ones(3) / 3, epsilon=0.1)
    with pytest.raises(ValueError, match="`epsilon` must be positive"):
        sinkhorn(jnp.ones((3, 2)), epsilon=-0.1)


@pytest.mark.slow
def test_grads_through_check_grads_for_sinkhorn_mask_solver():
    f = lambda x: soft_topk_mask(x, 3, temperature=0.5, solver="sinkhorn", max_iter=5000)  # noqa: E731
    check_grads(f, (jnp.asarray(X8),), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)
