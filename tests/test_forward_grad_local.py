"""Tests for activity-perturbed forward gradients and local losses (softops.forward_grad)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from softops.forward_grad import (
    activity_value_and_grad,
    local_value_and_grad,
    no_tap,
)

# Issue 11/13 batteries: run by CI in its slow pass (the README command stays under 5 min).
pytestmark = pytest.mark.slow

Z = 5.0  # two-sided z-score of every statistical bound below (CLT; ~1e-6 per coordinate).
N = 4000  # draws for the statistical tests


def dense(p, x):
    return x @ p["w"] + p["b"][None, :]


def xent(logits, y):
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)[:, 0]


def _layer(rng, n_in, n_out):
    return {
        "w": jnp.asarray(rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)),
        "b": jnp.asarray(0.1 * rng.standard_normal(n_out)),
    }


def _problem(seed=0, batch=7):
    rng = np.random.default_rng(seed)
    params = {"l1": _layer(rng, 5, 6), "l2": _layer(rng, 6, 4), "head": _layer(rng, 4, 3)}
    x = jnp.asarray(rng.standard_normal((batch, 5)))
    y = jnp.asarray(rng.integers(0, 3, batch))
    return params, x, y


def _problem1(seed=0, batch=7):
    """A problem for the one-layer block (its layer maps the 5 inputs to 4 units)."""
    params, x, y = _problem(seed, batch)
    return dict(params, l2=_layer(np.random.default_rng(seed + 10), 5, 4)), x, y


def two_layer_block(p, x, tap):
    h = tap(dense, p["l1"], x, activation=jnp.tanh)
    return tap(dense, p["l2"], h, norm=jax.nn.standardize, activation=jax.nn.softplus)


def one_layer_block(p, x, tap):
    return tap(dense, p["l2"], x, activation=jax.nn.relu)


def head(p, h):
    return dense(p["head"], h)


def _block_loss(block):
    def loss(p, x, y):
        return jnp.mean(xent(head(p, block(p, x, no_tap)), y))

    return loss


def _draws(fvg, params, *args, n=N):
    keys = jax.random.split(jax.random.key(42), n)
    return jax.jit(jax.vmap(lambda k: fvg(k, params, *args)))(keys)


def _assert_unbiased(estimates, true):
    """Per coordinate: |mean - true| <= Z * std / sqrt(n)."""
    for e, t in zip(jax.tree_util.tree_leaves(estimates), jax.tree_util.tree_leaves(true)):
        e, t = np.asarray(e), np.asarray(t)
        sd = e.std(0)
        if np.all(sd <= 1e-12 * np.abs(t).max()):  # an exact gradient (the head): rounding only
            np.testing.assert_allclose(e[0], t, rtol=1e-10, atol=1e-14)
            continue
        assert np.all(np.abs(e.mean(0) - t) <= Z * sd / np.sqrt(e.shape[0])), (e.mean(0) - t) / (
            sd / np.sqrt(e.shape[0])
        )


def _z_max(estimates, true):
    e, t = np.asarray(estimates), np.asarray(true)
    return np.max(np.abs(e.mean(0) - t) / (e.std(0) / np.sqrt(e.shape[0])))


# ---------------------------------------------------------------- unbiasedness, exactness


@pytest.mark.parametrize(("estimator", "k"), [("per_example", 1), ("batch", 3)])
def test_activity_estimate_is_unbiased(estimator, k):
    params, x, y = _problem()
    fvg = activity_value_and_grad(two_layer_block, head, xent, num_tangents=k, estimator=estimator)
    (values, hs), est = _draws(fvg, params, x, y)
    loss = _block_loss(two_layer_block)
    np.testing.assert_allclose(values, loss(params, x, y), rtol=1e-12)
    np.testing.assert_allclose(hs[0], two_layer_block(params, x, no_tap), rtol=1e-12)
    _assert_unbiased(est, jax.grad(loss)(params, x, y))


def test_per_example_estimate_unbiased_when_the_loss_couples_examples():
    # d_n is the part of dL/dt that flows through example n's activities: the per-example
    # estimate needs the block, not the loss, to treat examples independently.
    params, x, y = _problem()

    def coupled(logits, y):
        return xent(logits - jnp.mean(logits, axis=0, keepdims=True), y) * (1.0 + jnp.arange(7.0))

    fvg = activity_value_and_grad(two_layer_block, head, coupled)
    _, est = _draws(fvg, params, x, y)

    def loss(p):
        return jnp.mean(coupled(head(p, two_layer_block(p, x, no_tap)), y))

    _assert_unbiased(est, jax.grad(loss)(params))


def test_groups_unbiased_and_lower_variance_on_a_separable_block():
    params, x, y = _problem1()
    loss = _block_loss(one_layer_block)
    true = jax.grad(loss)(params, x, y)
    errors = {}
    for groups in (1, 2, 4):
        fvg = activity_value_and_grad(one_layer_block, head, xent, num_groups=groups)
        _, est = _draws(fvg, params, x, y)
        _assert_unbiased(est, true)
        err = np.sum((np.asarray(est["l2"]["w"]) - np.asarray(true["l2"]["w"])) ** 2, (1, 2))
        errors[groups] = (err.mean(), err.std() / np.sqrt(err.size))
    # Fewer units per group, less variance (well outside the standard errors).
    for a, b in [(1, 2), (2, 4)]:
        assert errors[b][0] + Z * (errors[a][1] + errors[b][1]) < errors[a][0], errors


def test_groups_of_one_unit_give_the_exact_gradient():
    # One unit per group, Rademacher tangents: (g_j u_j) u_j = g_j, per example.
    params, x, y = _problem1()
    fvg = activity_value_and_grad(one_layer_block, head, xent, num_groups=4)
    _, est = jax.jit(fvg)(jax.random.key(0), params, x, y)
    true = jax.grad(_block_loss(one_layer_block))(params, x, y)
    for e, t in zip(jax.tree_util.tree_leaves(est), jax.tree_util.tree_leaves(true)):
        np.testing.assert_allclose(e, t, rtol=1e-10, atol=1e-12)


def test_groups_on_a_mixing_layer_target_the_group_local_gradient():
    # The first layer mixes into every group of the output: its group estimate is biased for the
    # block's gradient (documented); the test has the power to see it.
    params, x, y = _problem()
    fvg = activity_value_and_grad(two_layer_block, head, xent, num_groups=2)
    _, est = _draws(fvg, params, x, y)
    true = jax.grad(_block_loss(two_layer_block))(params, x, y)
    assert _z_max(est["l1"]["w"], true["l1"]["w"]) > 2 * Z
    _assert_unbiased(est["l2"], true["l2"])  # the last layer is separable: unbiased


def test_per_example_has_lower_variance_than_batch_estimator():
    params, x, y = _problem(batch=16)
    true = np.asarray(jax.grad(_block_loss(two_layer_block))(params, x, y)["l1"]["w"])
    err = {}
    for estimator in ("per_example", "batch"):
        fvg = activity_value_and_grad(two_layer_block, head, xent, estimator=estimator)
        _, est = _draws(fvg, params, x, y, n=1000)
        e = np.sum((np.asarray(est["l1"]["w"]) - true) ** 2, (1, 2))
        err[estimator] = (e.mean(), e.std() / np.sqrt(e.size))
    pe, b = err["per_example"], err["batch"]
    assert pe[0] + Z * (pe[1] + b[1]) < b[0], err


def test_local_losses_unbiased_for_the_stop_gradient_objective():
    params, x, y = _problem()
    p1 = {"l1": params["l1"], "head": _layer(np.random.default_rng(1), 6, 3)}
    p2 = {"l2": {"w": params["l2"]["w"], "b": params["l2"]["b"]}, "head": params["head"]}

    def block1(p, x, tap):
        return tap(dense, p["l1"], x, activation=jnp.tanh)

    blocks, heads = [block1, one_layer_block], [head, head]

    def objective(ps, x, y):  # sum of the blocks' losses, gradient stopped between blocks
        total = 0.0
        for b, h, p in zip(blocks, heads, ps):
            x = b(p, jax.lax.stop_gradient(x), no_tap)
            total = total + jnp.mean(xent(h(p, x), y))
        return total

    fvg = local_value_and_grad(blocks, heads, xent, num_tangents=2, num_groups=[3, 2])
    (v1, v2), est = _draws(fvg, [p1, p2], x, y)
    h1 = block1(p1, x, no_tap)
    np.testing.assert_allclose(v1, jnp.mean(xent(head(p1, h1), y)), rtol=1e-12)
    np.testing.assert_allclose(v2, _block_loss(one_layer_block)(p2, h1, y), rtol=1e-12)
    _assert_unbiased(est, jax.grad(objective)([p1, p2], x, y))
    # Tangents of different blocks are independent: the two blocks' estimates are uncorrelated.
    a = np.asarray(est[0]["l1"]["w"]).reshape(N, -1)[:, 0]
    b = np.asarray(est[1]["l2"]["w"]).reshape(N, -1)[:, 0]
    assert abs(np.corrcoef(a, b)[0, 1]) < Z / np.sqrt(N)


def test_convolution_block_unbiased():
    # A 3x3 convolution (linear in kernel and bias), groups over channels, pooled linear head.
    rng = np.random.default_rng(2)
    params = {
        "conv": {
            "w": jnp.asarray(rng.standard_normal((3, 3, 2, 4)) / 4),
            "b": jnp.asarray(0.1 * rng.standard_normal(4)),
        },
        "head": _layer(rng, 4, 3),
    }
    x = jnp.asarray(rng.standard_normal((5, 6, 6, 2)))
    y = jnp.asarray(rng.integers(0, 3, 5))

    def conv(q, a):
        z = jax.lax.conv_general_dilated(
            a, q["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return z + q["b"][None, None, None, :]

    def block(p, x, tap):
        return tap(conv, p["conv"], x, activation=jnp.tanh)

    def pooled_head(p, h):
        return dense(p["head"], jnp.mean(h, axis=(1, 2)))

    fvg = activity_value_and_grad(block, pooled_head, xent, num_groups=2)
    _, est = _draws(fvg, params, x, y, n=3000)

    def loss(p):
        return jnp.mean(xent(pooled_head(p, block(p, x, no_tap)), y))

    _assert_unbiased(est, jax.grad(loss)(params))


def test_normal_tangents_unbiased():
    params, x, y = _problem()
    fvg = activity_value_and_grad(two_layer_block, head, xent, distribution="normal")
    _, est = _draws(fvg, params, x, y)
    _assert_unbiased(est, jax.grad(_block_loss(two_layer_block))(params, x, y))


# ---------------------------------------------------------------- determinism, jit, structure


def test_deterministic_from_the_key_and_jit_consistent():
    params, x, y = _problem()
    fvg = activity_value_and_grad(two_layer_block, head, xent, num_tangents=2, num_groups=2)
    jitted = jax.jit(fvg)
    a = jitted(jax.random.key(7), params, x, y)
    b = jitted(jax.random.key(7), params, x, y)
    d = jitted(jax.random.key(8), params, x, y)
    raw = jitted(jax.random.PRNGKey(7), params, x, y)  # raw uint32 keys work too
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(u, v)
    # Eagerly (op by op) on a one-layer block: the same tangents, the same estimate.
    params1, x1, y1 = _problem1()
    one = activity_value_and_grad(one_layer_block, head, xent)
    eager, jitted1 = (
        one(jax.random.key(7), params1, x1, y1),
        jax.jit(one)(jax.random.key(7), params1, x1, y1),
    )
    for u, v in zip(jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(jitted1)):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-14)
    assert not np.allclose(a[1]["l1"]["w"], d[1]["l1"]["w"])
    assert raw[1]["l1"]["w"].shape == (5, 6)


def test_float32_dtypes_and_vmap():
    params, x, y = _problem()
    p32 = jax.tree_util.tree_map(lambda v: v.astype(jnp.float32), params)
    fvg = activity_value_and_grad(two_layer_block, head, xent)
    (value, h), est = jax.jit(fvg)(jax.random.key(0), p32, x.astype(jnp.float32), y)
    assert value.dtype == h.dtype == jnp.float32
    assert all(e.dtype == jnp.float32 for e in jax.tree_util.tree_leaves(est))
    # vmap over a batch of parameter sets (e.g. an ensemble).
    stacked = jax.tree_util.tree_map(lambda v: jnp.stack([v, 2 * v]), p32)
    (values, _), _ = jax.jit(jax.vmap(fvg, in_axes=(None, 0, None, None)))(
        jax.random.key(0), stacked, x.astype(jnp.float32), y
    )
    assert values.shape == (2,)


def test_non_float_leaves_and_weight_sharing():
    rng = np.random.default_rng(3)
    params = {
        "l1": _layer(rng, 5, 6),
        "sq": _layer(rng, 6, 6),
        "head": _layer(rng, 6, 3),
        "step": jnp.asarray(3),
    }
    _, x, y = _problem()

    def shared(p, x, tap):  # the same layer twice: its gradient sums both uses
        h = tap(dense, p["l1"], x, activation=jnp.tanh)
        h = tap(dense, p["sq"], h, activation=jnp.tanh)
        return tap(dense, p["sq"], h, activation=jnp.tanh)

    fvg = activity_value_and_grad(shared, head, xent)
    _, est = _draws(fvg, params, x, y)
    assert est["step"].dtype == jax.dtypes.float0

    def loss(p):
        return jnp.mean(xent(head(p, shared(p, x, no_tap)), y))

    true = jax.grad(loss, allow_int=True)(params)
    keys = ("l1", "sq", "head")
    _assert_unbiased({k: est[k] for k in keys}, {k: true[k] for k in keys})


# ---------------------------------------------------------------- Flax (nnx, linen) and optax


def test_flax_nnx_blocks_exact_with_one_unit_groups_and_training():
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, n_in, n_out, rngs):
            self.linear = nnx.Linear(n_in, n_out, rngs=rngs)
            self.head = nnx.Linear(n_out, 3, rngs=rngs)

        def __call__(self, x, tap=no_tap):
            return tap(self.linear, x, activation=jax.nn.relu)

    rngs = nnx.Rngs(0)
    model_blocks = [Block(5, 8, rngs), Block(8, 8, rngs)]
    graphdefs, states = zip(*(nnx.split(b) for b in model_blocks))
    states = list(states)
    blocks = [lambda p, x, tap, g=g: nnx.merge(g, p)(x, tap) for g in graphdefs]
    heads = [lambda p, h, g=g: nnx.merge(g, p).head(h) for g in graphdefs]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((32, 5)), jnp.float32)
    y = jnp.asarray((x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 0).astype(np.int32))

    def objective(ps, x, y):
        total = 0.0
        for b, h, p in zip(blocks, heads, ps):
            x = b(p, jax.lax.stop_gradient(x), no_tap)
            total = total + jnp.mean(xent(h(p, x), y))
        return total

    exact = local_value_and_grad(blocks, heads, xent, num_groups=8)  # one unit per group
    _, est = jax.jit(exact)(jax.random.key(0), states, x, y)
    true = jax.grad(objective)(states, x, y)
    assert jax.tree_util.tree_structure(est) == jax.tree_util.tree_structure(true)
    for e, t in zip(jax.tree_util.tree_leaves(est), jax.tree_util.tree_leaves(true)):
        np.testing.assert_allclose(e, t, rtol=1e-4, atol=1e-6)

    fvg = local_value_and_grad(blocks, heads, xent, num_groups=2)
    tx = optax.sgd(0.1)

    @jax.jit
    def step(key, states, opt_state):
        values, grads = fvg(key, states, x, y)
        updates, opt_state = tx.update(grads, opt_state, states)
        return optax.apply_updates(states, updates), opt_state, values

    opt_state = tx.init(states)
    first = None
    for i in range(150):
        states, opt_state, values = step(jax.random.key(i), states, opt_state)
        first = values if first is None else first
    _, _, last = step(jax.random.key(999), states, opt_state)
    assert float(last[-1]) < 0.5 * float(first[-1]), (first, last)


def test_flax_linen_layers_through_functions():
    from flax import linen as nn

    layer, out = nn.Dense(6), nn.Dense(3)
    _, x, y = _problem()
    x = x.astype(jnp.float32)
    lp = layer.init(jax.random.key(0), x)
    hp = out.init(jax.random.key(1), jnp.ones((1, 6), jnp.float32))
    p = {"layer": lp, "head": hp}

    def block(p, x, tap):
        return tap(lambda q, a: layer.apply(q, a), p["layer"], x, activation=jnp.tanh)

    def lin_head(p, h):
        return out.apply(p["head"], h)

    fvg = activity_value_and_grad(block, lin_head, xent, num_groups=6)  # one unit per group
    _, est = jax.jit(fvg)(jax.random.key(0), p, x, y)

    def loss(p):
        return jnp.mean(xent(lin_head(p, block(p, x, no_tap)), y))

    for e, t in zip(jax.tree_util.tree_leaves(est), jax.tree_util.tree_leaves(jax.grad(loss)(p))):
        np.testing.assert_allclose(e, t, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- errors


def test_argument_errors():
    params, x, y = _problem1()
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="'rademacher', 'normal'.*distribution='orthogonal'"):
        activity_value_and_grad(one_layer_block, head, xent, distribution="orthogonal")
    with pytest.raises(ValueError, match="'per_example', 'batch'.*estimator='mean'"):
        activity_value_and_grad(one_layer_block, head, xent, estimator="mean")
    with pytest.raises(ValueError, match="num_groups=0"):
        activity_value_and_grad(one_layer_block, head, xent, num_groups=0)
    with pytest.raises(TypeError, match="num_groups"):
        activity_value_and_grad(one_layer_block, head, xent, num_groups=2.0)
    with pytest.raises(ValueError, match="num_tangents=0"):
        activity_value_and_grad(one_layer_block, head, xent, num_tangents=0)
    with pytest.raises(TypeError, match="callables"):
        activity_value_and_grad(one_layer_block, None, xent)
    with pytest.raises(ValueError, match="divisible by num_groups=3"):
        activity_value_and_grad(one_layer_block, head, xent, num_groups=3)(key, params, x, y)
    with pytest.raises(ValueError, match="must call `tap`"):
        activity_value_and_grad(lambda p, x, tap: x[:, :4], head, xent)(key, params, x, y)
    with pytest.raises(ValueError, match="one real loss per example"):
        activity_value_and_grad(one_layer_block, head, lambda o, y: jnp.mean(xent(o, y)))(
            key, params, x, y
        )
    with pytest.raises(ValueError, match="linear in its parameters"):
        nonlinear = lambda p, a: a @ jnp.tanh(p["w"]) + p["b"][None, :]  # noqa: E731
        activity_value_and_grad(lambda p, x, tap: tap(nonlinear, p["l2"], x), head, xent)(
            key, params, x, y
        )
    with pytest.raises(TypeError, match="leaves of the block's `params`"):
        scaled = lambda p, x, tap: tap(dense, {"w": 2 * p["l2"]["w"], "b": p["l2"]["b"]}, x)  # noqa: E731
        activity_value_and_grad(scaled, head, xent)(key, params, x, y)
    with pytest.raises(ValueError, match="batch"):
        activity_value_and_grad(lambda p, x, tap: tap(dense, p["l2"], x)[:3], head, xent)(
            key, params, x, y
        )
    with pytest.raises(TypeError, match="tap"):
        activity_value_and_grad(lambda p, x, tap: tap(dense, x), head, xent)(key, params, x, y)
    with pytest.raises(ValueError, match="equal length"):
        local_value_and_grad([one_layer_block], [head, head], xent)
    with pytest.raises(ValueError, match="one int per block"):
        local_value_and_grad([one_layer_block], [head], xent, num_groups=[1, 2])
    with pytest.raises(ValueError, match="list or tuple of 1"):
        local_value_and_grad([one_layer_block], [head], xent)(key, params, x, y)


# ---------------------------------------------------------------- memory


def _temp_bytes(depth, width=64, batch=32):
    rng = np.random.default_rng(0)
    ps = [
        {
            "l2": {
                "w": jnp.asarray(rng.standard_normal((width, width)) / 8, jnp.float32),
                "b": jnp.zeros(width, jnp.float32),
            },
            "head": {"w": jnp.zeros((width, 10), jnp.float32), "b": jnp.zeros(10, jnp.float32)},
        }
        for _ in range(depth)
    ]
    x = jnp.ones((batch, width), jnp.float32)
    y = jnp.zeros(batch, jnp.int32)
    local = local_value_and_grad([one_layer_block] * depth, [head] * depth, xent)

    def backprop_loss(ps, x, y):
        for p in ps:
            x = one_layer_block(p, x, no_tap)
        return jnp.mean(xent(head(ps[-1], x), y))

    def temp(f, *args):
        return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes

    return (
        temp(local, jax.random.key(0), ps, x, y),
        temp(jax.value_and_grad(backprop_loss), ps, x, y),
    )


def test_local_losses_temp_memory_is_flat_in_depth():
    # Backprop keeps every block's activations: its temporary memory grows with the depth. Local
    # losses release each block's before the next one: bounded (XLA's buffer packing still varies
    # by up to ~20% between depths, so compare growths).
    local8, bp8 = _temp_bytes(8)
    local24, bp24 = _temp_bytes(24)
    assert bp24 >= 2.5 * bp8, (bp8, bp24)
    assert local24 <= 1.25 * local8, (local8, local24)
    assert local24 - local8 < 0.25 * (bp24 - bp8), (local8, local24, bp8, bp24)
