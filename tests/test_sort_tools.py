"""Tests for softops._ot.permutation and softops._isotonic.quantize: parity with ott's soft_sort."""

import doctest
import re
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softops._isotonic import quantize as quantize_module
from softops._isotonic.quantize import soft_quantile_normalization, soft_quantize
from softops._ot import permutation as permutation_module
from softops._ot.permutation import soft_permutation, sort_with
from tests import _sort_reference as ref
from tests._ot_reference import sinkhorn_ref, soft_topk_ref
from tests.helpers import derivative_battery

# Issue 11/13 batteries: run by CI in its slow pass (the README command stays under 5 min).
pytestmark = pytest.mark.slow

RNG = np.random.default_rng(0)
X7 = RNG.standard_normal(7)
X7_TIES = np.array([0.3, 1.2, -0.5, 1.2, 0.3, 0.3, -2.0])
TARGETS = np.array([4.0, -1.0, 0.5, 2.0, 9.0])
WEIGHTS = np.array([0.1, 0.3, 0.2, 0.25, 0.15])


def test_doctests():
    with (
        jax.enable_x64(False),
        jax.numpy_dtype_promotion("standard"),
        jax.numpy_rank_promotion("allow"),
    ):
        for module in [permutation_module, quantize_module]:
            result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
            assert result.failed == 0 and result.attempted >= 2


# ----------------------------------------------------------------------------- transport


def test_soft_permutation_matches_reference_plan():
    x = X7
    perm = soft_permutation(jnp.asarray(x), temperature=0.7, tol=1e-13)
    y = np.arange(7.0)
    plan, _, _ = sinkhorn_ref((x[:, None] - y) ** 2, np.full(7, 1 / 7), np.full(7, 1 / 7), 1.4)
    np.testing.assert_allclose(perm, 7 * plan.T, atol=1e-11)
    np.testing.assert_allclose(perm.sum(0), 1, atol=1e-12)
    np.testing.assert_allclose(perm.sum(1), 1, atol=1e-12)
    down = soft_permutation(jnp.asarray(x), temperature=0.7, descending=True, tol=1e-13)
    np.testing.assert_allclose(down, perm[::-1], atol=1e-11)


def test_soft_permutation_limits_and_ties():
    x = jnp.asarray(X7)
    hard = jax.nn.one_hot(jnp.argsort(x), 7)
    np.testing.assert_allclose(soft_permutation(x, temperature=1e-4), hard, atol=1e-9)
    np.testing.assert_allclose(soft_permutation(x, temperature=1e4), 1 / 7, atol=1e-3)
    # Tied scores share their positions equally.
    tied = soft_permutation(jnp.asarray(X7_TIES), temperature=1e-3)
    np.testing.assert_allclose(tied[5:, [1, 3]], 0.5, atol=1e-9)  # the two 1.2 at the top
    np.testing.assert_allclose(tied[2:5][:, [0, 4, 5]], 1 / 3, atol=1e-9)


def test_sort_with_limits_and_topk():
    feats = jnp.asarray(RNG.standard_normal((7, 3)))
    c = jnp.asarray(X7)
    order = np.argsort(X7)
    np.testing.assert_allclose(sort_with(feats, c, temperature=1e-4), feats[order], atol=1e-9)
    top = sort_with(feats, c, temperature=1e-4, k=3, descending=True)
    np.testing.assert_allclose(top, feats[order[::-1][:3]], atol=1e-9)
    np.testing.assert_allclose(
        sort_with(feats, c, temperature=1e5), feats.mean(0)[None].repeat(7, 0), atol=1e-3
    )
    # Scalars: sort_with(x, x) is a soft sort whose rows are convex combinations.
    batch = jnp.asarray(RNG.standard_normal((2, 4, 7)))
    out = sort_with(batch, batch, temperature=0.3, k=2)
    assert out.shape == (2, 4, 2)
    assert bool(jnp.all(out[..., 0] <= out[..., 1] + 1e-12))  # increasing rows
    assert bool(
        jnp.all((out >= batch.min(-1, keepdims=True)) & (out <= batch.max(-1, keepdims=True)))
    )


