"""Isotonic regression: against NumPy and scikit-learn, both solvers, derivatives, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.isotonic import isotonic_regression as sk_isotonic

from softops import isotonic_kl, isotonic_l2, isotonic_regression
from tests._np_reference import pav_decreasing
from tests.helpers import derivative_battery

OPS = {"l2": isotonic_l2, "kl": isotonic_kl}
METHODS = ["sequential", "parallel"]


@pytest.mark.parametrize("reg", ["l2", "kl"])
# The parallel solver's reference check takes 8 s a case; the fast pass still runs it in
# test_cancellation, test_projection and the solver comparison below.
@pytest.mark.parametrize("method", ["sequential", pytest.param("parallel", marks=pytest.mark.slow)])
def test_matches_numpy_pav(reg, method):
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 40):
        s = rng.standard_normal((3, n)) * 3
        w = rng.standard_normal((3, n))
        got = OPS[reg](jnp.asarray(s), jnp.asarray(w), method=method)
        want = np.stack([pav_decreasing(si, wi, reg) for si, wi in zip(s, w)])
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        assert np.all(np.diff(np.asarray(got), axis=-1) <= 1e-12)  # decreasing


@pytest.mark.parametrize("increasing", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_isotonic_regression_matches_sklearn(increasing, weighted):
    rng = np.random.default_rng(1)
    y = rng.standard_normal((4, 60)) + np.linspace(0, 3, 60) * (1 if increasing else -1)
    weights = rng.uniform(0.1, 2.0, size=y.shape) if weighted else None
    got = isotonic_regression(
        jnp.asarray(y),
        weights=None if weights is None else jnp.asarray(weights),
        increasing=increasing,
    )
    want = np.stack(
        [
            sk_isotonic(
                y[i], sample_weight=None if weights is None else weights[i], increasing=increasing
            )
            for i in range(len(y))
        ]
    )
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("reg", ["l2", "kl"])
@pytest.mark.parametrize(
    "n",
    [10, pytest.param(1000, marks=pytest.mark.slow), pytest.param(10_000, marks=pytest.mark.slow)],
)
def test_solvers_agree(reg, n):
    rng = np.random.default_rng(n)
    s = jnp.asarray(rng.standard_normal((2, n)) * 2 + np.linspace(0, 2, n))
    w = jnp.asarray(rng.standard_normal((2, n)))
    a = OPS[reg](s, w, method="sequential")
    b = OPS[reg](s, w, method="parallel")
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_adversarial_cascade_is_exact():
    # A decreasing run followed by a large value: every block merges one after another.
    y = jnp.concatenate([jnp.arange(50.0, 0.0, -1.0), jnp.array([1000.0])])
    for method in METHODS:
        v = isotonic_l2(y, jnp.zeros_like(y), method=method)
        np.testing.assert_allclose(v, pav_decreasing(np.asarray(y), np.zeros(51), "l2"), rtol=1e-12)


@pytest.mark.parametrize("reg", ["l2", pytest.param("kl", marks=pytest.mark.slow)])
def test_derivative_battery(reg):
    rng = np.random.default_rng(2)
    s = rng.standard_normal(8) * 2
    w = rng.standard_normal(8)
    derivative_battery(lambda s: OPS[reg](s, jnp.asarray(w)), s)
    derivative_battery(lambda w: OPS[reg](jnp.asarray(s), w), w)


@pytest.mark.slow
def test_regression_derivative_battery():
    rng = np.random.default_rng(3)
    y = rng.standard_normal(9)
    weights = jnp.asarray(rng.uniform(0.5, 2.0, 9))
    derivative_battery(lambda y: isotonic_regression(y, weights=weights), y)
    derivative_battery(
        lambda ww: isotonic_regression(jnp.asarray(y), weights=ww), np.asarray(weights)
    )


@pytest.mark.parametrize("reg", ["l2", "kl"])
def test_jit_vmap_axis_equivalence(reg):
    rng = np.random.default_rng(4)
    s = jnp.asarray(rng.standard_normal((2, 3, 6)))
    w = jnp.asarray(rng.standard_normal((2, 3, 6)))
    op = OPS[reg]
    base = op(s, w)
    np.testing.assert_allclose(jax.jit(op)(s, w), base, rtol=1e-12)
    np.testing.assert_allclose(jax.vmap(op)(s, w), base, rtol=1e-12)
    np.testing.assert_allclose(jax.vmap(op, in_axes=(1, 1), out_axes=1)(s, w), base, rtol=1e-12)
    moved = op(jnp.moveaxis(s, -1, 1), jnp.moveaxis(w, -1, 1), axis=1)
    np.testing.assert_allclose(jnp.moveaxis(moved, 1, -1), base, rtol=1e-12)
    # A 1-D w broadcasts along the constrained axis.
    np.testing.assert_allclose(
        op(s, w[0, 0]), op(s, jnp.broadcast_to(w[0, 0], s.shape)), rtol=1e-12
    )


def test_degenerate_inputs():
    for method in METHODS:
        one = isotonic_l2(jnp.array([3.0]), jnp.array([1.0]), method=method)
        np.testing.assert_allclose(one, [2.0])
        equal = isotonic_l2(jnp.full(5, 2.0), jnp.zeros(5), method=method)
        np.testing.assert_allclose(equal, np.full(5, 2.0))
        big = isotonic_kl(jnp.array([1e4, 2e4, -1e4]), jnp.zeros(3), method=method)
        assert np.all(np.isfinite(big))
        np.testing.assert_allclose(
            big, pav_decreasing(np.array([1e4, 2e4, -1e4]), np.zeros(3), "kl")
        )
        empty = isotonic_l2(jnp.zeros((2, 0)), jnp.zeros((2, 0)), method=method)
        assert empty.shape == (2, 0)


def test_nan_stays_in_its_row():
    s = jnp.asarray(np.random.default_rng(5).standard_normal((3, 6)))
    clean = isotonic_l2(s, jnp.zeros_like(s))
    for method in METHODS:
        dirty = isotonic_l2(s.at[1, 2].set(jnp.nan), jnp.zeros_like(s), method=method)
        np.testing.assert_array_equal(dirty[0], clean[0])
        np.testing.assert_array_equal(dirty[2], clean[2])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_low_precision_dtypes(dtype):
    s = jnp.asarray(np.random.default_rng(6).standard_normal(20))
    v = isotonic_l2(s.astype(dtype), jnp.zeros(20, dtype))
    assert v.dtype == dtype
    np.testing.assert_allclose(
        v.astype(jnp.float64),
        isotonic_l2(s.astype(dtype).astype(jnp.float64), jnp.zeros(20)),
        rtol=1e-2,
        atol=1e-2,
    )


def test_bad_input():
    s = jnp.zeros((2, 4))
    with pytest.raises(TypeError, match="`s` must have a floating-point dtype, got dtype int"):
        isotonic_l2(jnp.zeros(4, jnp.int32), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"`axis` must satisfy -2 <= axis < 2.*got axis=2"):
        isotonic_l2(s, s, axis=2)
    with pytest.raises(ValueError, match=r"`w` must .*s.shape=\(2, 4\), w.shape=\(3,\)"):
        isotonic_l2(s, jnp.zeros(3))
    with pytest.raises(ValueError, match="`method` must be one of .*got method='fast'"):
        isotonic_kl(s, s, method="fast")
    with pytest.raises(TypeError, match="`increasing` must be a bool, got increasing=1"):
        isotonic_regression(s, increasing=1)
