"""The documented NaN/inf policy: no silent garbage (issue 9, item 3).

The policy, from the docstrings (``softops.projection``, ``softops.isotonic``,
``softops.topk_ot``, ``softops.losses``):

- a row with a NaN or ±inf among its valid entries gives NaN in that row only (for the top-k ops
  with ``temperature=``, a score of -inf is never selected instead);
- masked entries (``where=False``) take no part: they get 0 and a NaN there poisons nothing;
- a strength that is not positive and finite, which can only happen when it is traced, gives NaN
  in its row (known values raise);
- a solver stopped at ``max_iter`` gives NaN (``*_solve``: ``converged=False``);
- losses: an example with a NaN input gets a NaN value; an out-of-range label gives NaN;
  ``soft_median``/``soft_quantile`` of a row without valid items is NaN (NumPy);
- ``soft_ndcg``'s ``"exp2"`` gains are computed relative to the row's largest grade (no
  overflow);
- ``sinkhorn``: known negative ``a`` or non-positive ``b`` raise; traced ones give NaN.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softops
from softops import losses
from tests._marks import slow_where

F32 = jnp.float32
GOOD = np.array([0.3, -1.2, 2.5, 0.0, 0.7, -0.4], np.float32)
BAD_VALUES = (np.nan, np.inf, -np.inf)


BAD_ROWS = [1, 2, 3]


def _batch():
    """Five rows: good, then one entry NaN, +inf, -inf (rows 1-3), then good (reversed)."""
    x = np.stack([GOOD, GOOD, GOOD, GOOD, GOOD[::-1]]).copy()
    x[BAD_ROWS, 2] = BAD_VALUES
    return jnp.asarray(x, F32)


def _check_rows(out, ref):
    """Rows 1-3 all NaN, rows 0 and 4 equal to ``ref``'s (computed without the bad rows)."""
    out, ref = np.asarray(out), np.asarray(ref)
    assert np.all(np.isnan(out[BAD_ROWS])), out[BAD_ROWS]
    np.testing.assert_array_equal(out[[0, 4]], ref)


ROW_OPS = {
    "soft_rank_l2": lambda x: softops.soft_rank(x, regularization_strength=0.1),
    "soft_rank_kl": lambda x: softops.soft_rank(
        x, regularization="kl", regularization_strength=1.0
    ),
    "soft_sort_l2": lambda x: softops.soft_sort(x, regularization_strength=0.5),
    "soft_sort_kl": lambda x: softops.soft_sort(
        x, regularization="kl", regularization_strength=2.0
    ),
    "projection_l2": lambda x: softops.projection_permutahedron(x),
    "projection_kl": lambda x: softops.projection_permutahedron(x, regularization="kl"),
    "isotonic_l2": lambda x: softops.isotonic_l2(x, jnp.zeros_like(x)),
    "isotonic_kl": lambda x: softops.isotonic_kl(x, jnp.zeros_like(x)),
    "isotonic_regression": lambda x: softops.isotonic_regression(x),
    "soft_topk_mask": lambda x: softops.soft_topk_mask(x, 2),
    "soft_topk_mask_sinkhorn": lambda x: softops.soft_topk_mask(x, 2, solver="sinkhorn"),
    "soft_topk_values": lambda x: softops.soft_topk(x, 2, epsilon=0.05)[0],
}


@pytest.mark.parametrize("name", sorted(ROW_OPS))
def test_bad_entry_gives_nan_row_only(name):
    op = ROW_OPS[name]
    x = _batch()
    _check_rows(op(x), op(x[jnp.array([0, 4])]))


