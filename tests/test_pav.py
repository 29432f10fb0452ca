"""The isotonic solvers and the fast argsort: exactness on hard inputs, no quadratic loops."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp

from softops import _sort
from softops._isotonic import pav as _pav
from softops._isotonic.blocks import Stats as _Stats
from softops._sharding import count_last
from tests._np_reference import pav_decreasing


def _solve(kind, a, b, method, barrier=None):
    """Block starts of plain item statistics: l2 values ``a``, weights ``b``; or kl ``(a, b)``."""
    b = b if kind == "l2" else _pav.affine(b)
    return _pav.block_starts(kind, _pav.affine(a), b, method, barrier)


def _families(n, rng):
    """Inputs that stress each solver: random, sorted both ways, sawtooth, ties, cascades."""
    zeros = np.maximum(rng.standard_normal(n), 0)  # ReLU data: many exact zeros
    return {
        "random": rng.standard_normal(n),
        "increasing": np.arange(n, dtype=float),  # one block
        "decreasing": -np.arange(n, dtype=float),  # n blocks
        "sawtooth": (np.arange(n) % 7).astype(float),
        "relu": zeros / 1e-3 - np.arange(n, 0, -1),  # soft rank of ReLU data at eps = 1e-3
        "cascade": np.concatenate([[-(float(n) ** 2)], -np.arange(1.0, n)]),  # one merge a round
    }


def _reference(s, w, kind, cut):
    """Reference solution of one row with a forced block start at ``cut``, and its block starts.

    The blocks start where the solution changes value (the reference pools ties) and at ``cut``.
    """
    want = np.concatenate(
        [pav_decreasing(s[:cut], w[:cut], kind), pav_decreasing(s[cut:], w[cut:], kind)]
    )
    starts = np.r_[True, want[1:] != want[:-1]]
    starts[cut] = True
    return want, starts


@pytest.mark.parametrize("method", ["sequential", pytest.param("parallel", marks=pytest.mark.slow)])
@pytest.mark.parametrize("kind", ["l2", "kl"])
def test_solvers_exact_on_hard_inputs(method, kind):
    rng = np.random.default_rng(0)
    n = 200
    fams = _families(n, rng)
    y = np.stack(list(fams.values()))
    if kind == "l2":
        a, b = y, np.ones_like(y)
        s, w = y, np.zeros_like(y)
    else:
        a, b = y / 50, rng.standard_normal(y.shape) * 0.3
        s, w = a, b
    barrier = np.zeros(y.shape, bool)
    barrier[:, 150] = True  # a forced block start in every row
    starts = np.asarray(jax.jit(lambda a, b, bar: _solve(kind, a, b, method, bar))(a, b, barrier))
    for row, name in enumerate(fams):
        _, want_starts = _reference(s[row], w[row], kind, 150)
        ids = np.cumsum(starts[row]) - 1
        got_blocks = len(set(ids))
        assert starts[row, 0] and starts[row, 150], name
        np.testing.assert_array_equal(starts[row], want_starts, err_msg=f"{name} {kind} {method}")
        assert got_blocks == want_starts.sum()


def _desc_families(n, rng):
    """Nonincreasing KL statistics (s, w), as soft rank, soft sort and projections make them."""
    ranks = np.log(np.arange(n, 0, -1.0))
    theta = -np.sort(rng.standard_normal(n))
    return {
        "rank eps=0.01": (theta / 0.01, ranks),
        "rank eps=1": (theta, ranks),
        "rank eps=100": (theta / 100, ranks),
        "rank ties": (-np.sort(np.round(rng.standard_normal(n) * 2)), ranks),
        "sort eps=0.1": ((np.arange(n, 0, -1.0) - n) / 0.1, theta),
        "sort ties": (-np.arange(n, dtype=float) / 3, -np.sort(np.round(rng.standard_normal(n)))),
        "cascade": (np.r_[0.0, -np.arange(1.0, n) * 1e-3], np.r_[0.0, np.full(n - 1, -30.0)]),
    }


@pytest.mark.parametrize("method", ["sequential", pytest.param("parallel", marks=pytest.mark.slow)])
def test_kl_desc_exact_on_nonincreasing_statistics(method):
    # "kl_desc" (the stack carries anchored linear sums) solves the KL problem exactly on the
    # statistics it is meant for: float64 blocks equal the reference's, float32 block values are
    # within rounding of the float64 solution.
    rng = np.random.default_rng(3)
    n = 300
    fams = _desc_families(n, rng)
    s = np.stack([f[0] for f in fams.values()])
    w = np.stack([f[1] for f in fams.values()])
    barrier = np.zeros(s.shape, bool)
    barrier[:, 200] = True
    solve = jax.jit(lambda a, b, bar: _solve("kl_desc", a, b, method, bar))
    with jax.enable_x64(True):
        starts64 = np.asarray(solve(jnp.asarray(s), jnp.asarray(w), barrier))
    starts32 = np.asarray(solve(jnp.asarray(s, jnp.float32), jnp.asarray(w, jnp.float32), barrier))
    for row, name in enumerate(fams):
        want, want_starts = _reference(s[row], w[row], "kl", 200)
        np.testing.assert_array_equal(starts64[row], want_starts, err_msg=name)
        ids = np.cumsum(starts32[row]) - 1
        got = np.empty(n)
        for j in range(ids[-1] + 1):
            m = ids == j
            got[m] = logsumexp(s[row][m]) - logsumexp(w[row][m])
        np.testing.assert_allclose(
            got, want, rtol=0, atol=1e-5 * (1 + np.abs(want).max()), err_msg=name
        )


def _loop_copies(text):
    """Array copies inside the bodies of while loops that update a buffer in place.

    Those are the O(n)-step loops (the stack PAV), where one copy per step is O(n^2) in all. The
    parallel rounds (a loop of at most a few steps, no in-place slices) may copy their carry.
    """
    bodies = set(re.findall(r"while\(.*?body=%([\w.\-]+)", text))
    loops, count = 0, 0
    for comp in re.split(r"\n(?=%|ENTRY)", text):
        name = comp.split(" ", 1)[0].lstrip("%")
        if name in bodies and "dynamic-update-slice" in comp:
            loops += 1
            count += len(re.findall(r"= \w+\[\d[\d,]*\]\{[\d,]*\} copy\(", comp))
    return loops, count


@pytest.mark.parametrize("n", [4095, 4096, 2**14])
@pytest.mark.parametrize("kind", ["l2", "kl", "kl_desc"])
def test_stack_loop_copies_no_buffer(n, kind):
    # A copy of a stack buffer inside the loop makes the solver O(n^2) (it was 1.35 s at
    # n = 65536 against 2 ms at 65535). Power-of-two sizes used to trigger it.
    a = jnp.zeros((2, n // 2), jnp.float32)
    f = jax.jit(lambda a: _solve(kind, a, jnp.ones_like(a), "sequential"))
    loops, copies = _loop_copies(f.lower(a).compile().as_text())
    assert loops == 1 and copies == 0


def test_loop_copy_detector_sees_copies():
    # The detector must not be vacuous: a loop that keeps an old copy of its buffer.
    def f(x):
        def body(c):
            i, buf, old = c
            return i + 1, buf.at[i].set(buf[i] + old[i]), buf

        return jax.lax.while_loop(lambda c: c[0] < 10, body, (0, x, x))[1]

    text = jax.jit(f).lower(jnp.zeros(64)).compile().as_text()
    loops, copies = _loop_copies(text)
    assert loops == 1 and copies > 0


DTYPES = [jnp.float32, jnp.float64]


def _edge_rows(dtype):
    tiny = np.finfo(np.dtype(dtype)).tiny
    rng = np.random.default_rng(1)
    rows = [
        rng.standard_normal(9),
        np.round(rng.standard_normal(9)),  # ties
        [0.0, -0.0, 0.0, -0.0, 1.0, -1.0, -0.0, 0.0, 2.0],  # signed zeros
        [np.inf, -np.inf, 1.0, np.inf, 0.0, -np.inf, 3.0, -2.0, 1.0],
        [np.nan, 1.0, -np.nan, 0.0, np.nan, -1.0, 2.0, np.inf, -np.inf],
        [tiny / 4, -tiny / 4, tiny / 2, 0.0, -0.0, tiny, -tiny, tiny / 8, 1.0],  # subnormals
        np.full(9, 0.5),  # all equal
    ]
    return np.asarray(rows, dtype=np.dtype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("descending", [False, True])
def test_fast_argsort_matches_jnp_argsort(dtype, descending):
    x = jnp.asarray(_edge_rows(dtype))
    got = jax.jit(lambda x: _sort.argsort(x, descending=descending))(x)
    want = jnp.argsort(x, axis=-1, stable=True, descending=descending)
    if descending:  # ours keeps NaN last in both directions; jnp's reverses everything
        key = jnp.where(jnp.isnan(x), -jnp.inf, -x)
        want = jnp.argsort(key, axis=-1, stable=True)
        nan = jnp.isnan(x)
        rank_nan = jnp.argsort(nan, axis=-1, stable=True)
        want = jnp.take_along_axis(
            want, jnp.argsort(jnp.take_along_axis(nan, want, -1), axis=-1, stable=True), -1
        )
        del rank_nan
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize(
    "shape", [(3, 0), (5,), (4, 31), (2, 32), (3, 33), (2, 3, 1057), (1, 70000)]
)
def test_count_last_equals_cumsum(shape):
    # Block ids count with matmuls over blocks of 32 (recursively over the blocks' totals).
    flags = np.random.default_rng(len(shape)).random(shape) < 0.4
    want = np.cumsum(flags, axis=-1, dtype=np.int32)
    got = jax.jit(count_last)(jnp.asarray(flags))
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(got), want)
    np.testing.assert_array_equal(np.asarray(count_last(jnp.asarray(flags, jnp.int32))), want)


def test_count_last_exact_on_full_rows_and_under_vmap():
    ones = jnp.ones((2, 2**20 + 3), bool)  # counts up to 2**20: exact in float32
    np.testing.assert_array_equal(np.asarray(count_last(ones)[:, -1]), [2**20 + 3] * 2)
    flags = jnp.asarray(np.random.default_rng(0).random((3, 4, 100)) < 0.5)
    np.testing.assert_array_equal(
        np.asarray(jax.vmap(count_last)(flags)), np.cumsum(np.asarray(flags), -1)
    )


@pytest.mark.parametrize("n", [1, 2, 3])
def test_fast_argsort_small_rows(n):
    x = jnp.asarray(np.random.default_rng(n).standard_normal((4, n)), jnp.float32)
    np.testing.assert_array_equal(_sort.argsort(x), jnp.argsort(x, axis=-1, stable=True))


def test_fast_argsort_last_goes_after_all():
    x = jnp.asarray([[3.0, 1.0, 2.0, 0.0]], jnp.float32)
    last = jnp.asarray([[False, True, False, False]])
    np.testing.assert_array_equal(_sort.argsort(x, last=last), [[3, 2, 0, 1]])
    np.testing.assert_array_equal(_sort.argsort(x, descending=True, last=last), [[0, 2, 3, 1]])


@pytest.mark.parametrize("method", ["sequential", pytest.param("parallel", marks=pytest.mark.slow)])
@pytest.mark.parametrize("dtype", [pytest.param(np.float32, marks=pytest.mark.slow), np.float64])
def test_dense_solver_matches_pav(dtype, method):
    # Short L2 rows (method "auto") use the loop-free min-max solver: the same blocks as both
    # PAV solvers on random data, ties, weights and barriers.
    from softops._isotonic import dense as _dense

    rng = np.random.default_rng(1)
    n = 100
    fams = _families(n, rng)
    fams["int_ties"] = rng.integers(-3, 4, n).astype(float)
    fams["quarter_ties"] = np.round(rng.standard_normal(n) * 4) / 4 + np.arange(n) * 0.25
    y = np.stack(list(fams.values()))
    w = np.ones_like(y)
    w[::2] = np.round(rng.random((len(y[::2]), n)) * 4 + 1) / 4  # weighted rows
    barrier = rng.random(y.shape) < 0.05
    barrier[:, 0] = True
    with jax.enable_x64(dtype == np.float64):
        a, b = jnp.asarray(y, dtype), jnp.asarray(w, dtype)
        for rows in (slice(0, 1), slice(None)):
            assert _dense.use("l2", a[rows].shape) == (rows == slice(0, 1))
        za, ca, ra = _pav.affine(a)
        stats = _Stats(za, ca, ra, b, ca, ra)
        dense = np.asarray(_dense.block_starts(stats, jnp.asarray(barrier)))
        auto = np.asarray(_solve("l2", a[:1], b[:1], "auto", barrier[:1]))
        want = np.asarray(_solve("l2", a, b, method, barrier))
        for row, name in enumerate(fams):
            np.testing.assert_array_equal(dense[row], want[row], err_msg=f"{name} {method}")
    np.testing.assert_array_equal(auto, dense[:1])


def test_merge_tree_no_false_tie_when_one_block_dominates_the_sums():
    # A KL soft sort at eps = 0.01 with scores ~1e3 apart (the reference data's case): block 0
    # dominates the pooled sums of {0, 1, 2}, so F(v0) rounds to exactly 0, and the merge tree's
    # old test F >= 0 pooled it (the sorted values were off by 27). The blocks must be PAV's.
    x = np.array([838.0, 134.0, -470.0, -704.4, 1889.0, 231.3, 1904.0, 1527.0, -1178.0, -263.3])
    x = np.r_[x, [648.8, 1142.0, 357.5, -1105.0, 425.3, -720.7, 27.74, -598.9, 0.2049, 170.0]]
    x = np.r_[x, [-128.7, -334.7, -832.1, 1362.0, 106.0]]
    s = np.sort(-x)[::-1]
    a = -np.arange(s.size) / 0.01
    sol = pav_decreasing(a, s, "kl")
    want = np.r_[True, sol[1:] != sol[:-1]]
    with jax.enable_x64(True):
        for method in ("sequential", "parallel"):
            got = np.asarray(_solve("kl_desc", jnp.asarray(a[None]), jnp.asarray(s[None]), method))
            np.testing.assert_array_equal(got[0], want, err_msg=method)
