"""The p-norm soft sort, soft rank and projection (``regularization="p=3/2" | "p=4/3"``).

Values against the float64 references of ``tests/_pnorm_reference.py`` (PAV with block values
by bisection), the sparse top-k masks of ``softops.sparse_topk`` (another algorithm for the same
projection), limits, ties, masks, packed lists and non-finite rows. Derivatives (check_grads,
JVP/VJP, jit/vmap) are in ``test_derivatives_all.py``, sharding in ``test_sharding.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softops import projection_permutahedron, soft_rank, soft_sort, soft_topk_mask
from tests import _pnorm_reference as ref

REGS = list(ref.POWERS)
RNG = np.random.default_rng(2026_12_08)


def _rows(batch=16, n=11):
    """Random rows at several scales, with ties, a four-way tie and wide gaps."""
    x = RNG.standard_normal((batch, n)) * np.exp(RNG.uniform(-3, 3, (batch, 1)))
    x[1] = np.round(x[1] * 2) / 2
    x[2, :4] = 0.3
    x[3] *= 100
    eps = np.exp(RNG.uniform(np.log(0.01), np.log(30.0), batch))
    return x, eps


@pytest.mark.parametrize("reg", REGS)
def test_rank_and_sort_match_the_reference(reg):
    x, eps = _rows()

    @jax.jit
    def ops(x, eps):
        return (
            soft_rank(x, regularization=reg, regularization_strength=eps),
            soft_sort(x, regularization=reg, regularization_strength=eps),
            soft_sort(x, regularization=reg, regularization_strength=eps, descending=True),
        )

    rank, asc, desc = ops(x, eps)
    for i in range(len(x)):
        scale = 1 + np.abs(x[i]).max()
        np.testing.assert_allclose(rank[i], ref.soft_rank(x[i], eps[i], reg), rtol=0, atol=1e-11)
        np.testing.assert_allclose(asc[i], ref.soft_sort(x[i], eps[i], reg), atol=1e-12 * scale)
        want = ref.soft_sort(x[i], eps[i], reg, descending=True)
        np.testing.assert_allclose(desc[i], want, rtol=0, atol=1e-12 * scale)
    n = x.shape[1]
    np.testing.assert_allclose(rank.sum(-1), n * (n + 1) / 2, rtol=1e-13)
    np.testing.assert_allclose(asc.sum(-1), x.sum(-1), rtol=0, atol=1e-12 * np.abs(x).sum())
    assert np.all(np.diff(np.asarray(asc), axis=-1) >= 0)
    assert np.all(np.diff(np.asarray(desc), axis=-1) <= 0)


@pytest.mark.parametrize("reg", REGS)
def test_projection_with_any_weights_matches_the_reference(reg):
    z = RNG.standard_normal((8, 9)) * 3
    w = RNG.standard_normal((8, 9)) * np.exp(RNG.uniform(-2, 2, (8, 1)))
    out = projection_permutahedron(z, w, regularization=reg)
    for i in range(len(z)):
        np.testing.assert_allclose(out[i], ref.projection(z[i], w[i], reg), rtol=0, atol=1e-11)
    np.testing.assert_allclose(out.sum(-1), w.sum(-1), atol=1e-12)


@pytest.mark.parametrize("reg", REGS)
def test_top_k_weights_give_the_sparse_mask(reg):
    """With w = (1, ..., 1, 0, ...) the projection of x / tau is Sander et al.'s sparse top-k."""
    x = RNG.standard_normal((12, 10))
    k = RNG.integers(1, 9, 12)
    tau = np.exp(RNG.uniform(np.log(0.05), np.log(3.0), 12))
    w = (np.arange(10)[None] < k[:, None]).astype(np.float64)
    out = projection_permutahedron(x / tau[:, None], w, regularization=reg)
    mask = soft_topk_mask(x, k, temperature=tau, regularization=reg)
    np.testing.assert_allclose(out, mask, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(np.asarray(out) == 0, np.asarray(mask) == 0)
    assert np.sum(np.asarray(out) == 0) > 30  # exactly sparse


@pytest.mark.slow
@pytest.mark.parametrize("reg", REGS)
def test_limits_ties_and_float32(reg):
    x = RNG.standard_normal((4, 50))
    hard = np.argsort(np.argsort(x, axis=-1), axis=-1) + 1.0
    np.testing.assert_allclose(soft_rank(x, regularization=reg, regularization_strength=1e-6), hard)
    np.testing.assert_allclose(
        soft_sort(x, regularization=reg, regularization_strength=1e-6),
        np.sort(x, axis=-1),
        rtol=0,
        atol=1e-12,
    )
    flat = soft_rank(x, regularization=reg, regularization_strength=1e8)
    np.testing.assert_allclose(flat, 25.5, rtol=0, atol=1e-3)
    tied = soft_rank(jnp.array([0.5, -1.0, 0.5, 2.0, 0.5]), regularization=reg)
    assert tied[0] == tied[2] == tied[4]
    # float32 rows, long and at a small strength: within float32 rounding of the reference
    x32 = RNG.standard_normal((2, 400)).astype(np.float32)
    got = soft_rank(x32, regularization=reg, regularization_strength=0.05)
    assert got.dtype == jnp.float32
    want = np.stack([ref.soft_rank(r.astype(np.float64), 0.05, reg) for r in x32])
    np.testing.assert_allclose(got, want, rtol=2e-6)
    half = soft_sort(x32[:, :20].astype(jnp.bfloat16), regularization=reg)
    assert half.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(half, np.float32)))


