"""One derivative battery over the whole public API, generated from ``__all__``.

Every public function of ``softops`` and ``softops.losses`` is either a differentiable op with
cases below (each a set of options: regularization, direction, solver, strength
parameterization, ``where=``, per-row ``k``, the argument differentiated) or listed in
``NOT_OPS`` with the reason it has no derivative of its own to check. A new public function in
neither place fails :func:`test_every_public_function_is_in_the_battery`.

Per case, in float64:

- ``check_grads`` in forward and reverse mode against central finite differences of the value
  the op returns (order 2 where the op is twice differentiable at the point);
- JVP/VJP consistency, ``<u, J v> == <J^T u, v>``;
- ``jit`` and ``vmap`` (over the batch rows) give the eager values;
- NaN-row isolation: a NaN in row 0 of the differentiated argument leaves row 1's value and
  gradient unchanged (row 0 gets NaN values and exactly 0 derivatives, the documented policy).

The fast pass runs each op's first case at order 1; the slow pass runs every case, at order 2
where smooth. Straight-through options are excluded: their derivative is by design not the
derivative of the value (``tests/test_straight_through.py`` checks them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import softops
from softops import losses, routing
from tests.helpers import NOT_OPS

RNG = np.random.default_rng(20261207)
N = 6
X = RNG.standard_normal((2, N))  # generic: no ties, no kinks of max/PAV at the point
TARGETS = RNG.standard_normal((2, N))
WEIGHTS = RNG.uniform(0.5, 2.0, (2, N))
MASK = np.array([[True, True, False, True, True, True], [True, False, True, True, True, False]])
LABELS = np.array([2, 4])
LABELS_WHERE = np.array([3, 4])  # on classes that MASK keeps
RELEVANCE = np.array([[0.0, 1.0, 3.0, 0.0, 2.0, 1.0], [4.0, 0.0, 1.0, 2.0, 0.0, 3.0]])
ANCHORS = np.linspace(-1.0, 1.0, 4)
SEGMENTS = np.array([[0, 1, 0, 1, 1, 0], [3, 3, 1, 3, 1, 1]], np.int32)  # packed lists
KEY = jax.random.key(7)
TOP2 = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])


class Case(NamedTuple):
    """``fn(x, *aux)``: ``x`` [2, ...] differentiated; ``aux`` arrays with the same 2 rows."""

    fn: Callable
    x: np.ndarray = X
    aux: tuple = ()
    order: int = 2  # 1 where the op is only once differentiable (top-k with max M, PAV kinks)


def _w(fn):
    return Case(lambda x, w: fn(x, w), X, (WEIGHTS,))


def _per_row(fn):
    """``fn`` of one row, mapped over the rows of a batch (for arguments shared by a batch)."""
    return lambda x, *aux: jax.vmap(fn)(x, *aux) if x.ndim == 2 else fn(x, *aux)


def _cost(x):
    return (x[..., :, None] - jnp.asarray(ANCHORS).reshape((1,) * x.ndim + (-1,))) ** 2


COST = np.asarray(_cost(jnp.asarray(X)))


def _scaled_cost(x):
    # (x_i - y_j)^2 less the row constant x_i^2 (the same plan), linear in x: the NaN-row test
    # puts NaN in x, and a nonlinear cost map's own derivative at NaN (2 (x - y)) times the op's
    # 0 cotangent would be NaN outside the op.
    y = jnp.asarray(ANCHORS).reshape((1,) * x.ndim + (-1,))
    return y * y - 2 * x[..., :, None] * y


def _positive(x):
    # Positive on X (|x| < 4), linear: constant partials (see _scaled_cost).
    return 1.5 + 0.25 * x


def _marginal(x):
    # Uniform mass 1 moved linearly by x (constant partials, see _scaled_cost), all positive.
    n = x.shape[-1]
    return 1 / n + 0.02 * (x - jnp.mean(x, axis=-1, keepdims=True))


def _sinkhorn_plan(cost, **kw):
    return softops.sinkhorn(cost, epsilon=0.5, tol=1e-12, **kw).plan


# ----------------------------------------------------------------------------- the cases

CASES: dict[str, dict[str, Case]] = {
    "isotonic_l2": {
        "s": Case(lambda x, w: softops.isotonic_l2(x, w), X, (TARGETS,)),
        "w": Case(lambda x, s: softops.isotonic_l2(s, x), X, (TARGETS,)),
        "parallel": Case(lambda x, w: softops.isotonic_l2(x, w, method="parallel"), X, (TARGETS,)),
    },
    "isotonic_kl": {
        "s": Case(lambda x, w: softops.isotonic_kl(x, w), X, (TARGETS,)),
        "w": Case(lambda x, s: softops.isotonic_kl(s, x), X, (TARGETS,)),
        "parallel": Case(lambda x, w: softops.isotonic_kl(x, w, method="parallel"), X, (TARGETS,)),
    },
    "isotonic_regression": {
        "y": Case(lambda x: softops.isotonic_regression(x)),
        "weights": Case(
            lambda x, y: softops.isotonic_regression(y, weights=_positive(x)), X, (TARGETS,)
        ),
        "decreasing": _w(lambda x, w: softops.isotonic_regression(x, weights=w, increasing=False)),
    },
    "projection_permutahedron": {
        "l2": Case(lambda x: softops.projection_permutahedron(x)),
        "kl": Case(lambda x: softops.projection_permutahedron(x, regularization="kl")),
        "w": Case(lambda x, z: softops.projection_permutahedron(z, x), X, (TARGETS,)),
        "kl_w": Case(
            lambda x, z: softops.projection_permutahedron(z, _positive(x), regularization="kl"),
            X,
            (TARGETS,),
        ),
        "where": Case(lambda x, m: softops.projection_permutahedron(x, where=m), X, (MASK,)),
        "p43_topk": Case(  # Sander et al.'s sparse top-2 mask: exact zeros at this point
            lambda x: softops.projection_permutahedron(2 * x, TOP2, regularization="p=4/3")
        ),
        "p32_w": Case(
            lambda x, z: softops.projection_permutahedron(z, x, regularization="p=3/2"),
            X,
            (TARGETS,),
        ),
    },
    "soft_rank": {
        "l2": Case(lambda x: softops.soft_rank(x, regularization_strength=0.5)),
        "kl": Case(lambda x: softops.soft_rank(x, regularization="kl")),
        "descending": Case(lambda x: softops.soft_rank(x, descending=True)),
        "per_row_strength": Case(
            lambda x: softops.soft_rank(x, regularization_strength=jnp.exp(x[..., 0]))
        ),
        "where": Case(lambda x, m: softops.soft_rank(x, regularization="kl", where=m), X, (MASK,)),
        "parallel": Case(lambda x: softops.soft_rank(x, method="parallel")),
        "segments": Case(
            lambda x, m, s: softops.soft_rank(x, where=m, segments=s), X, (MASK, SEGMENTS)
        ),
        "p43": Case(lambda x: softops.soft_rank(x, regularization="p=4/3")),
        "p32_strength": Case(  # the strength differentiated too
            lambda x: softops.soft_rank(
                x, regularization="p=3/2", regularization_strength=jnp.exp(x[..., 0])
            )
        ),
        "p43_segments": Case(
            lambda x, m, s: softops.soft_rank(x, regularization="p=4/3", where=m, segments=s),
            X,
            (MASK, SEGMENTS),
        ),
    },
    "soft_sort": {
        "l2": Case(lambda x: softops.soft_sort(x)),
        "kl": Case(
            lambda x: softops.soft_sort(x, regularization="kl", regularization_strength=2.0)
        ),
        "descending": Case(lambda x: softops.soft_sort(x, descending=True)),
        "where": Case(lambda x, m: softops.soft_sort(x, where=m), X, (MASK,)),
        "parallel_kl": Case(lambda x: softops.soft_sort(x, regularization="kl", method="parallel")),
        "segments": Case(
            lambda x, s: softops.soft_sort(x, regularization="kl", segments=s), X, (SEGMENTS,)
        ),
        "p43_desc": Case(
            lambda x: softops.soft_sort(
                x, regularization="p=4/3", regularization_strength=0.3, descending=True
            )
        ),
        "p32_where": Case(
            lambda x, m: softops.soft_sort(x, regularization="p=3/2", where=m), X, (MASK,)
        ),
    },
    "soft_quantize": {
        "levels": Case(lambda x: softops.soft_quantize(x, 3)),
        "where": Case(lambda x, m: softops.soft_quantize(x, 2, where=m), X, (MASK,)),
    },
    "soft_quantile_normalization": {
        "x": Case(lambda x: softops.soft_quantile_normalization(x, jnp.asarray(TARGETS[0]))),
        "targets": Case(  # targets are shared by a batch: one problem per row here
            _per_row(lambda x, s: softops.soft_quantile_normalization(s, x)), X, (TARGETS,)
        ),
    },
    "soft_topk_mask": {
        "epsilon": Case(lambda x: softops.soft_topk_mask(x, 3), order=1),
        "temperature": Case(lambda x: softops.soft_topk_mask(x, 2, temperature=0.5)),
        "smallest_where": Case(
            lambda x, m: softops.soft_topk_mask(x, 2, largest=False, where=m), X, (MASK,), order=1
        ),
        "float_k": Case(
            lambda x: softops.soft_topk_mask(x[..., 1:], 1.0 + jnp.exp(x[..., 0]), temperature=1.0)
        ),
        "sinkhorn": Case(lambda x: softops.soft_topk_mask(x, 2, solver="sinkhorn"), order=1),
        "l2": Case(lambda x: softops.soft_topk_mask(x, 2, temperature=0.7, regularization="l2")),
        "p=3/2_where": Case(
            lambda x, m: softops.soft_topk_mask(
                x, 2, temperature=0.9, where=m, regularization="p=3/2"
            ),
            X,
            (MASK,),
        ),
        "p=4/3_smallest_float_k": Case(
            lambda x: softops.soft_topk_mask(
                x[..., 1:],
                1.0 + jnp.exp(x[..., 0]),
                largest=False,
                temperature=0.8,
                regularization="p=4/3",
            )
        ),
    },
    "soft_topk_magnitude": {
        "l2": Case(lambda x: softops.soft_topk_magnitude(x, 3, temperature=0.4)),
        "p=4/3_where": Case(
            lambda x, m: softops.soft_topk_magnitude(
                x, 2, temperature=0.6, where=m, regularization="p=4/3"
            ),
            X,
            (MASK,),
        ),
    },
    "token_choice": {  # each row its own group of one token
        "combine": Case(
            lambda x: routing.token_choice(x[..., None, :], 2, temperature=0.8).combine[..., 0, :]
        ),
        "gates_p=4/3": Case(
            lambda x: routing.token_choice(
                x[..., None, :], 2, temperature=0.8, regularization="p=4/3"
            ).gates[..., 0, :]
        ),
    },
    "expert_choice": {  # each row a group of 3 tokens and 2 experts
        "combine": Case(
            lambda x: routing.expert_choice(
                x.reshape(x.shape[:-1] + (3, 2)), 2, temperature=0.8
            ).combine.reshape(x.shape)
        ),
    },
    "load_balancing_loss": {
        "probabilities": Case(
            lambda x: routing.load_balancing_loss(
                x.reshape(x.shape[:-1] + (3, 2)), jnp.eye(2)[jnp.array([0, 1, 1])]
            )
        ),
    },
    "router_z_loss": {
        "scores": Case(lambda x: routing.router_z_loss(x.reshape(x.shape[:-1] + (3, 2)))),
    },
    "soft_topk_mask_solve": {
        "epsilon": Case(lambda x: softops.soft_topk_mask_solve(x, 3).mask, order=1),
    },
    "soft_topk": {
        "values": Case(lambda x: softops.soft_topk(x, 2)[0], order=1),
        "assignment": Case(lambda x: softops.soft_topk(x, 3)[1], order=1),
        "temperature": Case(lambda x: softops.soft_topk(x, 2, temperature=0.5)[0]),
        "where": Case(lambda x, m: softops.soft_topk(x, 2, where=m)[1], X, (MASK,), order=1),
        "k_equals_n": Case(lambda x: softops.soft_topk(x, N)[0], order=1),
        "sinkhorn": Case(
            lambda x: softops.soft_topk(x, 2, solver="sinkhorn", tol=1e-10)[0], order=1
        ),
        "unrolled": Case(
            lambda x: softops.soft_topk(
                x, 2, solver="sinkhorn", differentiation="unrolled", max_iter=200
            )[0],
            order=1,
        ),
    },
    "soft_topk_solve": {
        "values": Case(lambda x: softops.soft_topk_solve(x, 2).values, order=1),
    },
    "sinkhorn": {
        "cost": Case(lambda x: _sinkhorn_plan(_scaled_cost(x))),
        "a": Case(
            lambda x, c: _sinkhorn_plan(c, a=_marginal(x), b=jnp.full(x.shape[:-1] + (4,), 0.25)),
            X,
            (COST,),
        ),
        "b": Case(lambda x, c: _sinkhorn_plan(c, b=_marginal(x[..., :4])), X, (COST,)),
    },
    "soft_permutation": {
        "x": Case(lambda x: softops.soft_permutation(x, temperature=0.5, tol=1e-12)),
    },
    "sort_with": {
        "x": Case(lambda x, c: softops.sort_with(x, c, tol=1e-12), X, (TARGETS,)),
        "criterion": Case(lambda x, v: softops.sort_with(v, x, k=3, tol=1e-12), X, (TARGETS,)),
    },
    "spearman_correlation": {
        "predictions": Case(lambda x, t: losses.spearman_correlation(x, t), X, (TARGETS,)),
    },
    "spearman_loss": {
        "l2": Case(lambda x, t: losses.spearman_loss(x, t), X, (TARGETS,)),
        "kl_where": Case(
            lambda x, t, m: losses.spearman_loss(x, t, regularization="kl", where=m),
            X,
            (TARGETS, MASK),
        ),
    },
    "soft_ndcg": {
        "defaults": Case(lambda x, r: losses.soft_ndcg(x, r), X, (RELEVANCE,)),
        "k_linear_where": Case(
            lambda x, r, m: losses.soft_ndcg(x, r, k=3, gain="linear", where=m),
            X,
            (RELEVANCE, MASK),
        ),
        "segments_absolute": Case(
            lambda x, r, s: losses.soft_ndcg(x, r, k=2, relative=False, segments=s),
            X,
            (RELEVANCE, SEGMENTS),
        ),
    },
    "soft_mrr": {
        "defaults": Case(lambda x, r: losses.soft_mrr(x, r), X, (RELEVANCE,)),
        "k_where_segments": Case(
            lambda x, r, m, s: losses.soft_mrr(x, r, k=2, where=m, segments=s),
            X,
            (RELEVANCE, MASK, SEGMENTS),
        ),
    },
    "soft_precision": {
        "k3": Case(lambda x, r: losses.soft_precision(x, r, k=3), X, (RELEVANCE,)),
        "kl_where_segments": Case(
            lambda x, r, m, s: losses.soft_precision(
                x, r, k=2, regularization="kl", where=m, segments=s
            ),
            X,
            (RELEVANCE, MASK, SEGMENTS),
        ),
    },
    "rank_linear_loss": {
        "defaults": Case(lambda x, w: losses.rank_linear_loss(x, w), X, (TARGETS,)),
        "where_segments": Case(
            lambda x, w, m, s: losses.rank_linear_loss(x, w, where=m, segments=s),
            X,
            (TARGETS, MASK, SEGMENTS),
        ),
    },
    "lambda_weights": {
        "defaults": Case(lambda x, r: losses.lambda_weights(x, r), X, (RELEVANCE,)),
        "k_where_segments": Case(
            lambda x, r, m, s: losses.lambda_weights(x, r, k=2, where=m, segments=s),
            X,
            (RELEVANCE, MASK, SEGMENTS),
        ),
    },
    "plackett_luce_rank": {
        # one key per call: the noise of a batch is not that of its rows drawn one by one,
        # so each row is sampled with the same key (the batched path: tests/test_ltr.py)
        "defaults": Case(_per_row(lambda x: losses.plackett_luce_rank(KEY, x))),
        "where_segments": Case(
            _per_row(
                lambda x, m, s: losses.plackett_luce_rank(
                    KEY, x, regularization_strength=0.5, where=m, segments=s
                )
            ),
            X,
            (MASK, SEGMENTS),
        ),
    },
    "soft_topk_rank_loss": {
        "defaults": Case(lambda x, y: losses.soft_topk_rank_loss(3 * x, y), X, (LABELS,)),
        "kl_k2": Case(
            lambda x, y: losses.soft_topk_rank_loss(x, y, k=2, regularization="kl"), X, (LABELS,)
        ),
    },
    "soft_topk_mask_loss": {
        "defaults": Case(lambda x, y: losses.soft_topk_mask_loss(x, y), X, (LABELS,), order=1),
        "temperature_where": Case(
            lambda x, y, m: losses.soft_topk_mask_loss(x, y, k=2, temperature=0.5, where=m),
            X,
            (LABELS_WHERE, MASK),
        ),
    },
    "soft_quantile": {
        "q": Case(lambda x: losses.soft_quantile(x, jnp.asarray([0.25, 0.6]))),
        "kl_where": Case(
            lambda x, m: losses.soft_quantile(x, 0.5, regularization="kl", where=m), X, (MASK,)
        ),
    },
    "soft_median": {
        "defaults": Case(lambda x: losses.soft_median(x)),
    },
    "soft_lts_loss": {
        "defaults": Case(lambda x: losses.soft_lts_loss(x)),
        "where": Case(lambda x, m: losses.soft_lts_loss(x, trim=0.4, where=m), X, (MASK,)),
    },
}


# Ops whose every case runs in the slow pass: their eager check_grads alone cost 5-30 s of CPU
# (the fast pass covers their values: tests/test_sparse_topk.py, tests/test_routing.py).
SLOW_ONLY = {"soft_topk_magnitude", *routing.__all__}


def _params():
    """Every (op, option); an op's first option runs in the fast pass, the others in the slow."""
    out = []
    for name, cases in CASES.items():
        for i, option in enumerate(cases):
            marks = [pytest.mark.slow] if i > 0 or name in SLOW_ONLY else []
            out.append(pytest.param(name, option, id=f"{name}-{option}", marks=marks))
    return out