# Issue 9: soft_topk_mask(solver="sinkhorn") and soft_topk gave a NaN row here.
@pytest.mark.parametrize(
    "name", ["soft_topk_mask", "soft_topk_mask_sinkhorn", "soft_topk_values", "soft_topk_assign"]
)
def test_topk_with_temperature_never_selects_minus_inf(name):
    # With temperature=, a score of -inf (largest=True) is never selected: exact 0, row finite.
    x = jnp.asarray(np.stack([GOOD, GOOD, GOOD[::-1]]), F32).at[1, 2].set(-jnp.inf)
    if name == "soft_topk_mask":
        out = softops.soft_topk_mask(x, 2, temperature=1.0)
    elif name == "soft_topk_mask_sinkhorn":
        out = softops.soft_topk_mask(x, 2, temperature=1.0, solver="sinkhorn")
    elif name == "soft_topk_values":
        out = softops.soft_topk(x, 2, temperature=1.0)[0]
    else:
        out = softops.soft_topk(x, 2, temperature=1.0)[1]
    out = np.asarray(out)
    assert np.all(np.isfinite(out)), out
    if name != "soft_topk_values":
        assert np.all(out[1, ..., 2] == 0), out[1]
    # the -inf item takes no part: the row equals the row without it
    clean = jnp.asarray(np.stack([GOOD, np.delete(GOOD, 2)[[0, 1, 2, 3, 4, 0]]]), F32)
    where = jnp.ones(clean.shape, bool).at[1, 5].set(False)
    kw = {"temperature": 1.0, "where": where}
    ref = {
        "soft_topk_mask": lambda: softops.soft_topk_mask(clean, 2, **kw),
        "soft_topk_mask_sinkhorn": lambda: softops.soft_topk_mask(
            clean, 2, solver="sinkhorn", **kw
        ),
        "soft_topk_values": lambda: softops.soft_topk(clean, 2, **kw)[0],
        "soft_topk_assign": lambda: softops.soft_topk(clean, 2, **kw)[1],
    }[name]()
    ref = np.asarray(ref)[1]
    if name == "soft_topk_values":
        np.testing.assert_allclose(out[1], ref, rtol=1e-5, atol=1e-6)
    else:  # positions: drop the -inf item from ``out``, the padding from ``ref``
        np.testing.assert_allclose(
            np.delete(out[1], 2, axis=-1), ref[..., :5], rtol=1e-5, atol=1e-6
        )


def test_topk_temperature_minus_inf_has_zero_gradient():
    x = jnp.asarray(np.stack([GOOD, GOOD[::-1]]), F32).at[1, 2].set(-jnp.inf)
    w = jnp.asarray(np.arange(12.0).reshape(2, 6), F32)
    for op in (
        lambda v: softops.soft_topk_mask(v, 2, temperature=1.0),
        lambda v: softops.soft_topk_mask(v, 2, temperature=1.0, solver="sinkhorn"),
        lambda v: softops.soft_topk(v, 2, temperature=1.0)[1].sum(-2),
    ):
        grad = np.asarray(jax.grad(lambda v, op=op: jnp.sum(op(v) * w))(x))
        assert np.all(np.isfinite(grad)) and grad[1, 2] == 0, grad


MASKED_OPS = {
    "soft_rank": lambda x, m: softops.soft_rank(x, regularization_strength=0.1, where=m),
    "soft_sort": lambda x, m: softops.soft_sort(x, regularization_strength=0.5, where=m),
    "projection": lambda x, m: softops.projection_permutahedron(x, where=m),
    "soft_topk_mask": lambda x, m: softops.soft_topk_mask(x, 2, where=m),
    "soft_topk_values": lambda x, m: softops.soft_topk(x, 2, epsilon=0.05, where=m)[0],
    "soft_median": lambda x, m: losses.soft_median(x, where=m),
    "soft_lts_loss": lambda x, m: losses.soft_lts_loss(x, where=m),
    "spearman": lambda x, m: losses.spearman_correlation(
        x, jnp.broadcast_to(GOOD[::-1], x.shape), where=m
    ),
    "soft_ndcg": lambda x, m: losses.soft_ndcg(x, jnp.abs(x), where=m),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MASKED_OPS))
def test_masked_bad_entry_is_ignored(name):
    op = MASKED_OPS[name]
    x = _batch()
    mask = jnp.ones(x.shape, bool).at[:, 2].set(False)
    out = np.asarray(op(x, mask))
    assert np.all(np.isfinite(out)), out
    clean = x.at[BAD_ROWS, 2].set(GOOD[2])  # the masked value does not matter
    np.testing.assert_array_equal(out, np.asarray(op(clean, mask)))
    if name in ("soft_rank", "projection", "soft_topk_mask"):  # outputs keep the positions
        assert np.all(out[:, 2] == 0)
    if name == "soft_sort":  # the valid items first, the masked position last
        assert np.all(out[:, -1] == 0)
    # no gradient reaches the masked entries, and none is NaN
    grad = jax.grad(lambda v: jnp.sum(op(v, mask)))(x)
    assert np.all(np.isfinite(np.asarray(grad)))
    assert np.all(np.asarray(grad)[:, 2] == 0)


