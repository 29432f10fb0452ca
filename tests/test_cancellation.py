"""float32 keeps its digits at any strength and magnitude (issue 9, item 1).

Every op is run on the same float32 inputs in float32 and in float64 (the float64 run is the
reference: it sees exactly the float32 values) over strengths ε from 1e-8 to 1e3 (relative to
the scale of the data) and magnitudes |x| from 1e-3 to 1e30. The bounds are those the closed
forms allow, with u = 2^-24 the float32 unit roundoff and n the row length:

- soft ranks (rank units): each output is a block mean of the ranks (<= n) plus a combination of
  the block's differences t = (x_i - x_p)/ε, each |t| <= 2n inside a pooled block (the spread of
  the ranks bounds it) with relative error <= 3u, summed over at most n items; and the block
  structure is found from the same differences, each within 3u of exact, so a decision flipped
  by rounding moves the output by at most three times that perturbation (the projection is
  1-Lipschitz). In all, |r32 - r64| <= 32 n^2 u; the cancellation faults of issue 9 were errors of
  1 to 10^8 ranks.
- soft sort, the projection and the isotonic ops (units of the row's largest |input|): sums over a
  block of at most n terms of magnitude <= 2 max|x|, each rounded once or twice: <= 8 n u max|x|.
  Under KL the log-sum-exps over a block add up to log(n) to the values (soft sort, isotonic_kl:
  units of max|x| + log n) and the projection's outputs are softmaxes times sum(w) (units of
  sum(w)).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softops import (
    isotonic_kl,
    isotonic_l2,
    projection_permutahedron,
    soft_rank,
    soft_sort,
)
from softops.losses import soft_ndcg

U32 = 2.0**-24
N = 64
EPS_REL = (1e-8, 1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e3)
SCALES = (1e-3, 1.0, 1e4, 1e15, 1e30)


def _rows(scale: float) -> np.ndarray:
    """Four float32 rows of N values of size ``scale``: plain, tied, one outlier, clustered."""
    rng = np.random.default_rng(int(np.log10(scale)) + 100)
    x = rng.standard_normal((4, N))
    x[1] = np.round(x[1] * 4) / 4  # ties and equal gaps
    x[2, 0] = min(1e8, 1e30 / scale)  # an outlier far above the rest
    x[3] = 1 + 1e-3 * x[3]  # a cluster far from 0: the gaps are 1e-3 of the values
    return (x * scale).astype(np.float32)


def _pair(fn, *args, **kwargs):
    """``fn`` on float32 arguments and on the same values in float64."""
    a32 = [jnp.asarray(a, jnp.float32) for a in args]
    a64 = [jnp.asarray(np.asarray(a, np.float32), jnp.float64) for a in args]
    return np.asarray(fn(*a32, **kwargs)), np.asarray(fn(*a64, **kwargs))


# ------------------------------------------------------------------ the concrete cases


@pytest.mark.parametrize("regularization", ["l2", "kl"])
def test_large_values_small_strength_keep_ranks(regularization):
    # Issue 9: [1e4, 2e4, 3e4] at ε = 1e-3 gave [1, 2, 2] (L2) and [1, 1, 7.389] (KL).
    x = jnp.array([1e4, 2e4, 3e4], jnp.float32)
    r = soft_rank(x, regularization_strength=1e-3, regularization=regularization)
    np.testing.assert_array_equal(np.asarray(r), [1.0, 2.0, 3.0])


@pytest.mark.parametrize("regularization", ["l2", "kl"])
def test_tiny_strength_gives_exact_ranks(regularization):
    # Issue 9: arange at ε = 1e-8 gave [0, 0, 0, 0, 0].
    x = jnp.arange(1.0, 6.0, dtype=jnp.float32)
    r = soft_rank(x, regularization_strength=1e-8, regularization=regularization)
    np.testing.assert_array_equal(np.asarray(r), [1.0, 2.0, 3.0, 4.0, 5.0])
    r = soft_rank(x, regularization_strength=1e-8, regularization=regularization, descending=True)
    np.testing.assert_array_equal(np.asarray(r), [5.0, 4.0, 3.0, 2.0, 1.0])


@pytest.mark.parametrize("regularization", ["l2", "kl"])
@pytest.mark.parametrize("method", ["sequential", "parallel"])
def test_outlier_does_not_erase_the_other_gaps(regularization, method):
    # Found while writing these tests: the block structure was computed from x_i - max(x), so one
    # outlier of 1e8 rounded the gaps of 2 between the others away in float32 ([4, 0, 2, 4]).
    x = jnp.array([1e8, 0.0, 2.0, 4.0], jnp.float32)
    r = soft_rank(x, regularization_strength=1.0, regularization=regularization, method=method)
    np.testing.assert_array_equal(np.asarray(r), [4.0, 1.0, 2.0, 3.0])
    r = soft_rank(-x, regularization_strength=1.0, regularization=regularization, method=method)
    np.testing.assert_array_equal(np.asarray(r), [1.0, 4.0, 3.0, 2.0])


@pytest.mark.slow
def test_normal_data_l2_ranks_sum_and_range():
    # Issue 9: N(0, 1), n = 1000: at ε = 1e-7 a rank 0 appeared and the row stopped summing to
    # n(n + 1)/2; KL ranks went above n at 1e-6. One row per ε (the strength is per row).
    n = 1000
    eps = jnp.array([1e-4, 1e-5, 1e-6, 1e-7], jnp.float32)
    x = jnp.broadcast_to(jax.random.normal(jax.random.key(0), (n,), jnp.float32), (4, n))
    for reg in ("l2", "kl"):
        r32, r64 = _pair(
            lambda v, e, reg=reg: soft_rank(v, regularization_strength=e, regularization=reg),
            x,
            eps,
        )
        assert r32.min() >= 1 - 1e-3 and r32.max() <= n + 1e-3, (reg, r32.min(), r32.max())
        np.testing.assert_allclose(r32, r64, rtol=0, atol=32 * n * n * U32)
        if reg == "l2":
            # A float32 sum of n values up to n: relative error <= n u.
            sums = r32.astype(np.float64).sum(-1)
            np.testing.assert_allclose(sums, n * (n + 1) / 2, rtol=n * U32)


def test_ndcg_with_huge_score_is_finite():
    # Issue 9: soft_ndcg([1e30, 0, 1, 2], ...) was NaN (the ranks were garbage). An absolute
    # strength (relative=False): relative to this list's spread, 1e-3 would pool 0, 1 and 2.
    scores = jnp.array([1e30, 0.0, 1.0, 2.0], jnp.float32)
    rel = jnp.array([3.0, 0.0, 1.0, 2.0], jnp.float32)
    v32, v64 = _pair(
        lambda s, r: soft_ndcg(s, r, regularization_strength=1e-3, relative=False), scores, rel
    )
    assert np.isfinite(v32)
    np.testing.assert_allclose(v32, 1.0, rtol=8 * U32)
    np.testing.assert_allclose(v32, v64, rtol=8 * U32)


# ------------------------------------------------------------------ the sweep
#
# One batch holds every (scale, ε) pair: the strength is per row, so each op compiles once per
# dtype and option.


def _sweep(strength_of):
    """Rows of every scale repeated for every ε, their strengths and their scales."""
    rows, eps, scales = [], [], []
    for scale in SCALES:
        x = _rows(scale)
        for e in EPS_REL:
            if strength_of(e, scale) < 1e-37:
                # Below float32's smallest normal number (1.2e-38) XLA flushes the strength to 0,
                # which the ops treat as a bad strength (NaN).
                continue
            rows.append(x)
            eps += [strength_of(e, scale)] * len(x)
            scales += [scale] * len(x)
    return np.concatenate(rows), np.asarray(eps, np.float32), np.asarray(scales)


@pytest.mark.parametrize("regularization", ["l2", pytest.param("kl", marks=pytest.mark.slow)])
def test_soft_rank_float32_matches_float64(regularization):
    x, eps, _ = _sweep(lambda e, scale: e * scale)  # ε in the units of x
    for descending in (False, True):
        r32, r64 = _pair(
            lambda v, s: soft_rank(
                v,
                regularization_strength=s,
                regularization=regularization,
                descending=descending,
            ),
            x,
            eps,
        )
        err = np.abs(r32 - r64).max(-1)
        assert err.max() <= 32 * N * N * U32, (descending, err.max(), eps[err.argmax()])


@pytest.mark.parametrize("regularization", ["l2", pytest.param("kl", marks=pytest.mark.slow)])
def test_soft_sort_float32_matches_float64(regularization):
    # soft_sort's ε acts on the inverse scale of x (gaps above 1/ε pool).
    x, eps, _ = _sweep(lambda e, scale: e / scale)
    top = np.abs(x.astype(np.float64)).max(-1, keepdims=True)
    if regularization == "kl":  # log-sum-exps over a block add up to log(n) in the units of x
        top = top + np.log(N)
    for descending in (False, True):
        s32, s64 = _pair(
            lambda v, s: soft_sort(
                v,
                regularization_strength=s,
                regularization=regularization,
                descending=descending,
            ),
            x,
            eps,
        )
        err = (np.abs(s32 - s64) / top).max(-1)
        assert err.max() <= 8 * N * U32, (descending, err.max(), eps[err.argmax()])


@pytest.mark.slow
@pytest.mark.parametrize("regularization", ["l2", "kl"])
def test_projection_float32_matches_float64(regularization):
    x, eps, _ = _sweep(lambda e, scale: e * scale)
    # z = x / ε onto the permutahedron of the ranks (soft_rank's projection), and onto the
    # permutahedron of a positive w of the size of z.
    z = x.astype(np.float64) / eps.astype(np.float64)[:, None]
    z = z[np.all(np.abs(z) < 1e37, axis=-1)].astype(np.float32)
    p32, p64 = _pair(lambda v: projection_permutahedron(v, regularization=regularization), z)
    assert np.abs(p32 - p64).max() <= 32 * N * N * U32
    w = np.abs(np.roll(z, 1, axis=-1)) + np.float32(1)
    p32, p64 = _pair(
        lambda v, w: projection_permutahedron(v, w, regularization=regularization), z, w
    )
    z64, w64 = np.abs(z.astype(np.float64)), np.abs(w.astype(np.float64))
    if regularization == "l2":
        top = np.maximum(z64, w64).max(-1, keepdims=True)
    else:  # the outputs are w-weighted softmaxes: units of sum(w)
        top = w64.sum(-1, keepdims=True)
    assert (np.abs(p32 - p64) / top).max() <= 8 * N * U32


@pytest.mark.slow
def test_isotonic_float32_matches_float64():
    rng = np.random.default_rng(1)
    x = np.concatenate([_rows(scale) for scale in SCALES])
    top = np.abs(x.astype(np.float64)).max(-1, keepdims=True)
    # s close to w (strong cancellation in s - w) to s far from w.
    spread = np.repeat(np.array([1e-6, 1e-2, 1.0]), len(x))[:, None]
    s = np.tile(x, (3, 1))
    w = s.astype(np.float64) + spread * np.tile(top, (3, 1)) * rng.standard_normal(s.shape)
    w = w.astype(np.float32)
    top = np.maximum(np.abs(s), np.abs(w)).astype(np.float64).max(-1, keepdims=True)
    for op in (isotonic_l2, isotonic_kl):
        v32, v64 = _pair(op, s, w)
        # isotonic_kl is a difference of two log-sum-exps, each up to max|.| + log(n).
        unit = top + np.log(N) if op is isotonic_kl else top
        err = (np.abs(v32 - v64) / unit).max()
        assert err <= 8 * N * U32, (op.__name__, err)