def _public_names() -> set[str]:
    return set(softops.__all__) | set(losses.__all__) | set(routing.__all__)


def test_every_public_function_is_in_the_battery():
    covered = set(CASES) | set(NOT_OPS)
    assert _public_names() == covered, (
        f"not in the battery: {sorted(_public_names() - covered)}; "
        f"no longer public: {sorted(covered - _public_names())}"
    )


def _row(case: Case, i: int):
    return (case.x[i], *(a[i] for a in case.aux))


def _closure(case: Case, aux) -> Callable:
    return lambda x: case.fn(x, *(jnp.asarray(a) for a in aux))


@pytest.mark.parametrize(("name", "option"), _params())
def test_check_grads_fwd_and_rev(name, option):
    case = CASES[name][option]
    f = _closure(case, case.aux)
    x = jnp.asarray(case.x)
    check_grads(f, (x,), order=1, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5, eps=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "option"), _params())
def test_check_grads_second_order(name, option):
    case = CASES[name][option]
    if case.order < 2:
        pytest.skip("once differentiable at this point (documented)")
    f = _closure(case, case.aux)
    check_grads(f, (jnp.asarray(case.x),), order=2, modes=("fwd", "rev"), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("name", "option"), _params())
def test_jvp_vjp_jit_vmap_agree(name, option):
    case = CASES[name][option]
    f = _closure(case, case.aux)
    x = jnp.asarray(case.x)
    rng = np.random.default_rng(1)
    v = jnp.asarray(rng.standard_normal(x.shape))
    y, jv = jax.jvp(f, (x,), (v,))
    u = jnp.asarray(rng.standard_normal(np.shape(y)))
    (ju,) = jax.vjp(f, x)[1](u)
    np.testing.assert_allclose(jnp.vdot(u, jv), jnp.vdot(ju, v), rtol=1e-9, atol=1e-9)
    yj, jvj = jax.jit(lambda x, v: jax.jvp(f, (x,), (v,)))(x, v)
    np.testing.assert_allclose(yj, y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jvj, jv, rtol=1e-9, atol=1e-9)
    rows = jax.vmap(lambda *r: case.fn(*r))(x, *(jnp.asarray(a) for a in case.aux))
    np.testing.assert_allclose(rows, y, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("name", "option"), _params())