def test_nan_row_does_not_poison_other_rows_gradient():
    x = _batch()
    for op in (
        lambda v: softops.soft_rank(v, regularization_strength=0.1),
        lambda v: softops.soft_sort(v, regularization_strength=0.5),
        lambda v: losses.soft_median(v),
    ):
        grad = np.asarray(jax.grad(lambda v, op=op: jnp.sum(op(v)[0]))(x))
        assert np.all(np.isfinite(grad[0])) and np.all(grad[1:] == 0), grad


TOPK_OPS = {
    "mask_eps": lambda v: softops.soft_topk_mask(v, 2),
    "mask_temp": lambda v: softops.soft_topk_mask(v, 2, temperature=1.0),
    "mask_sinkhorn": lambda v: softops.soft_topk_mask(v, 2, solver="sinkhorn"),
    "mask_sinkhorn_temp": lambda v: softops.soft_topk_mask(
        v, 2, temperature=1.0, solver="sinkhorn"
    ),
    "sorted_values": lambda v: softops.soft_topk(v, 2, epsilon=0.05)[0],
    "sorted_assign": lambda v: softops.soft_topk(v, 2, epsilon=0.05)[1].sum(-2),
}


@pytest.mark.parametrize(
    "name",
    # the temperature= variants share the kernels of the epsilon ones: slow pass
    slow_where(sorted(TOPK_OPS), lambda n: n.endswith("_temp")),
)
def test_nan_row_does_not_leak_into_topk_gradients(name):
    # Issue 9: the NaN row's gradient was NaN even when the loss did not use that row, or masked
    # it out with jnp.where (0 * NaN in the backward pass).
    op = TOPK_OPS[name]
    x = _batch()
    w = jnp.asarray(np.arange(30.0).reshape(5, 6) % 7 - 3, F32)

    def first(v):  # uses row 0 only
        out = op(v)[0]
        return jnp.sum(out * w[0, : out.shape[-1]])

    grad = np.asarray(jax.grad(first)(x))
    assert np.all(np.isfinite(grad[0])) and np.all(grad[1:] == 0), grad

    def masked(v, w):
        out = op(v)
        ok = jnp.all(jnp.isfinite(out), axis=-1, keepdims=True)
        return jnp.sum(jnp.where(ok, out * w[..., : out.shape[-1]], 0))

    grad = np.asarray(jax.grad(masked)(x, w))
    assert np.all(np.isfinite(grad)), grad
    bad = np.isnan(np.asarray(op(x))).any(axis=-1)  # rows 1-2; row 3 (-inf) too with epsilon
    assert bad[1] and bad[2] and np.all(grad[bad] == 0), grad
    keep = jnp.asarray(np.flatnonzero(~bad))
    clean = np.asarray(jax.grad(masked)(x[keep], w[keep]))
    np.testing.assert_allclose(grad[~bad], clean, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ traced strengths


STRENGTH_OPS = {
    "soft_rank": lambda x, s: softops.soft_rank(x, regularization_strength=s),
    "soft_rank_kl": lambda x, s: softops.soft_rank(
        x, regularization="kl", regularization_strength=s
    ),
    "soft_sort": lambda x, s: softops.soft_sort(x, regularization_strength=s),
    "soft_topk_mask_eps": lambda x, s: softops.soft_topk_mask(x, 2, epsilon=s),
    "soft_topk_mask_temp": lambda x, s: softops.soft_topk_mask(x, 2, temperature=s),
    "soft_topk_eps": lambda x, s: softops.soft_topk(x, 2, epsilon=s)[0],
    "soft_topk_temp": lambda x, s: softops.soft_topk(x, 2, temperature=s)[1],
    "sinkhorn_plan": lambda x, s: (
        softops.sinkhorn((x[:, :, None] - x[:, None, :]) ** 2, epsilon=s).plan
    ),
    "spearman": lambda x, s: losses.spearman_correlation(x, x[:, ::-1], regularization_strength=s),
    "spearman_target": lambda x, s: losses.spearman_correlation(
        x, x[:, ::-1], target_regularization_strength=s
    ),
    "soft_ndcg": lambda x, s: losses.soft_ndcg(x, jnp.abs(x), regularization_strength=s),
    "soft_median": lambda x, s: losses.soft_median(x, regularization_strength=s),
    "soft_lts_loss": lambda x, s: losses.soft_lts_loss(x, regularization_strength=s),
    "soft_topk_rank_loss": lambda x, s: losses.soft_topk_rank_loss(
        x, jnp.zeros(3, jnp.int32), regularization_strength=s
    ),
    "soft_topk_mask_loss": lambda x, s: losses.soft_topk_mask_loss(
        x, jnp.zeros(3, jnp.int32), temperature=s
    ),
}


LOSS_STRENGTHS = {"spearman", "soft_ndcg", "soft_median", "soft_lts_loss", "soft_topk_rank_loss"}


@pytest.mark.parametrize(
    "name",
    slow_where(sorted(STRENGTH_OPS), lambda n: n in LOSS_STRENGTHS),
)
def test_traced_bad_strength_gives_nan_row(name):
    # Issue 9: a traced strength of -1 gave descending ranks, 0/NaN/inf gave all-zero results,
    # a traced 0 target strength gave 0.0 in spearman_correlation. One strength per row: row 0
    # good, rows 1 and 2 bad (each bad value in turn).
    op = jax.jit(STRENGTH_OPS[name])
    x = jnp.asarray(np.stack([GOOD, GOOD[::-1], np.roll(GOOD, 2)]), F32)
    good = np.asarray(op(x, jnp.full(3, 0.5, F32)))
    assert np.all(np.isfinite(good))
    for bad in (0.0, -1.0, np.nan, np.inf):
        out = np.asarray(op(x, jnp.array([0.5, bad, bad], F32)))
        assert np.all(np.isnan(out[1:])), (bad, out)
        np.testing.assert_array_equal(out[0], good[0])


# ------------------------------------------------------------------ solvers, losses


def test_unconverged_topk_is_nan_not_garbage():
    # Issue 9: soft_topk(x, 3, temperature=1e-4).values was [22.77, 94.95, 98.20] on N(0, 1) data.
    x = jax.random.normal(jax.random.key(0), (2, 100), F32)
    # Sinkhorn needs O(1/T) iterations: 20 are far too few at T = 1e-4.
    kw = dict(temperature=1e-4, max_iter=20, solver="sinkhorn")
    out = softops.soft_topk_solve(x, 3, **kw)
    assert not np.any(np.asarray(out.converged))
    values, assign = softops.soft_topk(x, 3, **kw)
    assert np.all(np.isnan(np.asarray(values))) and np.all(np.isnan(np.asarray(assign)))
    # The default Newton solver converges there, to values next to the hard top-k.
    out = softops.soft_topk_solve(x, 3, temperature=1e-4, max_iter=20)
    assert np.all(np.asarray(out.converged))
    hard = np.asarray(jax.lax.top_k(x, 3)[0])
    np.testing.assert_allclose(np.asarray(out.values), hard, atol=1e-2)
    # a converged row is inside the data and sorted
    values, _ = softops.soft_topk(x, 3, temperature=0.3)
    values = np.asarray(values)
    assert np.all(np.diff(values, axis=-1) <= 0)
    assert np.all(values <= np.asarray(x).max(-1, keepdims=True) + 1e-5)


def test_unconverged_mask_is_nan():
    x = jax.random.normal(jax.random.key(1), (2, 50), F32)
    out = softops.soft_topk_mask_solve(x, 5, temperature=1e-3, max_iter=1, solver="sinkhorn")
    assert not np.any(np.asarray(out.converged))
    mask = softops.soft_topk_mask(x, 5, temperature=1e-3, max_iter=1, solver="sinkhorn")
    assert np.all(np.isnan(np.asarray(mask)))


def _ar(x):
    return jnp.broadcast_to(jnp.arange(4.0, dtype=F32), x.shape)


def _lab(x):
    return jnp.zeros(x.shape[:-1], jnp.int32)


LOSSES_WITH_NAN = {
    "soft_median": lambda x: losses.soft_median(x),
    "soft_quantile": lambda x: losses.soft_quantile(x, 0.9),
    "spearman_loss": lambda x: losses.spearman_loss(x, _ar(x)),
    "spearman_loss_target": lambda x: losses.spearman_loss(_ar(x), x),
    "soft_lts_loss": lambda x: losses.soft_lts_loss(x),
    "soft_topk_rank_loss": lambda x: losses.soft_topk_rank_loss(x, _lab(x)),
    "soft_topk_mask_loss": lambda x: losses.soft_topk_mask_loss(x, _lab(x)),
    "soft_ndcg_scores": lambda x: losses.soft_ndcg(x, _ar(x)),
    "soft_ndcg_relevance": lambda x: losses.soft_ndcg(_ar(x), x),
}


@pytest.mark.parametrize("name", sorted(LOSSES_WITH_NAN))
def test_loss_with_nan_is_nan(name):
    # Issue 9: soft_median([1, nan, 3, 4]) = 3.1667, spearman_loss = 1.0, soft_lts_loss = 8.67,
    # soft_topk_rank_loss = 3.0, NaN relevance gave 0.0. Batched: the other example is unaffected.
    op = LOSSES_WITH_NAN[name]
    x = jnp.array([[1.0, jnp.nan, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]], F32)
    out = np.asarray(op(x))
    assert np.isnan(out[0]) and np.isfinite(out[1]), out
    # The same batch with the NaN replaced: the same program, so the good row must agree bit for
    # bit (against the row alone, XLA may round a float32 batch of another size differently).
    np.testing.assert_array_equal(out[1], np.asarray(op(x.at[0, 1].set(2.0)))[1])


@pytest.mark.parametrize("label", [-1, 4, 100])
def test_out_of_range_label_is_nan(label):
    # Issue 9: label -1 wrapped to the last class. A known label out of range (negative included)
    # raises; a traced one gives a NaN example, the other examples untouched.
    logits = jnp.array([[2.0, 0.0, -2.0, 1.0], [2.0, 0.0, -2.0, 1.0]], F32)
    labels = jnp.array([label, 0], jnp.int32)
    for op in (losses.soft_topk_rank_loss, losses.soft_topk_mask_loss):
        with pytest.raises(ValueError, match="labels"):
            op(logits, labels, k=1)
        out = np.asarray(jax.jit(lambda z, y, op=op: op(z, y, k=1))(logits, labels))
        assert np.isnan(out[0]) and np.isfinite(out[1]), (op.__name__, out)


def test_median_of_no_valid_item_is_nan():
    # Issue 9: soft_median of an empty axis gave 0 (NumPy: NaN).
    x = jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], F32)
    mask = jnp.array([[True, True, True], [False, False, False]])
    out = np.asarray(losses.soft_median(x, where=mask))
    assert np.isfinite(out[0]) and np.isnan(out[1])
    assert np.all(np.isnan(np.asarray(losses.soft_median(jnp.zeros((2, 0), F32)))))
    q = np.asarray(losses.soft_quantile(jnp.zeros((2, 0), F32), jnp.array([0.1, 0.5], F32)))
    assert q.shape == (2, 2) and np.all(np.isnan(q))


