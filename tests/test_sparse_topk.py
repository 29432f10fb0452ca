"""The exactly sparse top-k masks (``soft_topk_mask(regularization=...)``) and
``soft_topk_magnitude``, against the float64 references of ``tests/_sparse_reference.py``.

Each test batches many rows (per-row k and temperature) into one call, so that the fast pass
compiles few programs. Derivatives (check_grads, JVP/VJP) are in ``test_derivatives_all.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from softops import soft_topk_magnitude, soft_topk_mask, soft_topk_mask_solve
from tests import _sparse_reference as ref

POWERS = {"l2": 1, "p=3/2": 2, "p=4/3": 3}
RNG = np.random.default_rng(23)
N = 9


def _rows(batch: int = 24, n: int = N):
    """Random rows, some with ties and with wide gaps; per-row k (float) and temperature."""
    x = RNG.standard_normal((batch, n))
    x[1] = np.round(x[1] * 2) / 2  # ties
    x[2, :4] = 0.7  # a four-way tie
    x[3] *= 10  # gaps wider than the temperature: exact 0/1 entries, a flat root
    k = RNG.integers(1, n, batch).astype(np.float64)
    tau = np.exp(RNG.uniform(np.log(0.05), np.log(3.0), batch))
    return x, k, tau


@jax.jit
def _mask_all(x, k, tau):
    return {reg: soft_topk_mask_solve(x, k, temperature=tau, regularization=reg) for reg in POWERS}


@pytest.mark.parametrize("reg", list(POWERS))
def test_matches_reference_exact_zeros_and_sums(reg):
    x, k, tau = _rows()
    out = _mask_all(jnp.asarray(x), jnp.asarray(k), jnp.asarray(tau))[reg]
    assert bool(out.converged.all()), out.iterations
    for i in range(x.shape[0]):
        want, _ = ref.sparse_mask(x[i], k[i], tau[i], POWERS[reg])
        got = np.asarray(out.mask[i])
        np.testing.assert_allclose(got, want, atol=1e-12, rtol=0, err_msg=f"row {i}")
        np.testing.assert_array_equal(got == 0, want == 0, err_msg=f"row {i}")
        np.testing.assert_array_equal(got == 1, want == 1, err_msg=f"row {i}")
        np.testing.assert_allclose(got.sum(), k[i], atol=1e-12)
        # fractional entries only within tau above the threshold
        frac = (got > 0) & (got < 1)
        thr = float(out.threshold[i])
        assert np.all((x[i][frac] > thr) & (x[i][frac] < thr + tau[i]))
        assert np.all(got[x[i] <= thr] == 0) and np.all(got[x[i] >= thr + tau[i]] == 1)
    assert int(out.iterations.max()) <= 12


@pytest.mark.slow
@pytest.mark.parametrize("reg", list(POWERS))
def test_limits_hard_topk_and_uniform(reg):
    x, k, _ = _rows()
    k = np.round(k)
    masks = _mask_all(jnp.asarray(x), jnp.asarray(k), jnp.full(24, 1e-9))[reg].mask
    for i in range(4, 24):  # distinct values: exactly k ones
        np.testing.assert_array_equal(masks[i], ref.hard_mask(x[i], int(k[i])))
    masks = _mask_all(jnp.asarray(x), jnp.asarray(k), jnp.full(24, 1e9))[reg].mask
    np.testing.assert_allclose(masks, np.broadcast_to((k / N)[:, None], x.shape), atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("reg", ["l2", "p=4/3"])
def test_where_smallest_and_nonfinite_rows(reg):
    x = RNG.standard_normal((5, 7))
    mask = RNG.random((5, 7)) > 0.3
    mask[:, :4] = True
    x[1, 2] = np.nan  # a NaN: NaN row
    x[2, 1] = -np.inf  # the smallest possible score, selecting the smallest: NaN row
    x[3, 0] = np.inf  # never among the smallest: exactly 0, the row as if it were absent
    got = soft_topk_mask(jnp.asarray(x), 2, largest=False, temperature=0.4, where=mask,
                         regularization=reg)  # fmt: skip
    got = np.asarray(got)
    assert np.all(got[~mask] == 0)
    assert np.all(np.isnan(got[1][mask[1]])) and np.all(np.isnan(got[2][mask[2]]))
    for i in (0, 3, 4):
        keep = mask[i] & (x[i] != np.inf)
        want = np.zeros(7)
        want[keep], _ = ref.sparse_mask(-x[i][keep], 2, 0.4, POWERS[reg])
        np.testing.assert_allclose(got[i], want, atol=1e-12)
    assert got[3, 0] == 0


@pytest.mark.slow
@pytest.mark.parametrize("reg", ["l2", "p=3/2"])
def test_bad_rows_are_nan_with_zero_derivatives(reg):
    # The NaN policy: a NaN score, a traced temperature <= 0 or a NaN k makes its row NaN, and
    # the derivatives with respect to every input of that row exactly 0 (both modes).
    x = RNG.standard_normal((4, 7))
    x[1, 2] = np.nan
    temp = jnp.asarray([0.6, 0.6, -1.0, 0.6])
    k = jnp.asarray([2.5, 2.0, 2.0, np.nan])
    u = jnp.asarray(RNG.standard_normal((4, 7)))

    def f(x, t, k):
        return soft_topk_mask(x, k, temperature=t, regularization=reg)

    out, vjp = jax.vjp(f, jnp.asarray(x), temp, k)
    assert np.all(np.isnan(np.asarray(out[1:])))
    gx, gt, gk = vjp(u)
    np.testing.assert_array_equal(np.asarray(gx[1:]), 0)
    np.testing.assert_array_equal(np.asarray(gt[1:]), 0)
    np.testing.assert_array_equal(np.asarray(gk[1:]), 0)
    want, vjp0 = jax.vjp(f, jnp.asarray(x[:1]), temp[:1], k[:1])
    np.testing.assert_allclose(out[:1], want, atol=1e-12)
    for g, w in zip((gx, gt, gk), vjp0(u[:1]), strict=True):
        np.testing.assert_allclose(g[:1], w, atol=1e-12)
    ones = (jnp.ones((4, 7)), jnp.ones(4), jnp.ones(4))
    bad = (jnp.ones((4, 7)).at[0].set(0), jnp.ones(4).at[0].set(0), jnp.ones(4).at[0].set(0))
    _, jv = jax.jvp(f, (jnp.asarray(x), temp, k), bad)
    np.testing.assert_array_equal(np.asarray(jv), 0)
    _, jv = jax.jvp(f, (jnp.asarray(x), temp, k), ones)
    assert np.all(np.isfinite(np.asarray(jv)))
    # soft_topk_magnitude: the same for a non-finite value (+inf and NaN)
    xm = np.array(x)
    xm[2, 0] = np.inf
    g = jax.grad(lambda v: jnp.nansum(soft_topk_magnitude(v, 2, regularization=reg) * u))
    gm = np.asarray(g(jnp.asarray(xm)))
    np.testing.assert_array_equal(gm[1:3], 0)
    assert np.all(np.isfinite(gm))


@pytest.mark.slow  # the battery (test_derivatives_all.py) checks x; here temperature and k
def test_derivatives_of_temperature_and_k():
    x = jnp.asarray(RNG.standard_normal((2, 6)))

    def f(t, kk):
        return soft_topk_mask(x, kk, temperature=t, regularization="p=4/3")

    t0, k0 = jnp.asarray([0.7, 1.3]), jnp.asarray([1.5, 2.4])
    check_grads(lambda t: f(t, k0), (t0,), order=1, modes=("fwd", "rev"))
    check_grads(lambda kk: f(t0, kk), (k0,), order=1, modes=("fwd", "rev"))


@pytest.mark.slow
def test_second_derivatives_of_temperature_and_k_and_hessian():
    x = jnp.asarray(RNG.standard_normal((2, 6)))

    def f(t, kk):
        return soft_topk_mask(x, kk, temperature=t, regularization="p=4/3")

    t0, k0 = jnp.asarray([0.7, 1.3]), jnp.asarray([1.5, 2.4])
    check_grads(lambda t: f(t, k0), (t0,), order=2, modes=("fwd", "rev"))
    check_grads(lambda kk: f(t0, kk), (k0,), order=2, modes=("fwd", "rev"))
    h = jax.hessian(lambda x: soft_topk_mask(x, 2, temperature=0.8, regularization="p=3/2")[0])
    assert np.all(np.isfinite(h(x[0])))


@pytest.mark.slow
def test_straight_through_and_magnitude():
    x = jnp.asarray(RNG.standard_normal((3, 8)))
    hard = soft_topk_mask(x, 3, temperature=2.0, regularization="l2", straight_through=True)
    np.testing.assert_array_equal(hard, np.stack([ref.hard_mask(r, 3) for r in np.asarray(x)]))
    g_hard = jax.grad(lambda x: (soft_topk_mask(x, 3, temperature=2.0, regularization="l2",
                                                straight_through=True) * x).sum())(x)  # fmt: skip
    g_soft = jax.grad(lambda x: (soft_topk_mask(x, 3, temperature=2.0, regularization="l2")
                                 * jax.lax.stop_gradient(x)).sum())(x)  # fmt: skip
    np.testing.assert_allclose(g_hard - hard, g_soft, atol=1e-12)
    mag = soft_topk_magnitude(x, 2, temperature=0.3, regularization="p=4/3")
    for i, row in enumerate(np.asarray(x)):
        want, _ = ref.sparse_mask(np.abs(row), 2, 0.3, 3)
        np.testing.assert_allclose(mag[i], row * want, atol=1e-12)
    tiny = soft_topk_magnitude(x, 2, temperature=1e-9)
    np.testing.assert_array_equal(
        tiny, np.asarray(x) * np.stack([ref.hard_mask(np.abs(r), 2) for r in np.asarray(x)])
    )
    check_grads(lambda x: soft_topk_magnitude(x, 3, temperature=0.5), (x,), 1, ("fwd", "rev"))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16], ids=str)
def test_dtypes(dtype):
    x = RNG.standard_normal((4, 16))
    got = soft_topk_mask(jnp.asarray(x, dtype), 3, temperature=0.5, regularization="l2")
    assert got.dtype == dtype and got.shape == x.shape
    np.testing.assert_allclose(np.asarray(got, np.float64).sum(-1), 3, atol=3e-2)
    assert np.sum(np.asarray(got) == 0) > 0


def test_bad_arguments():  # raised at trace time: nothing compiles
    x = jnp.asarray(RNG.standard_normal((4, 16)))
    with pytest.raises(ValueError, match="regularization"):
        soft_topk_mask(x, 2, regularization="p=2")
    with pytest.raises(ValueError, match="epsilon"):
        soft_topk_mask(x, 2, epsilon=0.1, regularization="l2")
    with pytest.raises(ValueError, match="solver"):
        soft_topk_mask(x, 2, solver="sinkhorn", regularization="p=4/3")
    with pytest.raises(ValueError, match="temperature"):
        soft_topk_mask(x, 2, temperature=-1.0, regularization="l2")
    with pytest.raises(ValueError, match="k"):
        soft_topk_magnitude(x, 17)
    with pytest.raises(TypeError, match="x"):
        soft_topk_magnitude(jnp.ones((3, 4), jnp.int32), 2)


@pytest.mark.slow
@pytest.mark.parametrize("reg", list(POWERS))
@pytest.mark.parametrize("n", [2, 33, 300])
def test_sweep_against_reference(reg, n):
    x = RNG.standard_normal((40, n)) * RNG.uniform(0.1, 10, (40, 1))
    x[::5] = np.round(x[::5])  # ties
    k = RNG.uniform(0, n, 40)
    k[::3] = np.round(k[::3])
    tau = np.exp(RNG.uniform(np.log(1e-3), np.log(30.0), 40))
    out = soft_topk_mask_solve(jnp.asarray(x), jnp.asarray(k), temperature=jnp.asarray(tau),
                               regularization=reg)  # fmt: skip
    assert bool(out.converged.all())
    for i in range(40):
        want, _ = ref.sparse_mask(x[i], k[i], tau[i], POWERS[reg])
        got = np.asarray(out.mask[i])
        # values to 1e-12 relative to the conditioning: d(mask)/d(theta) is r / tau
        np.testing.assert_allclose(got, want, atol=1e-12 * max(1, np.abs(x[i]).max() / tau[i]))
        np.testing.assert_array_equal(got == 0, want == 0, err_msg=f"row {i}")
        np.testing.assert_allclose(got.sum(), k[i], atol=1e-11 * max(1, np.abs(x[i]).max()))


@pytest.mark.slow
@pytest.mark.parametrize("reg", list(POWERS))
def test_float32_close_to_float64(reg):
    x = RNG.standard_normal((64, 500))
    got = soft_topk_mask_solve(jnp.asarray(x, jnp.float32), 8, temperature=0.3, regularization=reg)
    want = soft_topk_mask(jnp.asarray(x), 8, temperature=0.3, regularization=reg)
    assert bool(got.converged.all())
    np.testing.assert_allclose(got.mask, want, atol=2e-5)
    np.testing.assert_array_equal(np.asarray(got.mask) == 0, np.asarray(want) == 0)
