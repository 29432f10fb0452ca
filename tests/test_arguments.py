"""Bad arguments raise errors that name the argument and the value, at trace time (issue 9, item 4).

Every check runs eagerly and inside ``jax.jit`` (shapes, dtypes, options and Python numbers are
static there). Arrays are documented as arrays: a Python list is refused with a TypeError that
names the argument and says how to wrap it; Python numbers are accepted where a strength is.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import softops
from softops import losses

F32 = jnp.float32
X = jnp.asarray(np.random.default_rng(0).standard_normal((3, 6)), F32)
LABELS = jnp.zeros(3, jnp.int32)
COST = jnp.asarray(np.random.default_rng(1).random((4, 5)), F32)

# (id, call(x), exception, pattern naming the argument and the value)
CASES = [
    # Python lists and object arrays where arrays are expected
    ("rank_list", lambda x: softops.soft_rank([1.0, 2.0]), TypeError, r"`x`.*list.*\[1\.0, 2\.0\]"),
    ("sort_list", lambda x: softops.soft_sort([1.0, 2.0]), TypeError, r"`x`.*list"),
    (
        "proj_w_list",
        lambda x: softops.projection_permutahedron(x, [1.0] * 6),
        TypeError,
        r"`w`.*list",
    ),
    ("iso_list", lambda x: softops.isotonic_l2(x, [0.0] * 6), TypeError, r"`w`.*list"),
    ("isoreg_list", lambda x: softops.isotonic_regression([1.0, 2.0]), TypeError, r"`y`.*list"),
    ("mask_list", lambda x: softops.soft_topk_mask([1.0, 2.0], 1), TypeError, r"`x`.*list"),
    ("topk_list", lambda x: softops.soft_topk([1.0, 2.0], 1), TypeError, r"`x`.*list"),
    ("sinkhorn_list", lambda x: softops.sinkhorn([[0.0]], epsilon=0.1), TypeError, r"`cost`.*list"),
    ("spearman_list", lambda x: losses.spearman_loss(x, [[1.0] * 6] * 3), TypeError, r"`targets`"),
    ("ndcg_list", lambda x: losses.soft_ndcg(x, [[1.0] * 6] * 3), TypeError, r"`relevance`"),
    ("rank_loss_list", lambda x: losses.soft_topk_rank_loss(x, [0, 0, 0]), TypeError, r"`labels`"),
    (
        "object",
        lambda x: softops.soft_rank(np.array([1.0, "a"], object)),
        TypeError,
        r"`x`.*dtype object",
    ),
    (
        "object_w",
        lambda x: softops.isotonic_kl(x, np.zeros(6, object)),
        TypeError,
        r"`w`.*dtype object",
    ),
    ("int_x", lambda x: softops.soft_sort(jnp.arange(3)), TypeError, r"`x`.*int"),
    # strengths
    (
        "rank_none",
        lambda x: softops.soft_rank(x, regularization_strength=None),
        TypeError,
        r"`regularization_strength`.*None",
    ),
    (
        "sort_none",
        lambda x: softops.soft_sort(x, regularization_strength=None),
        TypeError,
        r"`regularization_strength`.*None",
    ),
    (
        "median_none",
        lambda x: losses.soft_median(x, regularization_strength=None),
        TypeError,
        r"`regularization_strength`.*None",
    ),
    (
        "rank_zero",
        lambda x: softops.soft_rank(x, regularization_strength=0.0),
        ValueError,
        r"`regularization_strength`.*0\.0",
    ),
    (
        "rank_nan",
        lambda x: softops.soft_rank(x, regularization_strength=jnp.nan),
        ValueError,
        r"`regularization_strength`.*nan",
    ),
    (
        "mask_eps_neg",
        lambda x: softops.soft_topk_mask(x, 2, epsilon=-1.0),
        ValueError,
        r"`epsilon`.*-1\.0",
    ),
    (
        "topk_temp_inf",
        lambda x: softops.soft_topk(x, 2, temperature=np.inf),
        ValueError,
        r"`temperature`.*inf",
    ),
    ("sinkhorn_eps", lambda x: softops.sinkhorn(COST, epsilon=0.0), ValueError, r"`epsilon`.*0\.0"),
    (
        "both_strengths",
        lambda x: softops.soft_topk_mask(x, 2, epsilon=0.1, temperature=0.1),
        ValueError,
        r"`epsilon` and `temperature`",
    ),
    (
        "strength_shape",
        lambda x: softops.soft_rank(x, regularization_strength=jnp.ones(4)),
        ValueError,
        r"`regularization_strength`.*\(4,\)",
    ),
    # option names
    (
        "rank_reg",
        lambda x: softops.soft_rank(x, regularization="l1"),
        ValueError,
        r"`regularization`.*'l1'",
    ),
    (
        "sort_reg",
        lambda x: softops.soft_sort(x, regularization="KL"),
        ValueError,
        r"`regularization`.*'KL'",
    ),
    (
        "proj_reg",
        lambda x: softops.projection_permutahedron(x, regularization="entropy"),
        ValueError,
        r"`regularization`.*'entropy'",
    ),
    (
        "loss_reg",
        lambda x: losses.spearman_loss(x, x, regularization="l3"),
        ValueError,
        r"`regularization`.*'l3'",
    ),
    ("ndcg_gain", lambda x: losses.soft_ndcg(x, x, gain="exp"), ValueError, r"`gain`.*'exp'"),
    ("method", lambda x: softops.isotonic_l2(x, x, method="fast"), ValueError, r"`method`.*'fast'"),
    (
        "solver",
        lambda x: softops.soft_topk_mask(x, 2, solver="lbfgs"),
        ValueError,
        r"`solver`.*'lbfgs'",
    ),
    (
        "differentiation",
        lambda x: softops.soft_topk(x, 2, differentiation="auto"),
        ValueError,
        r"`differentiation`.*'auto'",
    ),
    (
        "descending",
        lambda x: softops.soft_rank(x, descending="yes"),
        TypeError,
        r"`descending`.*'yes'",
    ),
    # axis
    ("rank_axis", lambda x: softops.soft_rank(x, axis=2), ValueError, r"`axis`.*axis=2"),
    ("sort_axis", lambda x: softops.soft_sort(x, axis=-3), ValueError, r"`axis`.*axis=-3"),
    (
        "proj_axis",
        lambda x: softops.projection_permutahedron(x, axis=5),
        ValueError,
        r"`axis`.*axis=5",
    ),
    ("iso_axis", lambda x: softops.isotonic_kl(x, x, axis=2), ValueError, r"`axis`.*axis=2"),
    ("mask_axis", lambda x: softops.soft_topk_mask(x, 1, axis=2), ValueError, r"`axis`.*axis=2"),
    ("topk_axis", lambda x: softops.soft_topk(x, 1, axis=-3), ValueError, r"`axis`.*axis=-3"),
    ("axis_float", lambda x: softops.soft_rank(x, axis=1.0), TypeError, r"`axis`.*1\.0"),
    # k
    ("mask_k_float", lambda x: softops.soft_topk_mask(x, 1.5), TypeError, r"`k`.*k=1\.5"),
    ("topk_k_float", lambda x: softops.soft_topk(x, 2.0), TypeError, r"`k`.*k=2\.0"),
    (
        "mask_k_nan",
        lambda x: softops.soft_topk_mask(x, jnp.array(jnp.nan)),
        ValueError,
        r"`k`.*k=nan",
    ),
    ("mask_k_big", lambda x: softops.soft_topk_mask(x, 7), ValueError, r"`k`.*k=7 for n=6"),
    ("topk_k_neg", lambda x: softops.soft_topk(x, -1), ValueError, r"`k`.*k=-1"),
    (
        "mask_k_array_big",
        lambda x: softops.soft_topk_mask(x, jnp.array([1.0, 2.0, 9.0])),
        ValueError,
        r"`k`.*9\.0",
    ),
    ("mask_k_bool", lambda x: softops.soft_topk_mask(x, True), TypeError, r"`k`.*True"),
    ("rank_loss_k", lambda x: losses.soft_topk_rank_loss(x, LABELS, k=0), ValueError, r"`k`.*k=0"),
    (
        "mask_loss_k",
        lambda x: losses.soft_topk_mask_loss(x, LABELS, k=1.0),
        TypeError,
        r"`k`.*k=1\.0",
    ),
    ("ndcg_k", lambda x: losses.soft_ndcg(x, jnp.abs(x), k=7), ValueError, r"`k`.*k=7"),
    # fractions
    ("trim_one", lambda x: losses.soft_lts_loss(x, trim=1.0), ValueError, r"`trim`.*1\.0"),
    (
        "trim_array",
        lambda x: losses.soft_lts_loss(x, trim=jnp.array(1.5)),
        ValueError,
        r"`trim`.*1\.5",
    ),
    (
        "trim_vector",
        lambda x: losses.soft_lts_loss(x, trim=jnp.array([0.1, 0.2])),
        ValueError,
        r"`trim`.*\(2,\)",
    ),
    ("trim_none", lambda x: losses.soft_lts_loss(x, trim=None), TypeError, r"`trim`.*None"),
    ("q_big", lambda x: losses.soft_quantile(x, 1.5), ValueError, r"`q`.*1\.5"),
    (
        "q_array",
        lambda x: losses.soft_quantile(x, jnp.array([0.5, -0.1])),
        ValueError,
        r"`q`.*-0\.1",
    ),
    ("q_2d", lambda x: losses.soft_quantile(x, jnp.zeros((2, 2))), ValueError, r"`q`.*\(2, 2\)"),
    # where
    (
        "where_shape",
        lambda x: softops.soft_rank(x, where=jnp.ones(6, bool)),
        ValueError,
        r"`where`.*\(6,\)",
    ),
    (
        "where_dtype",
        lambda x: softops.soft_sort(x, where=jnp.ones((3, 6))),
        TypeError,
        r"`where`.*float",
    ),
    (
        "mask_where",
        lambda x: softops.soft_topk_mask(x, 1, where=jnp.ones((3, 5), bool)),
        ValueError,
        r"`where`.*\(3, 5\)",
    ),
    (
        "topk_where",
        lambda x: softops.soft_topk(x, 1, where=jnp.ones((3, 6), jnp.int32)),
        TypeError,
        r"`where`.*int32",
    ),
    (
        "loss_where",
        lambda x: losses.spearman_loss(x, x, where=jnp.ones((6, 3), bool)),
        ValueError,
        r"`where`.*\(6, 3\)",
    ),
    (
        "where_list",
        lambda x: softops.soft_rank(x, where=[[True] * 6] * 3),
        TypeError,
        r"`where`.*list",
    ),
    # shapes and labels
    (
        "labels_float",
        lambda x: losses.soft_topk_rank_loss(x, jnp.zeros(3)),
        TypeError,
        r"`labels`.*float",
    ),
    (
        "labels_shape",
        lambda x: losses.soft_topk_mask_loss(x, jnp.zeros(4, jnp.int32)),
        ValueError,
        r"`labels`.*\(4,\)",
    ),
    (
        "targets_shape",
        lambda x: losses.spearman_loss(x, x[:, :5]),
        ValueError,
        r"`targets`.*\(3, 5\)",
    ),
    (
        "proj_w_shape",
        lambda x: softops.projection_permutahedron(x, jnp.ones(5)),
        ValueError,
        r"`w`.*\(5,\)",
    ),
    (
        "sinkhorn_b",
        lambda x: softops.sinkhorn(COST, b=jnp.ones(4) / 4, epsilon=0.1),
        ValueError,
        r"`b`.*\(4,\)",
    ),
    ("max_iter", lambda x: softops.soft_topk(x, 1, max_iter=10.0), TypeError, r"`max_iter`.*10\.0"),
    ("tol", lambda x: softops.sinkhorn(COST, epsilon=0.1, tol=-1.0), ValueError, r"`tol`.*-1\.0"),
    # issue 21: arrays of the wrong kind where isotonic, NDCG and Sinkhorn take arrays
    ("iso_s_none", lambda x: softops.isotonic_l2(None, x), TypeError, r"`s`.*None"),
    ("iso_kl_s_str", lambda x: softops.isotonic_kl("abc", x), TypeError, r"`s`.*'abc'"),
    ("iso_w_list", lambda x: softops.isotonic_kl(x, [1.0] * 6), TypeError, r"`w`.*list"),
    ("iso_scalar", lambda x: softops.isotonic_l2(jnp.asarray(1.0), 1.0), ValueError, r"scalar"),
    ("ndcg_float", lambda x: losses.soft_ndcg(1.5, x), ValueError, r"`scores`.*scalar"),
    ("ndcg_none", lambda x: losses.soft_ndcg(x, None), TypeError, r"`relevance`.*None"),
    (
        "sinkhorn_0d",
        lambda x: softops.sinkhorn(jnp.asarray(1.0), epsilon=0.1),
        ValueError,
        "`cost`",
    ),
    ("sinkhorn_str", lambda x: softops.sinkhorn("cost", epsilon=0.1), TypeError, r"`cost`"),
    # issue 21: documented preconditions on known values
    (
        "isoreg_negative_weights",
        lambda x: softops.isotonic_regression(x, weights=-jnp.ones(6, F32)),
        ValueError,
        r"`weights`.*non-negative.*-1\.0",
    ),
    (
        "proj_kl_w_not_positive",
        lambda x: softops.projection_permutahedron(x, jnp.zeros(6, F32), regularization="kl"),
        ValueError,
        r"`w`.*positive.*0\.0",
    ),
    (
        "ndcg_negative_relevance",
        lambda x: losses.soft_ndcg(x, -jnp.ones_like(x)),
        ValueError,
        r"`relevance`.*non-negative.*-1\.0",
    ),
    (
        "sinkhorn_mass",
        lambda x: softops.sinkhorn(COST, a=jnp.full(4, 0.5, F32), epsilon=0.1),
        ValueError,
        r"same total mass.*sum\(a\)=2\.0.*sum\(b\)=1\.0",
    ),
    (
        "sinkhorn_max_iter_0",
        lambda x: softops.sinkhorn(COST, epsilon=0.1, max_iter=0),
        ValueError,
        r"`max_iter`.*>= 1.*0",
    ),
    # float16 ranks above 65504 are inf (issue 9)
    (
        "rank_f16_overflow",
        lambda x: softops.soft_rank(jnp.zeros((2, 65505), jnp.float16)),
        ValueError,
        r"`x`.*65505.*float16",
    ),
    (
        "proj_f16_overflow",
        lambda x: softops.projection_permutahedron(jnp.zeros((65505, 1), jnp.float16), axis=0),
        ValueError,
        r"`z`.*65505.*float16",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_argument_eager(case):
    _, call, exc, pattern = case
    with pytest.raises(exc, match=pattern):
        call(X)


# Array values built inside a jitted function are traced, so only their shapes and dtypes are
# checked there (a traced bad k, trim or q gives NaN; see test_nonfinite.py).
VALUE_CHECKS = {
    "mask_k_nan",
    "mask_k_array_big",
    "trim_array",
    "q_array",
    "isoreg_negative_weights",
    "proj_kl_w_not_positive",
    "ndcg_negative_relevance",
    "sinkhorn_mass",
}
JIT_CASES = [c for c in CASES if c[0] not in VALUE_CHECKS]


@pytest.mark.parametrize("case", JIT_CASES, ids=[c[0] for c in JIT_CASES])
def test_bad_argument_under_jit(case):
    # The same error at trace time: nothing is compiled or run.
    _, call, exc, pattern = case
    with pytest.raises(exc, match=pattern):
        jax.jit(call)(X)


def test_accepted_inputs():
    # Numbers and NumPy arrays are arrays; a scalar array trim works (issue 9: it raised
    # "0 <= trim < 1, got 0.5").
    x = np.asarray(X)
    np.testing.assert_array_equal(
        np.asarray(softops.soft_rank(x, regularization_strength=np.float32(0.5))),
        np.asarray(softops.soft_rank(X, regularization_strength=0.5)),
    )
    np.testing.assert_array_equal(
        np.asarray(losses.soft_lts_loss(X, trim=jnp.array(0.5, F32))),
        np.asarray(losses.soft_lts_loss(X, trim=0.5)),
    )


def test_float16_ranks_up_to_65504():
    # The largest float16 row whose ranks are finite runs; bfloat16 rows of any length do.
    r = softops.soft_rank(jnp.zeros(65504, jnp.float16))
    assert r.dtype == jnp.float16 and bool(jnp.all(jnp.isfinite(r)))
    x = jnp.arange(65505, dtype=jnp.bfloat16)
    assert softops.soft_rank(x, regularization_strength=1e-3).dtype == jnp.bfloat16


def test_fgd_accepts_optax_schedules():
    # Issue 9: fgd(optax.constant_schedule(0.1)) failed; optax optimizers take schedules.
    params = {"w": jnp.ones(3, F32)}
    grads = {"w": jnp.full(3, 2.0, F32)}
    for rate in (optax.constant_schedule(0.1), optax.linear_schedule(0.1, 0.0, 10), 0.1):
        for decay in (0.0, 0.5):
            opt = softops.fgd(rate, decay=decay)
            updates, _ = opt.update(grads, opt.init(params), params)
            np.testing.assert_allclose(np.asarray(updates["w"]), -0.2, rtol=1e-6)
    with pytest.raises(TypeError, match=r"`learning_rate`.*'0\.1'"):
        softops.fgd("0.1")
    with pytest.raises(ValueError, match=r"`learning_rate`.*-1\.0"):
        softops.fgd(-1.0)
    with pytest.raises(TypeError, match=r"`learning_rate`.*shape \(2,\)"):
        softops.fgd(jnp.ones(2, F32))
    with pytest.raises(ValueError, match=r"`decay`.*-1\.0"):
        softops.fgd(0.1, decay=-1.0)


def test_empty_item_axis():
    # Issue 9: soft_topk_mask(jnp.zeros((3, 0)), 0), soft_topk and sinkhorn(jnp.zeros((0, 2)))
    # raised ZeroDivisionError. An empty item axis gives empty results.
    empty = jnp.zeros((3, 0), F32)
    assert softops.soft_topk_mask(empty, 0).shape == (3, 0)
    values, assign = softops.soft_topk(empty, 0)
    assert values.shape == (3, 0) and assign.shape == (3, 0, 0)
    out = softops.sinkhorn(jnp.zeros((0, 2), F32), epsilon=0.1)
    assert out.plan.shape == (0, 2) and out.g.shape == (2,)
    assert softops.soft_rank(empty).shape == (3, 0)
    assert softops.soft_sort(empty).shape == (3, 0)
    with pytest.raises(ValueError, match=r"`k`.*k=1 for n=0"):
        softops.soft_topk_mask(empty, 1)