def test_ndcg_exp2_large_grades_do_not_overflow():
    # Issue 9: gain="exp2" with relevance 300 in float32 was NaN (2^300 overflows).
    scores = jnp.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]], F32)
    rel = jnp.array([[300.0, 0.0, 1.0], [300.0, 0.0, 1.0]], F32)
    out = np.asarray(losses.soft_ndcg(scores, rel, regularization_strength=1e-3))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0], 1.0, rtol=1e-6)
    # row 1 ranks the grade-300 item last: DCG = g / log2(4) with IDCG = g (g = 2^300 - 1)
    np.testing.assert_allclose(out[1], 0.5, rtol=1e-5)


def test_sinkhorn_bad_marginals():
    cost = jnp.array([[0.0, 1.0], [1.0, 0.0]], F32)
    with pytest.raises(ValueError, match="`b`.*b=\\[1.0, 0.0\\]"):
        softops.sinkhorn(cost, b=jnp.array([1.0, 0.0], F32), epsilon=0.1)
    with pytest.raises(ValueError, match="`a`.*a=\\[-1.0, 2.0\\]"):
        softops.sinkhorn(cost, a=jnp.array([-1.0, 2.0], F32), epsilon=0.1)
    with pytest.raises(ValueError, match="`a`"):
        softops.sinkhorn(cost, a=jnp.array([np.nan, 1.0], F32), epsilon=0.1)
    # traced: NaN for the problem, the other problem of the batch unaffected
    costs = jnp.stack([cost, cost])
    run = jax.jit(lambda a, b: softops.sinkhorn(costs, a, b, epsilon=0.1).plan)
    half = jnp.full((2, 2), 0.5, F32)
    good = np.asarray(run(half, half))
    for a, b in (
        (half, half.at[1].set(jnp.array([1.0, 0.0], F32))),
        (half, half.at[1].set(jnp.array([1.5, -0.5], F32))),
        (half.at[1].set(jnp.array([1.5, -0.5], F32)), half),
    ):
        out = np.asarray(run(a, b))
        assert np.all(np.isnan(out[1])), out
        np.testing.assert_array_equal(out[0], good[0])