@pytest.mark.slow
@pytest.mark.parametrize("reg", REGS)
def test_where_segments_and_bad_rows(reg):
    x = RNG.standard_normal((3, 8))
    mask = np.ones((3, 8), bool)
    mask[0, [1, 5]] = False
    ids = np.array([[0, 0, 1, 1, 0, 1, 0, 1]] * 3)
    x[2, 3] = np.nan
    r = soft_rank(x, regularization=reg, where=mask, regularization_strength=0.7)
    keep = mask[0]
    np.testing.assert_allclose(r[0, keep], ref.soft_rank(x[0, keep], 0.7, reg), atol=1e-12)
    assert np.all(np.asarray(r[0, ~keep]) == 0)
    assert np.all(np.isnan(np.asarray(r[2]))) and np.all(np.isfinite(np.asarray(r[:2])))
    s = soft_sort(x, regularization=reg, segments=ids, regularization_strength=0.7)
    for seg in (0, 1):
        cols = ids[1] == seg
        np.testing.assert_allclose(s[1, cols], ref.soft_sort(x[1, cols], 0.7, reg), atol=1e-12)
    assert np.all(np.isnan(np.asarray(s[2]))) and np.all(np.isfinite(np.asarray(s[:2])))


@pytest.mark.slow
@pytest.mark.parametrize("reg", REGS)
def test_long_rows_through_the_stack(reg):
    """Long rows whose blocks the vectorized rounds leave to the stack PAV (and its re-check)."""
    x = RNG.standard_normal((3, 300))
    x[1] = np.round(x[1] * 4) / 4  # many ties
    eps = np.array([0.05, 0.3, 3.0])
    mask = np.ones((3, 300), bool)
    mask[2, ::7] = False
    r = soft_rank(x, regularization=reg, regularization_strength=eps, where=mask)
    for i in range(3):
        keep = mask[i]
        want = ref.soft_rank(x[i, keep], eps[i], reg)
        np.testing.assert_allclose(r[i, keep], want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("power", [2, 3])
def test_stack_loop_copies_no_buffer(power):
    # One copy of a stack buffer per step would make the stack PAV O(n^2).
    from softops._isotonic import pnorm_stack
    from tests.test_pav import _loop_copies

    def f(d, w):
        barrier = jnp.zeros(d.shape, bool).at[:, 0].set(True)
        return pnorm_stack.block_starts(d, w, barrier, power)

    d = jnp.zeros((2, 4096), jnp.float64)
    loops, copies = _loop_copies(jax.jit(f).lower(d, d).compile().as_text())
    assert loops == 1 and copies == 0


@pytest.mark.slow
@pytest.mark.parametrize("reg", REGS)
def test_float32_within_a_few_ulps_of_the_scale(reg):
    """Clusters of near-ties far from the row's first item, float32: within 4 ulps of the op's
    scale (n for ranks, max |x| for sorts) of the float64 result of the same float32 input."""
    rng = np.random.default_rng(6)
    for _ in range(4):
        base = np.sort(rng.uniform(-1e3, 1e3, 20))
        x = np.repeat(base, 10) + rng.normal(size=200) * 10.0 ** rng.uniform(-3, 0)
        x = x.astype(np.float32)
        eps = np.float32(10.0 ** rng.uniform(-2, 1))
        for op, scale in (("rank", 200), ("sort", np.abs(x).max())):
            want = getattr(ref, f"soft_{op}")(x.astype(np.float64), float(eps), reg)
            out = {"rank": soft_rank, "sort": soft_sort}[op](
                x, regularization=reg, regularization_strength=eps
            )
            ulps = np.abs(np.asarray(out, np.float64) - want).max() / scale / 2.0**-23
            assert ulps <= 4, (op, ulps)