def test_sort_with_topk_rows_match_reference_soft_topk():
    x = X7
    cost_max = np.max(np.maximum(x**2, (x - 3) ** 2))  # soft_topk's M for k = 3
    got = sort_with(jnp.asarray(x), jnp.asarray(x), temperature=0.2 * cost_max / 2, k=3,
                    descending=True, tol=1e-13)  # fmt: skip
    want, _ = soft_topk_ref(x, 3, 0.2)
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_matches_ott_where_definitions_coincide():
    ott = pytest.importorskip("ott.tools.soft_sort")
    n, eps = 7, 0.05
    x = jnp.asarray(X7)
    ident = {"squashing_fun": lambda z: z, "epsilon": eps, "threshold": 1e-12,
             "max_iterations": 100_000}  # fmt: skip
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):  # ott-jax
        ot = ott.transport_for_sort(x, jnp.ones(n) / n, jnp.ones(n) / n, **ident)
        want = ott.sort_with(
            feats := jnp.asarray(RNG.standard_normal((n, 3))), x[:, None], topk=3, **ident
        )
    perm = soft_permutation(x, temperature=(n - 1) * eps / 2, tol=1e-13)
    np.testing.assert_allclose(perm, n * ot.matrix.T, atol=1e-9)
    got = sort_with(feats, x, temperature=3 * eps / 2, k=3, descending=True, tol=1e-13)
    np.testing.assert_allclose(got[::-1], want, atol=1e-9)


# ----------------------------------------------------------------------------- permutahedron


@jax.jit
def _qn(x, eps):
    return soft_quantile_normalization(x, TARGETS, WEIGHTS, regularization_strength=eps)


@partial(jax.jit, static_argnums=1)
def _quantize(x, levels, eps):
    return soft_quantize(x, levels, regularization_strength=eps)


@pytest.mark.parametrize("x", [X7, X7_TIES], ids=["random", "ties"])
def test_permutahedron_ops_match_references(x):
    for eps in [1e-2, 0.5, 3.0]:
        want = ref.quantile_normalization(x, TARGETS, WEIGHTS, eps)
        np.testing.assert_allclose(_qn(jnp.asarray(x), eps), want, atol=1e-10)
        for levels in [1, 3, 7, 10]:
            got = _quantize(jnp.asarray(x), levels, eps)
            np.testing.assert_allclose(got, ref.quantize(x, levels, eps), atol=1e-10)


@pytest.mark.parametrize("x", [X7, X7_TIES], ids=["random", "ties"])
def test_permutahedron_limits(x):
    xj = jnp.asarray(x)
    hard_qn = ref.hard_quantile_normalization(x, TARGETS, WEIGHTS)
    np.testing.assert_allclose(_qn(xj, 1e-6), hard_qn, atol=1e-9)
    mean_t = np.sum(TARGETS * WEIGHTS) / WEIGHTS.sum()
    np.testing.assert_allclose(_qn(xj, 1e8), mean_t, atol=1e-6)
    for levels in [2, 3]:
        np.testing.assert_allclose(
            _quantize(xj, levels, 1e-6), ref.hard_quantize(x, levels), atol=1e-9
        )
        np.testing.assert_allclose(_quantize(xj, levels, 1e8), x.mean(), atol=1e-6)
    # One level: the mean at every strength; n equal targets 1..n: the soft ranks.
    np.testing.assert_allclose(_quantize(xj, 1, 0.3), x.mean(), atol=1e-12)
    from softops import soft_rank

    ranks = soft_quantile_normalization(xj, jnp.arange(1.0, 8.0), regularization_strength=0.4)
    np.testing.assert_allclose(ranks, soft_rank(xj, regularization_strength=0.4), atol=1e-12)