# Issue 21: documented preconditions on traced values give a NaN row (known values raise, see
# test_arguments.py), and the other rows are untouched.
TWO_ROWS = jnp.asarray([[0.3, -1.2, 2.5, 0.0], [0.1, 0.4, -0.7, 1.3]], F32)
TRACED_PRECONDITIONS = {
    "isotonic_regression_negative_weight": lambda w: softops.isotonic_regression(
        TWO_ROWS, weights=w
    ),
    "projection_kl_w_not_positive": lambda w: softops.projection_permutahedron(
        TWO_ROWS, w, regularization="kl"
    ),
    "soft_ndcg_negative_relevance": lambda w: losses.soft_ndcg(TWO_ROWS, w),
    "soft_permutation_bad_temperature": lambda w: softops.soft_permutation(
        TWO_ROWS, temperature=w[:, 1]
    ),
    "soft_quantize_bad_strength": lambda w: softops.soft_quantize(
        TWO_ROWS, 2, regularization_strength=w[:, 1]
    ),
    "sort_with_bad_temperature": lambda w: softops.sort_with(
        TWO_ROWS, TWO_ROWS, temperature=w[:, 1]
    ),
    "quantile_normalization_bad_strength": lambda w: softops.soft_quantile_normalization(
        TWO_ROWS, jnp.arange(4.0, dtype=F32), regularization_strength=w[:, 1]
    ),
}


