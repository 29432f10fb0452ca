"""Packed lists (``segments=``), the learning-to-rank losses and the rax adapters (`softops.ltr`).

References: the float64 NumPy soft ranks of tests/_np_reference.py applied to each list on its
own, and the metrics' formulas written out per list below; rax's own metrics where rax is
installed (an optional dependency).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import softops
from softops import losses, ltr
from tests import _np_reference as ref

RNG = np.random.default_rng(2426)
N = 14
X = RNG.standard_normal((2, N))
IDS = RNG.integers(0, 3, (2, N)).astype(np.int32)
IDS[1, -1] = 7  # a list of a single item, an id that is not contiguous
MASK = RNG.random((2, N)) > 0.2
REL = RNG.integers(0, 4, (2, N)).astype(np.float64)


# ---------------------------------------------------------------------------- NumPy references
def _lists(ids, mask):
    """(index array of the valid items of each list) per list of a row."""
    return [np.flatnonzero((ids == s) & mask) for s in np.unique(ids)]


def _scale(x):
    """The relative strength's unit: sigma * sqrt(12) / m (1 below two items or without spread)."""
    m = len(x)
    sd = np.std(x) if m else 0.0
    return sd * math.sqrt(12) / m if m >= 2 and sd > 0 else 1.0


def _ranks(x, eps, relative=True, regularization="l2"):
    """Descending soft ranks of one list."""
    if len(x) == 0:
        return x
    scale = _scale(x) if relative else 1.0
    return ref.soft_rank(x / scale, eps, regularization, descending=True)


def _metric(metric, x, rel, ids, mask, eps, k=None, gain="exp2"):
    """Mean over a row's lists of the metric at the soft ranks (each list on its own)."""
    vals, lam = [], np.zeros(len(x))
    for idx in _lists(ids, mask):
        if len(idx) == 0:
            continue
        r, g = _ranks(x[idx], eps), rel[idx]
        cut = np.ones_like(r) if k is None else np.clip(k + 1 - r, 0, 1)
        if metric in ("ndcg", "lambda"):
            gg = 2.0**g - 1 if gain == "exp2" else g
            disc = 1 / np.log2(np.arange(2, len(idx) + 2))
            if k is not None:
                disc[k:] = 0
            idcg = np.sum(np.sort(gg)[::-1] * disc)
            terms = gg * cut / np.log2(1 + r) / idcg if idcg > 0 else 0 * r
            lam[idx] = terms
            vals.append(terms.sum())
        elif metric == "mrr":
            vals.append(max([0.0] + list((cut / r)[g > 0])))
        elif metric == "precision":
            vals.append(np.sum(cut[g > 0]) / min(k, len(idx)))
        else:
            vals.append(np.sum(g * r))
    return lam if metric == "lambda" else np.mean(vals)


# ------------------------------------------------------------------------------- segments=
@pytest.mark.parametrize(
    ("op", "regularization", "descending"),
    [
        ("rank", "l2", False),
        pytest.param("rank", "kl", True, marks=pytest.mark.slow),
        pytest.param("sort", "kl", False, marks=pytest.mark.slow),
        pytest.param("sort", "l2", True, marks=pytest.mark.slow),
    ],
)
def test_segments_equal_each_list_alone(op, regularization, descending):
    fn = softops.soft_rank if op == "rank" else softops.soft_sort
    refn = ref.soft_rank if op == "rank" else ref.soft_sort

    def f(x):
        return fn(x, regularization=regularization, regularization_strength=0.7,
                  descending=descending, where=MASK, segments=IDS)  # fmt: skip

    got = np.asarray(f(jnp.asarray(X)))
    for row in range(2):
        for s in np.unique(IDS[row]):
            at = np.flatnonzero(IDS[row] == s)
            valid = MASK[row, at]
            want = refn(X[row, at][valid], 0.7, regularization, descending)
            if op == "rank":
                np.testing.assert_allclose(got[row, at][valid], want, rtol=1e-12)
                assert np.all(got[row, at][~valid] == 0)
            else:  # sorted into the list's positions, valid items first, 0 after them
                np.testing.assert_allclose(got[row, at][: len(want)], want, rtol=1e-12)
                assert np.all(got[row, at][len(want) :] == 0)


@pytest.mark.slow
@pytest.mark.parametrize("op", ["rank", "sort"])
def test_segments_derivatives(op):
    fn = softops.soft_rank if op == "rank" else softops.soft_sort
    f = jax.jit(lambda x: fn(x, regularization="kl", where=MASK, segments=IDS))
    check_grads(f, (jnp.asarray(X),), order=2, modes=("fwd", "rev"), eps=1e-6)


