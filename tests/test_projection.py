"""soft_sort, soft_rank and projection_permutahedron: NumPy reference, derivatives, invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp

from softops import projection_permutahedron, soft_rank, soft_sort
from tests import _np_reference as ref
from tests.helpers import derivative_battery

OPS = {"soft_rank": soft_rank, "soft_sort": soft_sort}
REF = {"soft_rank": ref.soft_rank, "soft_sort": ref.soft_sort}


@pytest.mark.parametrize("op", ["soft_rank", "soft_sort"])
@pytest.mark.parametrize("reg", ["l2", "kl"])
@pytest.mark.parametrize("descending", [False, True])
def test_matches_numpy_reference(op, reg, descending):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 11))
    for eps in (0.1, 1.0, 10.0):
        got = OPS[op](
            jnp.asarray(x), regularization=reg, regularization_strength=eps, descending=descending
        )
        want = np.stack([REF[op](row, eps, reg, descending) for row in x])
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("op", ["soft_rank", "soft_sort"])
@pytest.mark.parametrize(
    "reg, eps",
    # KL derivatives stay in the fast pass through the float64 reference JVPs/VJPs (test_refdata)
    [("l2", 0.3)]
    + [pytest.param("kl", 0.3, marks=pytest.mark.slow)]
    + [
        pytest.param(reg, eps, marks=pytest.mark.slow)
        for reg in ("l2", "kl")
        for eps in (10.0, 100.0)
    ],
)
def test_derivative_battery(op, reg, eps):
    # KL soft sort at strengths 10 and 100 is where the reference code's Jacobian is wrong:
    # multi-element PAV blocks.
    x = np.random.default_rng(1).standard_normal(7) * 3
    derivative_battery(lambda x: OPS[op](x, regularization=reg, regularization_strength=eps), x)


@pytest.mark.slow
@pytest.mark.parametrize("reg", ["l2", "kl"])
def test_projection_derivatives_in_z_and_w(reg):
    rng = np.random.default_rng(2)
    z = rng.standard_normal(6)
    w = rng.uniform(0.5, 3.0, 6)
    derivative_battery(lambda z: projection_permutahedron(z, jnp.asarray(w), regularization=reg), z)
    derivative_battery(lambda w: projection_permutahedron(jnp.asarray(z), w, regularization=reg), w)


def test_kl_soft_sort_jacobian_in_multi_element_blocks():
    # At eps=100 the PAV blocks are large; compare the full Jacobian with central differences.
    x = jnp.asarray(np.random.default_rng(3).standard_normal(6))

    def f(x):
        return soft_sort(x, regularization="kl", regularization_strength=100.0)

    jac = jax.jacfwd(f)(x)
    h = 1e-6
    fd = np.stack([(f(x.at[i].add(h)) - f(x.at[i].add(-h))) / (2 * h) for i in range(6)], axis=1)
    np.testing.assert_allclose(jax.jacrev(f)(x), jac, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jac, fd, rtol=1e-6, atol=1e-8)
    # Blocks have more than one element here, otherwise the check would not bite.
    assert np.sum(np.abs(np.asarray(jac)) > 1e-9) > 6


def test_hessian_runs_and_is_zero_for_l2():
    x = jnp.asarray(np.random.default_rng(4).standard_normal(5))
    for op in (soft_rank, soft_sort):
        h = jax.hessian(lambda x, op=op: jnp.sum(op(x) * jnp.arange(5.0)))(x)
        np.testing.assert_allclose(h, np.zeros((5, 5)), atol=1e-12)
    h_kl = jax.hessian(lambda x: jnp.sum(soft_rank(x, regularization="kl") ** 2))(x)
    assert np.all(np.isfinite(h_kl)) and np.allclose(h_kl, h_kl.T, atol=1e-10)


@pytest.mark.parametrize("op", ["soft_rank", "soft_sort"])
def test_jit_vmap_axis_and_strength_array(op):
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((2, 3, 8)))
    eps = jnp.asarray(rng.uniform(0.1, 2.0, (2, 3)))
    f = OPS[op]
    base = f(x, regularization_strength=eps)
    np.testing.assert_allclose(
        jax.jit(lambda x, e: f(x, regularization_strength=e))(x, eps), base, rtol=1e-12
    )
    np.testing.assert_allclose(
        jax.vmap(lambda x, e: f(x, regularization_strength=e))(x, eps), base, rtol=1e-12
    )
    moved = f(jnp.moveaxis(x, -1, 0), axis=0, regularization_strength=eps)
    np.testing.assert_allclose(jnp.moveaxis(moved, 0, -1), base, rtol=1e-12)
    rows = np.stack(
        [[f(x[i, j], regularization_strength=eps[i, j]) for j in range(3)] for i in range(2)]
    )
    np.testing.assert_allclose(rows, base, rtol=1e-12)
    one_d = f(x[0, 0])
    assert one_d.shape == (8,)


@pytest.mark.parametrize("reg", ["l2", "kl"])
def test_invariants(reg):
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.standard_normal((4, 30)))
    n = 30
    for eps in (0.01, 1.0, 100.0):
        r = soft_rank(x, regularization=reg, regularization_strength=eps)
        s = soft_sort(x, regularization=reg, regularization_strength=eps)
        assert np.all(np.diff(np.asarray(s), axis=-1) >= -1e-12)  # monotone
        # Soft ranks are monotone in x: the order of x is the order of its ranks.
        order = np.argsort(np.asarray(x), axis=-1)
        assert np.all(np.diff(np.take_along_axis(np.asarray(r), order, -1), axis=-1) >= -1e-12)
        if reg == "l2":
            np.testing.assert_allclose(r.sum(-1), n * (n + 1) / 2, rtol=1e-12)
            np.testing.assert_allclose(s.sum(-1), x.sum(-1), rtol=1e-10, atol=1e-10)
    perm = rng.permutation(n)
    np.testing.assert_allclose(
        soft_rank(x[:, perm], regularization=reg),
        soft_rank(x, regularization=reg)[:, perm],
        rtol=1e-12,
    )


@pytest.mark.parametrize("reg", ["l2", "kl"])
def test_ties_get_equal_ranks(reg):
    x = jnp.array([0.5, -1.0, 0.5, 2.0, -1.0, 0.5])
    for eps in (1e-3, 1.0):
        r = np.asarray(soft_rank(x, regularization=reg, regularization_strength=eps))
        assert r[0] == pytest.approx(r[2], abs=1e-12) and r[0] == pytest.approx(r[5], abs=1e-12)
        assert r[1] == pytest.approx(r[4], abs=1e-12)
    np.testing.assert_allclose(
        soft_rank(x, regularization_strength=1e-3), [4, 1.5, 4, 6, 1.5, 4], atol=1e-9
    )


@pytest.mark.parametrize("reg", ["l2", "kl"])
def test_limits(reg):
    x = jnp.asarray(np.random.default_rng(7).standard_normal((3, 9)))
    hard_ranks = jnp.argsort(jnp.argsort(x, axis=-1), axis=-1) + 1
    np.testing.assert_allclose(
        soft_rank(x, regularization=reg, regularization_strength=1e-4), hard_ranks, atol=1e-8
    )
    np.testing.assert_allclose(
        soft_rank(x, regularization=reg, regularization_strength=1e-4, descending=True),
        10 - hard_ranks,
        atol=1e-8,
    )
    np.testing.assert_allclose(
        soft_sort(x, regularization=reg, regularization_strength=1e-4), jnp.sort(x), atol=1e-8
    )
    np.testing.assert_allclose(
        soft_sort(x, regularization=reg, regularization_strength=1e-4, descending=True),
        jnp.sort(x)[:, ::-1],
        atol=1e-8,
    )
    np.testing.assert_allclose(
        soft_rank(x, regularization=reg, regularization_strength=1e8),
        np.full((3, 9), 5.0),
        atol=1e-6,
    )
    if reg == "l2":
        s = soft_sort(x, regularization_strength=1e8)
        np.testing.assert_allclose(s, np.broadcast_to(x.mean(-1, keepdims=True), (3, 9)), atol=1e-6)


def test_degenerate_inputs():
    for op in (soft_rank, soft_sort):
        assert op(jnp.array([3.0])).tolist() == ([1.0] if op is soft_rank else [3.0])
        np.testing.assert_allclose(soft_rank(jnp.full(4, 7.0)), np.full(4, 2.5))
        np.testing.assert_allclose(soft_sort(jnp.full(4, 7.0)), np.full(4, 7.0))
        big = op(jnp.array([1e6, -3e6, 2e6]), regularization="kl")
        assert np.all(np.isfinite(big))
        grad = jax.grad(lambda x, op=op: jnp.sum(op(x, regularization="kl") ** 2))(
            jnp.array([1e3, -3e3, 2e3])
        )
        assert np.all(np.isfinite(grad))
        assert op(jnp.zeros((2, 0))).shape == (2, 0)


@pytest.mark.slow  # the default method is checked in the fast pass by test_nonfinite.py
def test_nan_stays_in_its_row():
    x = jnp.asarray(np.random.default_rng(8).standard_normal((3, 6)))
    for op in (soft_rank, soft_sort):
        clean = op(x)
        for method in ("sequential", "parallel"):
            dirty = op(x.at[1, 3].set(jnp.nan), method=method)
            np.testing.assert_array_equal(dirty[0], clean[0])
            np.testing.assert_array_equal(dirty[2], clean[2])


@pytest.mark.parametrize(
    "dtype", [jnp.float32, jnp.bfloat16, pytest.param(jnp.float16, marks=pytest.mark.slow)]
)
def test_low_precision(dtype):
    x = jnp.asarray(np.random.default_rng(9).standard_normal((2, 16)))
    for op in (soft_rank, soft_sort):
        got = op(x.astype(dtype))
        assert got.dtype == dtype
        want = op(x.astype(dtype).astype(jnp.float64))
        np.testing.assert_allclose(got.astype(jnp.float64), want, rtol=1e-2, atol=2e-2)
        u = jnp.broadcast_to(jnp.arange(16.0, dtype=dtype), (2, 16))
        g = jax.grad(lambda x, op=op: jnp.sum(op(x) * u))(x.astype(dtype))
        assert g.dtype == dtype and np.all(np.isfinite(np.asarray(g, np.float32)))


def test_projection_matches_definition():
    z = jnp.array([10.0, 0.0, 5.0])
    np.testing.assert_allclose(projection_permutahedron(z), [3.0, 1.0, 2.0])
    w = jnp.array([1.0, 4.0, 2.0])
    p = projection_permutahedron(z * 0.1, w)
    np.testing.assert_allclose(p.sum(), w.sum(), rtol=1e-12)  # a point of the permutahedron
    np.testing.assert_allclose(soft_rank(z), projection_permutahedron(z), rtol=1e-12)
    np.testing.assert_allclose(
        soft_rank(z, regularization="kl"),
        projection_permutahedron(z, regularization="kl"),
        rtol=1e-12,
    )


def test_bad_input():
    x = jnp.zeros((2, 4))
    with pytest.raises(
        ValueError,
        match="`regularization` must be one of 'l2', 'kl', 'p=3/2', 'p=4/3', "
        "got regularization='l1'",
    ):
        soft_rank(x, regularization="l1")
    with pytest.raises(
        ValueError, match="`regularization_strength` must be positive and finite, got .*=0.0"
    ):
        soft_sort(x, regularization_strength=0.0)
    with pytest.raises(
        ValueError, match="`regularization_strength` must be positive and finite, got .*=-1"
    ):
        soft_rank(x, regularization_strength=-1)
    with pytest.raises(TypeError, match="`x` must have a floating-point dtype, got dtype int32"):
        soft_rank(jnp.zeros(4, jnp.int32))
    with pytest.raises(ValueError, match="`axis` must satisfy -2 <= axis < 2 .*got axis=-3"):
        soft_sort(x, axis=-3)
    with pytest.raises(
        ValueError, match=r"`regularization_strength` must be a scalar or broadcast .*\(2,\)"
    ):
        soft_rank(x, regularization_strength=jnp.ones(3))
    with pytest.raises(ValueError, match=r"`w` must have shape \(4,\)"):
        projection_permutahedron(x, jnp.ones(3))
    with pytest.raises(TypeError, match="`descending` must be a bool"):
        soft_rank(x, descending="yes")


@pytest.mark.parametrize("descending", [False, True])
def test_kl_soft_sort_large_strength_limit(descending):
    # The docs' limit: descending tends to logsumexp(x) - log n, ascending to its mirror
    # -(logsumexp(-x) - log n) (not the mean, and not the same constant), up to offsets of 1/ε.
    x = jnp.array([0.3, -1.2, 2.0, 0.7])
    out = soft_sort(x, regularization="kl", regularization_strength=1e6, descending=descending)
    sign = 1.0 if descending else -1.0
    limit = sign * (logsumexp(sign * x) - jnp.log(4.0))
    np.testing.assert_allclose(out, jnp.full(4, limit), atol=1e-5)