@pytest.mark.parametrize("name", sorted(TRACED_PRECONDITIONS))
def test_traced_precondition_gives_nan_row(name):
    op = jax.jit(TRACED_PRECONDITIONS[name])
    good = jnp.asarray([[1.0, 2.0, 0.5, 1.5], [1.0, 2.0, 0.5, 1.5]], F32)
    bad = good.at[0, 1].set(-1.0)  # row 0 breaks the precondition
    out, ref = np.asarray(op(bad)), np.asarray(op(good))
    assert np.all(np.isnan(out[0]))
    np.testing.assert_array_equal(out[1], ref[1])


def test_lts_nan_for_a_traced_trim_outside_and_an_empty_row():
    # Issue 21: a traced trim = 1.5 gave 0, and a row without valid residual gave 0 (the
    # quantiles give NaN: the mean of nothing).
    assert np.isnan(float(jax.jit(lambda t: losses.soft_lts_loss(GOOD, trim=t))(1.5)))
    where = jnp.asarray([[False] * 6, [True] * 6])
    out = np.asarray(losses.soft_lts_loss(jnp.stack([GOOD, GOOD]), where=where))
    assert np.isnan(out[0]) and out[1] == float(losses.soft_lts_loss(GOOD))


def test_empty_lists_and_a_non_finite_permutation_row():
    # Issue 21: soft_ndcg of empty lists raised a reduction error; soft_permutation of an
    # empty item axis raised ZeroDivisionError and an inf row came back partly finite.
    np.testing.assert_array_equal(losses.soft_ndcg(jnp.zeros((2, 0)), jnp.zeros((2, 0))), 0.0)
    assert softops.soft_permutation(jnp.zeros((2, 0), F32)).shape == (2, 0, 0)
    x = jnp.stack([GOOD, GOOD]).at[0, 2].set(jnp.inf)
    out = np.asarray(softops.soft_permutation(x))
    assert np.all(np.isnan(out[0]))
    np.testing.assert_array_equal(out[1], softops.soft_permutation(GOOD))