@pytest.mark.slow  # ott-jax's Sinkhorn at epsilon = 1e-3: tens of seconds
def test_hard_limits_match_ott():
    ott = pytest.importorskip("ott.tools.soft_sort")
    x = jnp.asarray(np.array([0.1, 2.0, 0.4, 3.1, -1.0, 0.25]))
    kw = {
        "squashing_fun": lambda z: z,
        "epsilon": 1e-3,
        "threshold": 1e-9,
        "max_iterations": 200_000,
    }
    targets = jnp.asarray(np.sort(TARGETS))
    weights = jnp.asarray(WEIGHTS[np.argsort(TARGETS)])
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):  # ott-jax
        quantized = ott.quantize(x, num_levels=3, **kw)
        want = ott.quantile_normalization(x, targets, weights, **kw)
    np.testing.assert_allclose(
        soft_quantize(x, 3, regularization_strength=1e-6), quantized, atol=1e-3
    )
    got = soft_quantile_normalization(x, targets, weights, regularization_strength=1e-6)
    np.testing.assert_allclose(got, want, atol=1e-3)


# ----------------------------------------------------------------------------- derivatives


def test_derivative_battery_transport():
    def ops(p):  # features [7, 2] and criterion [7] in one vector
        perm = soft_permutation(p[14:], temperature=0.8, tol=1e-14)
        rows = sort_with(p[:14].reshape(7, 2), p[14:], temperature=0.8, k=3, tol=1e-14)
        return jnp.concatenate([perm.ravel(), rows.ravel()])

    derivative_battery(jax.jit(ops), np.concatenate([RNG.standard_normal(14), X7_TIES]), order=1)


def _permutahedron_ops(p):  # x [7] and targets [5] in one vector
    x, targets = p[:7], p[7:]
    return jnp.concatenate([
        soft_quantize(x, 3, regularization_strength=0.3),
        soft_quantile_normalization(x, targets, WEIGHTS, regularization_strength=0.3),
    ])  # fmt: skip


@pytest.mark.parametrize("order", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_derivative_battery_permutahedron(order):
    # Piecewise linear: checked at a generic point near ties.
    p = np.concatenate([X7_TIES + 1e-3 * RNG.standard_normal(7), TARGETS])
    derivative_battery(jax.jit(_permutahedron_ops), p, order=order)


# ----------------------------------------------------------------------------- shapes, where


@partial(jax.jit, static_argnames=("op", "axis"))
def _op(v, op, where=None, axis=-1):
    if op == "quantize":
        return soft_quantize(v, 3, regularization_strength=0.5, where=where, axis=axis)
    return soft_quantile_normalization(
        v, TARGETS, WEIGHTS, regularization_strength=0.5, where=where, axis=axis
    )


@pytest.mark.parametrize("op", ["quantize", pytest.param("qn", marks=pytest.mark.slow)])
def test_axis_batch_where_and_float32(op):
    x = RNG.standard_normal((3, 9))
    where = RNG.uniform(size=(3, 9)) > 0.3
    where[:, :2] = True
    xb = jnp.asarray(np.where(where, x, np.nan))
    out = _op(xb, op, jnp.asarray(where))
    assert bool(jnp.all(out[~where] == 0))
    np.testing.assert_allclose(out[0][where[0]], _op(jnp.asarray(x[0][where[0]]), op), atol=1e-10)
    grad = jax.grad(lambda v: jnp.sum(_op(v, op, jnp.asarray(where)) ** 2))(xb)
    assert bool(jnp.all(jnp.isfinite(grad[where]))) and bool(jnp.all(grad[~where] == 0))
    np.testing.assert_allclose(
        _op(jnp.asarray(x.T), op, axis=0), _op(jnp.asarray(x), op).T, atol=1e-12
    )
    x32 = _op(jnp.asarray(x, jnp.float32), op)
    assert x32.dtype == jnp.float32
    np.testing.assert_allclose(x32, _op(jnp.asarray(x), op), atol=1e-4)


def test_permutation_axis_batch_and_float32():
    x = RNG.standard_normal((3, 9))
    perm = soft_permutation(jnp.asarray(x.T), temperature=0.5, axis=0)
    assert perm.shape == (3, 9, 9)
    np.testing.assert_allclose(
        perm[1], soft_permutation(jnp.asarray(x[1]), temperature=0.5), atol=1e-12
    )
    p32 = soft_permutation(
        jnp.asarray(1e4 * x, jnp.float32), temperature=jnp.asarray([1e2, 1e3, 1e4])
    )
    assert p32.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(p32)))
    # The solver stops when the L1 error of the position marginals is within its tolerance,
    # max(sqrt(eps), 16 n eps) = 3.5e-4 in float32 (documented default): check that bound on
    # the L1 error (sums in float64), plus the rounding of an n-term float32 sum. The item
    # marginals are exact by construction (a softmax per item): only rounding.
    eps32 = float(jnp.finfo(jnp.float32).eps)
    tol = max(eps32**0.5, 16 * 9 * eps32)
    p64 = np.asarray(p32, np.float64)
    assert np.abs(p64.sum(-1) - 1).sum(-1).max() <= tol + 16 * 9 * eps32
    np.testing.assert_allclose(p64.sum(-2), 1, atol=4 * 9 * eps32)