def test_nan_row_leaves_other_rows_alone(name, option):
    case = CASES[name][option]
    f = _closure(case, case.aux)
    if name == "sinkhorn":  # known marginals with a NaN raise; traced ones give the NaN row
        f = jax.jit(f)
    x = np.array(case.x)
    x[0, 1] = np.nan
    x = jnp.asarray(x)
    u = jnp.asarray(np.random.default_rng(2).standard_normal(np.shape(f(x))))
    out, vjp = jax.vjp(f, x)
    (grad,) = vjp(u)
    one = _closure(case, tuple(a[1:] for a in case.aux))
    want, vjp1 = jax.vjp(one, jnp.asarray(case.x[1:]))
    (want_grad,) = vjp1(u[1:])
    # The bad row: NaN in value, except exact 0s at masked items (where=False); exactly 0
    # derivative in both modes (cut from the graph: a loss that masks it trains on the rest).
    bad_out, bad_grad = np.asarray(out[0]), np.asarray(grad[0])
    assert np.any(np.isnan(bad_out)) and np.all(np.isnan(bad_out) | (bad_out == 0)), bad_out
    assert np.all(bad_grad == 0), bad_grad
    _, tangent = jax.jvp(f, (x,), (jnp.ones_like(x),))
    assert np.all(np.asarray(tangent[0]) == 0), tangent[0]
    np.testing.assert_allclose(out[1:], want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad[1:], want_grad, rtol=1e-10, atol=1e-10)
