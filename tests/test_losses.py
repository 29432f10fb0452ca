"""Tests for softops.losses: classic values, hard limits, masks, derivatives and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import ndcg_score

from softops.losses import (
    soft_lts_loss,
    soft_median,
    soft_ndcg,
    soft_quantile,
    soft_topk_mask_loss,
    soft_topk_rank_loss,
    spearman_correlation,
    spearman_loss,
)
from softops.topk_ot import soft_topk_mask
from tests.helpers import derivative_battery

TINY = 1e-6  # "epsilon -> 0" for soft ranks of inputs with O(1) gaps
# Soft sorts are exact (hard) once every gap is below 1/epsilon; a smaller strength only adds
# rounding of size eps_machine / epsilon, so the sort-based limits use this one.
TINY_SORT = 1e-3
HUGE = 1e6  # "epsilon -> infinity"


def _rng(seed=0):
    return np.random.default_rng(seed)


# Jitted versions for the value tests: one compiled program per call signature is several times
# faster than op-by-op dispatch on this suite's small inputs. Bad-input tests use the plain ones.
_SPEARMAN_J = jax.jit(
    spearman_correlation, static_argnames=("target_regularization_strength", "regularization")
)
_RANK_LOSS_J = jax.jit(soft_topk_rank_loss, static_argnames=("k",))
_MASK_LOSS_J = jax.jit(soft_topk_mask_loss, static_argnames=("k",))
_QUANTILE_J = jax.jit(soft_quantile, static_argnames=("regularization",))
_MEDIAN_J = jax.jit(soft_median)
_LTS_J = jax.jit(soft_lts_loss, static_argnames=("trim",))
_NDCG_J = jax.jit(soft_ndcg, static_argnames=("k", "gain"))


# ----------------------------------------------------------------------------- spearman


def test_spearman_classic_example_value_and_gradient():
    p = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0], jnp.float64)
    t = jnp.array([5.0, 6.0, 7.0, 8.0, 7.0], jnp.float64)
    rho, grad = jax.value_and_grad(spearman_correlation)(p, t)
    np.testing.assert_allclose(rho, 6 / np.sqrt(52), rtol=1e-12)  # 0.83205...
    assert round(float(rho), 4) == 0.8321
    # (t_hat - rho r_hat) / |r|, from the one pooled PAV block (Jacobian = centring).
    r = np.array([-2.0, -1, 0, 1, 2])
    tc = np.array([-1.6, -0.6, 0.4, 1.4, 0.4])
    expected = (tc / np.linalg.norm(tc) - rho * r / np.linalg.norm(r)) / np.linalg.norm(r)
    np.testing.assert_allclose(grad, expected, atol=1e-12)
    np.testing.assert_allclose(grad, [-0.0555, 0.0, 0.0555, 0.1109, -0.1109], atol=1e-4)
    np.testing.assert_allclose(spearman_loss(p, t), 1 - rho, rtol=1e-12)


def test_spearman_hard_limit_matches_scipy():
    rng = _rng(1)
    p = rng.standard_normal((4, 7))
    t = rng.integers(0, 4, size=(4, 7)).astype(np.float64)  # ties in the targets
    expected = [spearmanr(a, b).statistic for a, b in zip(p, t)]
    got_soft = _SPEARMAN_J(p / 1e-3, t, regularization_strength=TINY)
    got_hard_t = _SPEARMAN_J(p, t, regularization_strength=TINY, target_regularization_strength=0)
    np.testing.assert_allclose(got_soft, expected, rtol=1e-9)
    np.testing.assert_allclose(got_hard_t, expected, rtol=1e-9)


def test_spearman_large_strength_is_pearson():
    rng = _rng(2)
    p, t = rng.standard_normal((3, 6)), rng.standard_normal((3, 6))
    got = _SPEARMAN_J(p, t, regularization_strength=HUGE)
    np.testing.assert_allclose(got, [pearsonr(a, b).statistic for a, b in zip(p, t)], rtol=1e-8)


@pytest.mark.slow
def test_spearman_where_equals_compressed_rows_and_per_example_strength():
    rng = _rng(3)
    p, t = rng.standard_normal((2, 6)), rng.standard_normal((2, 6))
    where = np.array([[True, False, True, True, False, True], [True] * 6])
    eps = np.array([0.3, 2.0])
    got = _SPEARMAN_J(p, t, regularization_strength=eps, where=where)
    for i in range(2):
        ref = _SPEARMAN_J(p[i][where[i]], t[i][where[i]], regularization_strength=eps[i])
        np.testing.assert_allclose(got[i], ref, rtol=1e-12)
    for reg in ("l2", "kl"):  # masked entries do not move the valid soft ranks
        a = _SPEARMAN_J(p[0], t[0], where=where[0], regularization=reg)
        b = _SPEARMAN_J(p[0][where[0]], t[0][where[0]], regularization=reg)
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_spearman_constant_row_is_zero_with_finite_gradient():
    p = jnp.zeros((4,), jnp.float64)
    t = jnp.array([1.0, 2.0, 3.0, 4.0], jnp.float64)
    rho, g = jax.value_and_grad(spearman_correlation)(p, t)
    assert rho == 0.0 and np.all(np.isfinite(g))


@pytest.mark.slow
def test_spearman_derivatives():
    rng = _rng(4)
    t = jnp.asarray(rng.standard_normal(5))
    p = rng.standard_normal(5)
    derivative_battery(jax.jit(lambda x: spearman_loss(x, t, regularization_strength=0.5)), p)


def test_spearman_bad_input():
    x = jnp.ones((3,), jnp.float64)
    with pytest.raises(ValueError, match="targets"):
        spearman_correlation(x, jnp.ones((4,), jnp.float64))
    with pytest.raises(TypeError, match="predictions"):
        spearman_correlation(jnp.arange(3), x)
    with pytest.raises(TypeError, match="where"):
        spearman_correlation(x, x, where=jnp.ones((3,)))
    with pytest.raises(ValueError, match="regularization"):
        spearman_correlation(x, x, regularization="l1")
    with pytest.raises(ValueError, match="target_regularization_strength=-1"):
        spearman_correlation(x, x, target_regularization_strength=-1.0)
    with pytest.raises(ValueError, match="scalar"):
        spearman_correlation(x, x, regularization_strength=jnp.ones((2,)))


# ----------------------------------------------------------------------------- top-k classification


def _hard_desc_ranks(x):
    return np.argsort(np.argsort(-x, axis=-1), axis=-1) + 1.0


@pytest.mark.parametrize("k", [1, 3])
def test_topk_rank_loss_hard_limit(k):
    rng = _rng(5)
    logits = rng.standard_normal((6, 5))
    labels = rng.integers(0, 5, size=6)
    got = _RANK_LOSS_J(logits, labels, k=k, regularization_strength=TINY)
    ranks = _hard_desc_ranks(logits)[np.arange(6), labels]
    np.testing.assert_allclose(got, np.maximum(ranks - k, 0), atol=1e-9)
    # Large strength: every soft rank tends to (n + 1) / 2.
    far = _RANK_LOSS_J(logits, labels, k=k, regularization_strength=HUGE)
    np.testing.assert_allclose(far, np.full(6, max(3.0 - k, 0)), atol=1e-5)


@pytest.mark.slow
def test_topk_rank_loss_where_and_derivatives():
    rng = _rng(6)
    logits = rng.standard_normal((2, 5))
    where = np.array([[True, True, False, True, True], [True] * 5])
    labels = np.array([3, 1])
    got = _RANK_LOSS_J(logits, labels, k=2, where=where, regularization_strength=0.2)
    ref = _RANK_LOSS_J(logits[0][where[0]], np.array(2), k=2, regularization_strength=0.2)
    np.testing.assert_allclose(got[0], ref, rtol=1e-12)
    derivative_battery(
        jax.jit(lambda x: soft_topk_rank_loss(x, labels, k=1, regularization_strength=0.05)),
        logits,
    )


@pytest.mark.slow
def test_topk_mask_loss_matches_mask_and_limit():
    rng = _rng(7)
    logits = rng.standard_normal((4, 6))
    labels = rng.integers(0, 6, size=4)
    got = _MASK_LOSS_J(logits, labels, k=2, epsilon=0.3)
    mask = soft_topk_mask(logits, 2, epsilon=0.3)
    np.testing.assert_allclose(got, -np.log(np.asarray(mask)[np.arange(4), labels]), rtol=1e-12)
    sharp = _MASK_LOSS_J(logits, labels, k=2, temperature=1e-4)
    in_top = _hard_desc_ranks(logits)[np.arange(4), labels] <= 2
    assert np.all(np.asarray(sharp)[in_top] < 1e-8)
    assert np.all(np.asarray(sharp)[~in_top] > 10)
    # Infinite strength: the mask is uniform, k/n on every class.
    flat = _MASK_LOSS_J(logits, labels, k=2, temperature=1e8)
    np.testing.assert_allclose(flat, np.full(4, -np.log(2 / 6)), rtol=1e-6)
    # `epsilon` holds the cost scale M constant in the derivative (see topk_ot), so the exact
    # derivative check uses the `temperature` parameterization.
    derivative_battery(
        jax.jit(lambda x: soft_topk_mask_loss(x, labels, k=2, temperature=0.5)), logits
    )


def test_topk_losses_bad_input():
    logits = jnp.zeros((2, 4), jnp.float64)
    for fn in (soft_topk_rank_loss, soft_topk_mask_loss):
        with pytest.raises(TypeError, match="labels"):
            fn(logits, jnp.zeros((2,), jnp.float64))
        with pytest.raises(ValueError, match="labels"):
            fn(logits, jnp.zeros((3,), jnp.int32))
        with pytest.raises(ValueError, match="k=5"):
            fn(logits, jnp.zeros((2,), jnp.int32), k=5)
        with pytest.raises(TypeError, match="k="):
            fn(logits, jnp.zeros((2,), jnp.int32), k=1.5)


@pytest.mark.parametrize("fn", [soft_topk_rank_loss, soft_topk_mask_loss])
def test_topk_loss_bad_labels(fn):
    # Issue 21: a label on a masked-out class gave 87.3 (mask loss) or 0 (rank loss); uint8
    # label 255 with 4 classes was not refused. Known labels raise; traced ones give a NaN
    # example whose derivative is exactly 0 in both modes, the other example untouched.
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 4)))
    where = jnp.asarray([[True, False, True, True], [True] * 4])
    for labels in (np.array([7, 1]), np.array([255, 1], np.uint8), np.array([-1, 1], np.int8)):
        with pytest.raises(ValueError, match="labels"):
            fn(x, jnp.asarray(labels))
    with pytest.raises(ValueError, match="masked-out"):
        fn(x, jnp.asarray([1, 1]), where=where)

    @jax.jit
    def run(x, labels, where):
        loss = lambda v: fn(v, labels, where=where)  # noqa: E731
        out, tangent = jax.jvp(loss, (x,), (jnp.ones_like(x),))
        grad = jax.grad(lambda v: jnp.where(jnp.isnan(out), 0, loss(v)).sum())(x)
        return out, tangent, grad

    for labels, mask in (([7, 1], jnp.ones_like(where)), ([1, 1], where)):
        out, tangent, grad = run(x, jnp.asarray(labels), mask)
        assert np.isnan(out[0]) and np.isfinite(out[1]), out
        assert tangent[0] == 0 and np.all(grad[0] == 0) and np.all(np.isfinite(grad[1])), grad
        np.testing.assert_allclose(out[1], fn(x[1:], jnp.asarray([1]))[0], rtol=1e-12)


@pytest.mark.parametrize("fn", [soft_topk_rank_loss, soft_topk_mask_loss])
def test_topk_loss_nan_on_masked_out_class_does_not_leak(fn):
    # Issue 21: a NaN logit on a masked-out class leaked NaN into soft_topk_rank_loss's gradient.
    x = np.random.default_rng(1).standard_normal((2, 5))
    where = np.ones((2, 5), bool)
    where[0, 3] = False
    clean = jnp.asarray(x)
    x[0, 3] = np.nan
    labels = jnp.asarray([0, 2])
    f = jax.jit(lambda x: fn(x, labels, k=2, where=jnp.asarray(where)).sum())
    value, grad = jax.value_and_grad(f)(jnp.asarray(x))
    want, want_grad = jax.value_and_grad(f)(clean)
    np.testing.assert_allclose(value, want, rtol=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-10, atol=1e-12)
    assert grad[0, 3] == 0


@pytest.mark.slow  # the fast pass checks reverse mode (test_derivatives_all's NaN-row test)
@pytest.mark.parametrize("fn", [soft_topk_rank_loss, soft_topk_mask_loss])
def test_topk_loss_nan_row_has_zero_derivative(fn):
    # The NaN-row policy: NaN loss for the row, exact 0 derivative in both modes.
    x = np.random.default_rng(2).standard_normal((2, 5))
    x[0, 1] = np.nan
    x = jnp.asarray(x)
    loss = jax.jit(lambda v: fn(v, jnp.asarray([0, 2]), k=2))
    out = loss(x)
    grad = jax.grad(lambda v: jnp.where(jnp.isnan(out), 0, loss(v)).sum())(x)
    _, tangent = jax.jvp(loss, (x,), (jnp.ones_like(x),))
    assert np.isnan(out[0]) and np.isfinite(out[1])
    assert np.all(grad[0] == 0) and np.all(np.isfinite(grad[1])) and tangent[0] == 0


# ----------------------------------------------------------------------------- quantile / median


def test_quantile_and_median_hard_limit():
    rng = _rng(8)
    x = rng.standard_normal((3, 7))
    q = np.array([0.0, 0.1, 0.5, 0.83, 1.0])
    got = _QUANTILE_J(x, q, regularization_strength=TINY_SORT)
    np.testing.assert_allclose(got, np.quantile(x, q, axis=-1).T, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
        _MEDIAN_J(x[:, :6], regularization_strength=TINY_SORT), np.median(x[:, :6], -1), rtol=1e-9
    )
    np.testing.assert_allclose(_MEDIAN_J(x, regularization_strength=HUGE), x.mean(-1), atol=1e-5)


@pytest.mark.parametrize("regularization", ["l2", "kl"])
def test_quantile_where_equals_compressed(regularization):
    rng = _rng(9)
    x = rng.uniform(0.5, 2.0, size=(2, 6))
    where = np.array([[True, False, True, True, False, True], [False] + [True] * 5])
    got = _QUANTILE_J(
        x, 0.3, where=where, regularization_strength=1.5, regularization=regularization
    )
    for i in range(2):
        ref = _QUANTILE_J(
            x[i][where[i]], 0.3, regularization_strength=1.5, regularization=regularization
        )
        np.testing.assert_allclose(got[i], ref, rtol=1e-12)


@pytest.mark.slow
def test_quantile_derivatives():
    x = _rng(10).standard_normal((2, 5))
    derivative_battery(jax.jit(lambda v: soft_quantile(v, 0.3, regularization_strength=0.7)), x)


def test_quantile_bad_input():
    x = jnp.ones((4,), jnp.float64)
    with pytest.raises(ValueError, match="q=1.5"):
        soft_quantile(x, 1.5)
    with pytest.raises(ValueError, match="q"):
        soft_quantile(x, np.ones((2, 2)) / 2)
    with pytest.raises(TypeError, match="x"):
        soft_quantile(jnp.arange(4), 0.5)
    with pytest.raises(ValueError, match="items"):
        soft_median(jnp.float64(1.0))


# ----------------------------------------------------------------------------- LTS


def _hard_lts(r, trim):
    n = r.shape[-1]
    h = n - int(np.floor(trim * n + 1e-6))
    return np.sort(r**2, axis=-1)[..., :h].mean(-1)


def test_lts_limits():
    rng = _rng(11)
    r = rng.standard_normal((3, 8)) * np.array([[1.0], [0.5], [2.0]])
    np.testing.assert_allclose(
        _LTS_J(r, trim=0.25, regularization_strength=TINY_SORT),
        _hard_lts(r, 0.25),
        rtol=1e-9,
    )
    np.testing.assert_allclose(
        _LTS_J(r, trim=0.25, regularization_strength=HUGE), (r**2).mean(-1), atol=1e-4
    )
    np.testing.assert_allclose(_LTS_J(r, trim=0.0), (r**2).mean(-1), rtol=1e-12)


@pytest.mark.slow
def test_lts_where_and_derivatives():
    rng = _rng(12)
    r = rng.standard_normal((2, 6))
    where = np.array([[True, True, False, True, True, True], [True] * 6])
    got = _LTS_J(r, trim=0.2, where=where, regularization_strength=0.5)
    ref = _LTS_J(r[0][where[0]], trim=0.2, regularization_strength=0.5)
    np.testing.assert_allclose(got[0], ref, rtol=1e-12)
    derivative_battery(
        jax.jit(lambda v: soft_lts_loss(v, trim=0.3, regularization_strength=0.5)), r
    )


def test_lts_bad_input():
    r = jnp.ones((4,), jnp.float64)
    with pytest.raises(ValueError, match="trim=1.0"):
        soft_lts_loss(r, trim=1.0)
    with pytest.raises(ValueError, match="regularization_strength=0"):
        soft_lts_loss(r, regularization_strength=0.0)


# ----------------------------------------------------------------------------- NDCG


def _np_ndcg_exp2(scores, rel, k=None):
    order = np.argsort(-scores)
    g = 2.0**rel - 1
    disc = 1 / np.log2(np.arange(2, len(scores) + 2))
    if k is not None:
        disc[k:] = 0
    return (g[order] * disc).sum() / (np.sort(g)[::-1] * disc).sum()


@pytest.mark.parametrize("k", [None, 3])
def test_ndcg_hard_limit(k):
    rng = _rng(13)
    scores = rng.standard_normal((4, 6))
    rel = rng.integers(0, 4, size=(4, 6)).astype(np.float64)
    rel[:, 0] = 3.0  # at least one relevant item per row
    lin = _NDCG_J(scores, rel, k=k, gain="linear", regularization_strength=TINY)
    np.testing.assert_allclose(
        lin, [ndcg_score(r[None], s[None], k=k) for s, r in zip(scores, rel)], rtol=1e-9
    )
    exp2 = _NDCG_J(scores, rel, k=k, regularization_strength=TINY)
    ref = [_np_ndcg_exp2(s, r, k) for s, r in zip(scores, rel)]
    np.testing.assert_allclose(exp2, ref, rtol=1e-9)


def test_ndcg_large_strength_and_zero_relevance():
    rel = np.array([3.0, 0.0, 1.0, 2.0])
    far = _NDCG_J(np.array([0.1, 0.5, -0.3, 2.0]), rel, regularization_strength=HUGE)
    g = 2.0**rel - 1
    ideal = (np.sort(g)[::-1] / np.log2(np.arange(2, 6))).sum()
    np.testing.assert_allclose(far, g.sum() / np.log2(1 + 2.5) / ideal, rtol=1e-5)
    assert _NDCG_J(jnp.ones((3,), jnp.float64), jnp.zeros((3,), jnp.float64)) == 0.0


@pytest.mark.slow
def test_ndcg_where_and_derivatives():
    rng = _rng(14)
    scores = rng.standard_normal((2, 6))
    rel = rng.integers(0, 3, size=(2, 6)).astype(np.float64) + 0.5
    where = np.array([[True, False, True, True, True, False], [True] * 6])
    got = _NDCG_J(scores, rel, k=3, where=where, regularization_strength=0.5)
    ref = _NDCG_J(scores[0][where[0]], rel[0][where[0]], k=3, regularization_strength=0.5)
    np.testing.assert_allclose(got[0], ref, rtol=1e-12)
    relj = jnp.asarray(rel)
    derivative_battery(jax.jit(lambda s: soft_ndcg(s, relj, regularization_strength=0.5)), scores)


def test_ndcg_bad_input():
    s = jnp.ones((4,), jnp.float64)
    with pytest.raises(ValueError, match="gain"):
        soft_ndcg(s, s, gain="log")
    with pytest.raises(ValueError, match="k=0"):
        soft_ndcg(s, s, k=0)
    with pytest.raises(ValueError, match="relevance"):
        soft_ndcg(s, jnp.ones((3,), jnp.float64))
    with pytest.raises(ValueError, match="where"):
        soft_ndcg(s, s, where=jnp.ones((3,), bool))


def test_vmap_agrees_with_batched():
    rng = _rng(15)
    p, t = jnp.asarray(rng.standard_normal((3, 5))), jnp.asarray(rng.standard_normal((3, 5)))
    batched = jax.jit(spearman_loss)(p, t)
    np.testing.assert_allclose(jax.jit(jax.vmap(spearman_loss))(p, t), batched, rtol=1e-12)