def test_single_item_and_large_magnitudes():
    one = jnp.asarray([2.5])
    assert soft_permutation(one).tolist() == [[1.0]]
    assert soft_quantize(one, 3).tolist() == [2.5]
    np.testing.assert_allclose(
        soft_quantile_normalization(one, TARGETS, WEIGHTS), [np.sum(TARGETS * WEIGHTS)]
    )
    np.testing.assert_allclose(sort_with(jnp.ones((1, 2)), one), [[1.0, 1.0]])
    big = 1e8 * X7
    np.testing.assert_allclose(
        soft_quantize(jnp.asarray(big), 3, regularization_strength=1e7),
        ref.quantize(big, 3, 1e7),
        rtol=1e-9,
    )


# ----------------------------------------------------------------------------- errors


def test_errors_name_argument_and_value():
    x = jnp.ones(5)
    with pytest.raises(ValueError, match=re.escape("`num_levels` must be >= 1, got num_levels=0")):
        soft_quantize(x, 0)
    with pytest.raises(TypeError, match="`num_levels` must be an int, got num_levels=2.5"):
        soft_quantize(x, 2.5)
    with pytest.raises(ValueError, match="`regularization_strength` must be positive"):
        soft_quantize(x, 2, regularization_strength=0.0)
    with pytest.raises(ValueError, match=r"`targets` must be 1-D and non-empty, got shape \(\)"):
        soft_quantile_normalization(x, 1.0)
    with pytest.raises(ValueError, match="`weights` and `targets` must have the same shape"):
        soft_quantile_normalization(x, TARGETS, np.ones(3))
    with pytest.raises(ValueError, match="`weights` must be non-negative"):
        soft_quantile_normalization(x, TARGETS, -WEIGHTS)
    with pytest.raises(TypeError, match="`where` must be a boolean array"):
        soft_quantize(x, 2, where=jnp.ones(5))
    with pytest.raises(ValueError, match=re.escape("`where` must have the shape (5,), got")):
        soft_quantile_normalization(x, TARGETS, where=jnp.ones(4, bool))
    with pytest.raises(
        ValueError, match="`temperature` must be positive and finite, got temperature=-1"
    ):
        soft_permutation(x, temperature=-1.0)
    with pytest.raises(TypeError, match="`descending` must be a bool, got descending=1"):
        soft_permutation(x, descending=1)
    with pytest.raises(TypeError, match="`x` must have a floating-point dtype"):
        soft_permutation(jnp.arange(5))
    with pytest.raises(ValueError, match="`axis` must satisfy"):
        soft_quantize(x, 2, axis=1)
    with pytest.raises(
        ValueError, match=re.escape("`k` must satisfy 1 <= k <= n along axis -1, got k=6 for n=5")
    ):
        sort_with(x, x, k=6)
    with pytest.raises(
        ValueError, match="`x` must have the shape of `criterion` as its leading axes"
    ):
        sort_with(jnp.ones((4, 2)), x)
    with pytest.raises(ValueError, match="`tol` must be a non-negative finite number, got tol=-1"):
        sort_with(x, x, tol=-1)
