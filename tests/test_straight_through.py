"""``straight_through=True``: the hard operator's values with the soft operator's derivative."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softops
from tests._marks import slow_where

X = np.array([[0.3, -1.2, 2.5, 0.3, 1.1, -0.4], [4.0, 1.0, 1.0, -2.0, 0.5, 3.0]], dtype=np.float64)
U = np.random.default_rng(0).normal(size=X.shape)


def _hard_rank(row, descending):
    """Average ranks of tied values (1 = smallest unless descending), by counting."""
    z = -row if descending else row
    less = (z[None, :] < z[:, None]).sum(1)
    equal = (z[None, :] == z[:, None]).sum(1)
    return less + (equal + 1) / 2


OPS = {
    "soft_rank": (
        functools.partial(softops.soft_rank, regularization_strength=0.7),
        lambda x: np.stack([_hard_rank(r, False) for r in x]),
    ),
    "soft_rank_desc_kl": (
        functools.partial(softops.soft_rank, descending=True, regularization="kl"),
        lambda x: np.stack([_hard_rank(r, True) for r in x]),
    ),
    "soft_sort": (
        functools.partial(softops.soft_sort, regularization_strength=0.7),
        lambda x: np.sort(x, axis=-1),
    ),
    "soft_topk_mask": (
        functools.partial(softops.soft_topk_mask, k=2, epsilon=0.2),
        # Row 1 ties 1.0 (indices 1 and 2) below the top two: no tie at the cut.
        lambda x: (np.argsort(np.argsort(-x, kind="stable"), kind="stable") < 2).astype(x.dtype),
    ),
    "soft_topk_values": (
        lambda x, **kw: softops.soft_topk(x, 3, epsilon=0.2, **kw)[0],
        lambda x: -np.sort(-x, axis=-1)[:, :3],
    ),
}


@pytest.mark.parametrize(
    "name",
    # soft_topk's hard values and assignment stay checked in the fast pass (test below)
    slow_where(sorted(OPS), lambda name: name == "soft_topk_values"),
)
def test_value_is_hard_and_derivative_is_soft(name):
    op, hard = OPS[name]
    x = jnp.asarray(X)
    st = functools.partial(op, straight_through=True)
    np.testing.assert_allclose(st(x), hard(X), rtol=0, atol=1e-12)
    # The derivative is the soft operator's, in reverse and forward mode.
    vjp_st = jax.grad(lambda x: jnp.sum(st(x) * U[:, : st(x).shape[-1]]))(x)
    vjp_soft = jax.grad(lambda x: jnp.sum(op(x) * U[:, : op(x).shape[-1]]))(x)
    np.testing.assert_allclose(vjp_st, vjp_soft, rtol=1e-12, atol=1e-14)
    assert np.all(np.isfinite(vjp_st)) and np.any(vjp_st != 0)
    t = jnp.asarray(U)
    jvp_st = jax.jvp(st, (x,), (t,))[1]
    jvp_soft = jax.jvp(op, (x,), (t,))[1]
    np.testing.assert_allclose(jvp_st, jvp_soft, rtol=1e-12, atol=1e-14)


def test_sorted_topk_assignment_is_one_hot_of_top_k():
    x = jnp.asarray(X)
    values, assign = softops.soft_topk(x, 3, epsilon=0.2, straight_through=True)
    top, index = jax.lax.top_k(x, 3)
    np.testing.assert_array_equal(values, top)
    np.testing.assert_array_equal(assign, jax.nn.one_hot(index, X.shape[-1], dtype=x.dtype))
    _, smallest = softops.soft_topk(x, 2, epsilon=0.2, largest=False, straight_through=True)
    np.testing.assert_array_equal(smallest.argmax(-1), np.argsort(X, axis=-1)[:, :2])


def test_mask_with_where_traced_fractional_k_and_axis():
    x = jnp.asarray(X.T)  # items along axis 0
    valid = jnp.asarray(X.T > 0)
    k = jnp.asarray([1.5, 1.0])  # per row; 1.5 selects the two of 0-based rank 0 and 1
    m = jax.jit(
        lambda x, k: softops.soft_topk_mask(
            x, k, axis=0, epsilon=0.2, where=valid, largest=False, straight_through=True
        )
    )(x, k)
    # Row 0's valid items [0.3, 2.5, 0.3, 1.1]: the two smallest are the tied 0.3s.
    np.testing.assert_array_equal(m[:, 0], [1, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(m[:, 1], [0, 0, 0, 0, 1, 0])  # valid: 4, 1, 1, 0.5, 3


def test_nan_row_stays_nan_and_others_are_exact():
    x = jnp.asarray(X).at[0, 1].set(jnp.nan)
    m = softops.soft_topk_mask(x, 2, epsilon=0.2, straight_through=True)
    assert np.all(np.isnan(m[0]))
    np.testing.assert_array_equal(m[1], [1, 0, 0, 0, 0, 1])
    values, assign = softops.soft_topk(x, 2, epsilon=0.2, straight_through=True)
    assert np.all(np.isnan(values[0])) and np.all(np.isnan(assign[0]))
    np.testing.assert_array_equal(values[1], [4.0, 3.0])


def test_straight_through_must_be_bool():
    with pytest.raises(TypeError, match="straight_through.*'yes'"):
        softops.soft_topk_mask(jnp.asarray(X), 2, straight_through="yes")
    with pytest.raises(TypeError, match="straight_through.*'yes'"):
        softops.soft_topk(jnp.asarray(X), 2, straight_through="yes")