def test_segments_bad_input():
    x = jnp.zeros((2, 3))
    with pytest.raises(TypeError, match="segments"):
        softops.soft_rank(x, segments=jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="segments"):
        softops.soft_sort(x, segments=jnp.zeros((3,), jnp.int32))


# ------------------------------------------------------------------------------- the metrics
def _call(metric, x, **kw):
    rel = jnp.asarray(REL)
    if metric == "ndcg":
        return losses.soft_ndcg(x, rel, k=4, **kw)
    if metric == "lambda":
        return losses.lambda_weights(x, rel, k=4, **kw)
    if metric == "mrr":
        return losses.soft_mrr(x, rel, k=4, **kw)
    if metric == "precision":
        return losses.soft_precision(x, rel, k=3, **kw)
    return losses.rank_linear_loss(x, rel, **kw)


METRICS = ["ndcg", "lambda", "mrr", "precision", "rank_linear"]


@pytest.mark.parametrize(
    "metric", ["ndcg", *(pytest.param(m, marks=pytest.mark.slow) for m in METRICS[1:])]
)
@pytest.mark.parametrize("eps", [0.3, pytest.param(1e-6, marks=pytest.mark.slow)])
def test_metrics_match_reference(metric, eps):
    k = 3 if metric == "precision" else 4
    kw = dict(regularization_strength=eps, where=MASK, segments=IDS)
    got = np.asarray(_call(metric, jnp.asarray(X), **kw))
    for row in range(2):
        want = _metric(metric, X[row], REL[row], IDS[row], MASK[row], eps, None if
                       metric == "rank_linear" else k)  # fmt: skip
        np.testing.assert_allclose(got[row], want, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_metrics_one_list_and_hard_limits():
    # one list per row, no mask: the hard limits are the textbook metrics of the order
    x, rel = X[0], REL[0]
    order = np.argsort(-x)
    r = np.empty(N)
    r[order] = np.arange(1, N + 1)
    tiny = dict(regularization_strength=1e-6)
    mrr = losses.soft_mrr(jnp.asarray(x), jnp.asarray(rel), **tiny)
    np.testing.assert_allclose(mrr, 1 / r[rel > 0].min(), rtol=1e-9)
    prec = losses.soft_precision(jnp.asarray(x), jnp.asarray(rel), k=5, **tiny)
    np.testing.assert_allclose(prec, np.sum(rel[order[:5]] > 0) / 5, rtol=1e-9)
    lin = losses.rank_linear_loss(jnp.asarray(x), jnp.asarray(rel - 1.5), **tiny)
    np.testing.assert_allclose(lin, np.sum((rel - 1.5) * r), rtol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("metric", METRICS)
def test_metrics_derivatives(metric):
    f = jax.jit(  # segments, where, relative strength: each metric's fast case is in the battery
        lambda x: _call(metric, x, regularization_strength=0.5, where=MASK, segments=IDS)
    )
    check_grads(f, (jnp.asarray(X),), order=1, modes=("fwd", "rev"), eps=1e-6)


@pytest.mark.slow
def test_ndcg_default_trains_at_k5():
    # issue 21: an absolute strength of 1 pooled N(0, 1) scores of 16 items into ranks near 8.5,
    # so the cutoff at k = 5 was 0 everywhere: value and gradient exactly 0.
    x = jnp.asarray(np.random.default_rng(5).standard_normal(16))
    rel = jnp.asarray(np.random.default_rng(6).integers(0, 4, 16).astype(np.float64))
    g = jax.grad(lambda s: losses.soft_ndcg(s, rel, k=5))(x)
    assert losses.soft_ndcg(x, rel, k=5) > 0 and np.abs(np.asarray(g)).max() > 1e-3
    old = jax.grad(lambda s: losses.soft_ndcg(s, rel, k=5, relative=False))(x)
    assert np.all(np.asarray(old) == 0)


# ----------------------------------------------------------------------- Plackett-Luce samples
@pytest.mark.slow
def test_plackett_luce_rank_is_the_gumbel_ranking():
    key = jax.random.key(3)
    got = losses.plackett_luce_rank(key, jnp.asarray(X), regularization_strength=1e-6,
                                    relative=False, segments=IDS)  # fmt: skip
    z = X + np.asarray(jax.random.gumbel(key, X.shape, jnp.float64))
    for row in range(2):
        for s in np.unique(IDS[row]):
            at = np.flatnonzero(IDS[row] == s)
            want = np.empty(len(at))
            want[np.argsort(-z[row, at])] = np.arange(1, len(at) + 1)
            np.testing.assert_allclose(np.asarray(got)[row, at], want, rtol=1e-9)


@pytest.mark.slow
def test_plackett_luce_first_item_law():
    # P(item i first) = softmax(s)_i: 4000 samples, 3 items (binomial sd <= 0.008)
    s = jnp.asarray([1.0, 0.0, -0.5])
    r = losses.plackett_luce_rank(jax.random.key(0), s, num_samples=4000,
                                  regularization_strength=1e-6, relative=False)  # fmt: skip
    freq = np.mean(np.asarray(r) < 1.5, axis=0)
    np.testing.assert_allclose(freq, np.asarray(jax.nn.softmax(s)), atol=0.035)


# ------------------------------------------------------------------------- the rax adapters
def _np_cutoff(a, n, temperature):
    """The soft top-n of one list by bisection on the threshold (sum of sigmoids = n)."""
    if len(a) <= n:
        return np.ones_like(a)
    lo, hi = a.min() - 50 * temperature, a.max() + 50 * temperature
    for _ in range(200):
        tau = (lo + hi) / 2
        lo, hi = (tau, hi) if np.sum(1 / (1 + np.exp(-(a - tau) / temperature))) > n else (lo, tau)
    return 1 / (1 + np.exp(-(a - (lo + hi) / 2) / temperature))


def test_cutoff_fn_reference_and_derivative():
    def f(a):
        return ltr.cutoff_fn(a, 2, segments=IDS, temperature=0.5)

    got = np.asarray(f(jnp.asarray(X)))
    for row in range(2):
        for s in np.unique(IDS[row]):
            at = np.flatnonzero(IDS[row] == s)
            np.testing.assert_allclose(got[row, at], _np_cutoff(X[row, at], 2, 0.5), atol=1e-10)
            assert abs(got[row, at].sum() - min(2, len(at))) < 1e-9
    assert np.all(np.asarray(ltr.cutoff_fn(jnp.asarray(X), None)) == 1)


@pytest.mark.slow
def test_adapters_derivatives():
    cut = jax.jit(lambda a: ltr.cutoff_fn(a, 2, segments=IDS, temperature=0.5))
    check_grads(cut, (jnp.asarray(X),), order=1, modes=("fwd", "rev"), eps=1e-6)
    rank = jax.jit(lambda s: ltr.rank_fn(s, segments=IDS, regularization_strength=0.4))
    check_grads(rank, (jnp.asarray(X),), order=2, modes=("fwd", "rev"), eps=1e-6)


@pytest.mark.slow
def test_rank_fn_reference_and_masking():
    x = np.array(X)
    x[0, 0] = -np.inf  # rax masks by -inf scores
    got = np.asarray(ltr.rank_fn(jnp.asarray(x), where=MASK, segments=IDS,
                                 regularization_strength=0.4))  # fmt: skip
    for row in range(2):
        valid = MASK[row] & np.isfinite(x[row])
        for idx in _lists(IDS[row], valid):
            np.testing.assert_allclose(got[row, idx], _ranks(x[row, idx], 0.4), rtol=1e-12)
        assert np.all(np.isinf(got[row, ~valid]))


@pytest.mark.slow
def test_rax_metrics_with_the_adapters():
    rax = pytest.importorskip("rax")
    # rax mixes float32 constants into float64 inputs: its code needs standard promotion
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        _rax_checks(rax)


def _rax_checks(rax):
    x, rel = jnp.asarray(X), jnp.asarray(REL)
    tiny_rank = lambda s, **kw: ltr.rank_fn(s, regularization_strength=1e-7, **kw)  # noqa: E731
    tiny_cut = lambda a, n, **kw: ltr.cutoff_fn(a, n, temperature=1e-4, **kw)  # noqa: E731
    for metric in (rax.ndcg_metric, rax.mrr_metric, rax.precision_metric):
        for kw in ({}, {"where": jnp.asarray(MASK)}, {"segments": jnp.asarray(IDS)}):
            hard = metric(x, rel, topn=3, reduce_fn=None, **kw)
            soft = metric(x, rel, topn=3, reduce_fn=None, rank_fn=tiny_rank, cutoff_fn=tiny_cut,
                          **kw)  # fmt: skip
            np.testing.assert_allclose(soft, hard, atol=1e-6)
    g = jax.grad(lambda s: rax.ndcg_metric(s, rel, topn=3, rank_fn=ltr.rank_fn,
                                           cutoff_fn=ltr.cutoff_fn, segments=IDS))(x)  # fmt: skip
    assert np.all(np.isfinite(np.asarray(g))) and np.abs(np.asarray(g)).max() > 0
