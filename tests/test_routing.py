"""softops.routing: token-choice and expert-choice routing with sparse gates, auxiliary losses.

Derivatives (check_grads, JVP/VJP, NaN isolation) are in ``test_derivatives_all.py``; batch
sharding in ``tests/_sharding_check.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from softops import routing
from tests import _sparse_reference as ref

RNG = np.random.default_rng(7)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.slow
def test_token_choice_dispatch_capacity_and_combine():
    scores = RNG.standard_normal((2, 12, 5))  # 2 groups of 12 tokens over 5 experts
    out = routing.token_choice(jnp.asarray(scores), 2, capacity=4, slots=3, temperature=0.7)
    gates = np.asarray(out.gates)
    for g in range(2):
        for t in range(12):
            want, _ = ref.sparse_mask(scores[g, t], 2, 0.7, 1)
            np.testing.assert_allclose(gates[g, t], want, atol=1e-12)
    index, pos, kept = (np.asarray(a) for a in (out.expert_index, out.position, out.kept))
    chosen = np.take_along_axis(gates, index, -1)
    assert np.all(np.diff(chosen, axis=-1) <= 0)  # by decreasing gate
    assert np.array_equal(kept, (chosen > 0) & (pos < 4))
    for g in range(2):
        # the positions of each expert's assignments: 0, 1, ... in (slot, token) order
        for e in range(5):
            order = [(j, t) for j in range(3) for t in range(12) if index[g, t, j] == e]
            order = [(j, t) for j, t in order if chosen[g, t, j] > 0]
            got = [pos[g, t, j] for j, t in order]
            assert got == [min(i, 4) for i in range(len(order))]
        dispatched = np.zeros((12, 5), bool)
        for t in range(12):
            dispatched[t, index[g, t][kept[g, t]]] = True
        nonzero = gates[g] > 0
        assert int(out.dropped[g]) == nonzero.sum() - dispatched.sum()
        np.testing.assert_allclose(out.load[g], dispatched.mean(0))
        weight = _softmax(scores[g]) * gates[g]
        want = np.where(dispatched, weight / weight.sum(-1, keepdims=True), 0)
        np.testing.assert_allclose(out.combine[g], want, atol=1e-12)
        np.testing.assert_allclose(out.importance[g], _softmax(scores[g]).mean(0), atol=1e-12)


@pytest.mark.slow
def test_hard_limits_are_standard_routing():
    scores = RNG.standard_normal((16, 6))
    tc = routing.token_choice(jnp.asarray(scores), 2, temperature=1e-9)
    top = np.argsort(-scores, -1)[:, :2]
    np.testing.assert_array_equal(np.sort(np.asarray(tc.expert_index)[:, :2], -1), np.sort(top))
    p = _softmax(scores)
    want = np.zeros_like(p)
    np.put_along_axis(want, top, np.take_along_axis(p, top, -1), -1)
    np.testing.assert_allclose(tc.combine, want / want.sum(-1, keepdims=True), atol=1e-12)
    ec = routing.expert_choice(jnp.asarray(scores), 3, temperature=1e-9)
    top_tokens = np.sort(np.argsort(-scores, 0)[:3].T, -1)  # [E, 3]
    np.testing.assert_array_equal(np.sort(np.asarray(ec.token_index), -1), top_tokens)
    np.testing.assert_allclose(np.asarray(ec.gates).sum(0), 3.0)
    assert int(ec.dropped) == 0 and bool(ec.kept.all())


def test_losses_and_dtypes_and_errors():
    z = jnp.zeros((4, 3))
    np.testing.assert_allclose(routing.load_balancing_loss(z, jnp.ones((4, 3))), 1.0)
    onto_first = jnp.zeros((4, 3)).at[:, 0].set(1.0)
    scores = jnp.asarray([[5.0, 0.0, 0.0]] * 4)
    p0 = float(jax.nn.softmax(scores[0])[0])
    np.testing.assert_allclose(routing.load_balancing_loss(scores, onto_first), 3 * p0)
    np.testing.assert_allclose(routing.router_z_loss(z), np.log(3.0) ** 2)
    with pytest.raises(ValueError, match="scores"):
        routing.token_choice(jnp.zeros(4), 1)
    with pytest.raises(ValueError, match="k"):
        routing.token_choice(jnp.zeros((3, 4)), 5)
    with pytest.raises(ValueError, match="capacity"):
        routing.expert_choice(jnp.zeros((3, 4)), 4)
    with pytest.raises(TypeError, match="slots"):
        routing.token_choice(jnp.zeros((3, 4)), 1, slots=1.5)
    with pytest.raises(ValueError, match="regularization"):
        routing.expert_choice(jnp.zeros((3, 4)), 1, regularization="softmax")


@pytest.mark.slow
def test_bfloat16():
    s16 = jnp.asarray(RNG.standard_normal((3, 8, 4)), jnp.bfloat16)
    out = routing.token_choice(s16, 1, capacity=2)
    assert out.gates.dtype == jnp.bfloat16 and out.combine.dtype == jnp.bfloat16
    assert out.position.dtype == jnp.int32 and out.dropped.shape == (3,)
    want = routing.token_choice(s16.astype(jnp.float32), 1, capacity=2)
    np.testing.assert_allclose(np.asarray(out.gates, np.float32), want.gates, atol=1e-2)
    ec = routing.expert_choice(s16, 2)
    assert ec.combine.dtype == jnp.bfloat16


@pytest.mark.slow
def test_jit_vmap_grad_jvp_over_groups():
    scores = jnp.asarray(RNG.standard_normal((4, 10, 6)))

    def f(s):
        out = routing.token_choice(s, 2, capacity=3, regularization="p=4/3", temperature=0.5)
        return out.combine, out.position

    c, p = f(scores)
    cj, pj = jax.jit(f)(scores)
    cv, pv = jax.vmap(f)(scores)
    np.testing.assert_allclose(cj, c, atol=1e-12)
    np.testing.assert_allclose(cv, c, atol=1e-12)
    np.testing.assert_array_equal(pj, p)
    np.testing.assert_array_equal(pv, p)
    u = jnp.asarray(RNG.standard_normal(c.shape))
    v = jnp.asarray(RNG.standard_normal(scores.shape))
    g = jax.grad(lambda s: jnp.sum(f(s)[0] * u))(scores)
    _, jv = jax.jvp(lambda s: f(s)[0], (scores,), (v,))
    np.testing.assert_allclose(jnp.vdot(g, v), jnp.vdot(u, jv), rtol=1e-10)
    ec = jax.jit(lambda s: routing.expert_choice(s, 3, temperature=0.5).combine)
    np.testing.assert_allclose(ec(scores), jax.vmap(ec)(scores), atol=1e-12)
