"""Tests for softops.forward_grad: estimator statistics, generator quality, parallelism, memory."""

import typing

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from softops.forward_grad import (
    activity_value_and_grad,
    fgd,
    forward_value_and_grad,
    local_value_and_grad,
    perturbed_dim_factor,
    sample_tangents,
    scale_by_perturbed_dim,
)

KAPPA = {"rademacher": 1, "normal": 3}
Z = 5.0  # two-sided z-score of every statistical bound below (CLT).


def _params():
    rng = np.random.default_rng(0)
    return {"w": jnp.asarray(rng.standard_normal((3, 4))), "b": jnp.asarray(rng.standard_normal(5))}


def _loss(p, x=None):
    dt = p["w"].dtype
    a = jnp.sum(jnp.sin(p["w"]) * jnp.arange(12.0, dtype=dt).reshape(3, 4))
    c = jnp.linspace(-1.0, 2.0, 5, dtype=dt)
    return a + jnp.sum(jnp.log1p(jnp.exp(p["b"] * c))) + a * p["b"][0]


def _flat(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def _estimates(n, **options):
    p = _params()
    fvg = forward_value_and_grad(_loss, **options)
    keys = jax.random.split(jax.random.key(42), n)
    _, est = jax.jit(jax.vmap(lambda k: fvg(k, p)))(keys)
    flat = jnp.concatenate([x.reshape(n, -1) for x in jax.tree_util.tree_leaves(est)], axis=1)
    return np.asarray(flat), np.asarray(_flat(jax.grad(_loss)(p)))


# ---------------------------------------------------------------- estimator statistics


@pytest.mark.parametrize("distribution", ["rademacher", "normal"])
@pytest.mark.parametrize("k", [1, 4])
def test_unbiased_mean_and_second_moment(distribution, k):
    n = 20000
    g, grad = _estimates(n, num_tangents=k, distribution=distribution)
    d, sq = grad.size, np.sum(grad**2)
    # Per-coordinate variance, one tangent: ||G||^2 - G_i^2 (Rademacher), ||G||^2 + G_i^2 (normal).
    var1 = sq + (KAPPA[distribution] - 2) * grad**2
    bound = Z * np.sqrt(var1 / k / n)
    assert np.all(np.abs(g.mean(0) - grad) <= bound), (g.mean(0) - grad) / bound
    # E||g||^2 = ||G||^2 (1 + (d + kappa - 2) / K).
    norms = np.sum(g**2, axis=1)
    expected = sq * (1 + (d + KAPPA[distribution] - 2) / k)
    assert abs(norms.mean() - expected) <= Z * norms.std() / np.sqrt(n)
    assert abs(norms.mean() / expected - 1) < 0.05  # the bound above is informative, not loose


def test_orthogonal_unbiased_and_second_moment():
    n, k = 20000, 4
    g, grad = _estimates(n, num_tangents=k, distribution="orthogonal")
    d, sq = grad.size, np.sum(grad**2)
    assert np.all(np.abs(g.mean(0) - grad) <= Z * g.std(0) / np.sqrt(n))
    norms = np.sum(g**2, axis=1)
    assert abs(norms.mean() - d / k * sq) <= Z * norms.std() / np.sqrt(n)
    assert norms.var() < ((1 + (d - 1) / k) * sq) ** 2  # less spread than i.i.d. Rademacher


def test_orthogonal_full_rank_is_exact_gradient():
    p = _params()
    d = 17
    fvg = jax.jit(forward_value_and_grad(_loss, num_tangents=d, distribution="orthogonal"))
    value, est = fvg(jax.random.key(3), p)
    np.testing.assert_allclose(value, _loss(p), rtol=1e-14)
    np.testing.assert_allclose(_flat(est), _flat(jax.grad(_loss)(p)), rtol=1e-5, atol=1e-5)
    # float32 parameters too.
    p32 = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), p)
    _, est32 = fvg(jax.random.key(3), p32)
    np.testing.assert_allclose(_flat(est32), _flat(jax.grad(_loss)(p)), rtol=1e-4, atol=1e-4)


def test_single_tangent_is_directional_derivative_times_tangent():
    p = _params()
    key = jax.random.key(5)
    v = sample_tangents(key, p)
    _, dval = jax.jvp(_loss, (p,), (v,))
    _, est = forward_value_and_grad(_loss)(key, p)
    np.testing.assert_array_equal(_flat(est), dval * _flat(v))


@pytest.mark.parametrize("distribution", ["rademacher", "normal"])
def test_deterministic_and_jit_consistent(distribution):
    p = _params()
    fvg = forward_value_and_grad(_loss, num_tangents=3, distribution=distribution)
    a = fvg(jax.random.key(7), p)
    b = fvg(jax.random.key(7), p)
    c = jax.jit(fvg)(jax.random.key(7), p)
    c2 = jax.jit(fvg)(jax.random.key(7), p)
    d = fvg(jax.random.key(8), p)
    for x, y in zip(jax.tree_util.tree_leaves((a, c)), jax.tree_util.tree_leaves((b, c2))):
        np.testing.assert_array_equal(x, y)
    va = sample_tangents(jax.random.key(7), p, distribution=distribution)
    vc = jax.jit(sample_tangents, static_argnames="distribution")(
        jax.random.key(7), p, distribution=distribution
    )
    if distribution == "rademacher":  # integer ops only: identical under jit and eagerly
        np.testing.assert_array_equal(_flat(va), _flat(vc))
    else:  # float32 log/sqrt may round differently when XLA fuses them (documented)
        np.testing.assert_allclose(_flat(va), _flat(vc), rtol=1e-6, atol=1e-6)
    assert not np.allclose(_flat(d[1]), _flat(a[1]))
    # Raw uint32 keys work as well as typed keys.
    raw = fvg(jax.random.PRNGKey(7), p)
    assert _flat(raw[1]).shape == (17,)


def test_has_aux_argnums_and_non_float_leaves():
    def f(x, p):
        return jnp.sum(p["w"] ** 2) * x + jnp.sum(p["n"]).astype(jnp.float64), {"n": p["n"]}

    p = {"w": jnp.arange(3.0), "n": jnp.arange(2)}
    (value, aux), est = forward_value_and_grad(
        f, argnums=1, has_aux=True, num_tangents=3, distribution="orthogonal"
    )(jax.random.key(0), 2.0, p)
    np.testing.assert_allclose(value, 2.0 * 5.0 + 1.0)
    np.testing.assert_array_equal(aux["n"], p["n"])
    np.testing.assert_allclose(est["w"], 4.0 * p["w"], atol=1e-10)
    assert est["n"].dtype == jax.dtypes.float0 and est["n"].shape == (2,)


def test_dtypes_preserved():
    p = {
        "a": jnp.ones((4, 3), jnp.float32),
        "b": jnp.ones(5, jnp.bfloat16),
        "c": jnp.ones(2, jnp.float16),
        "d": jnp.ones(3, jnp.float64),
        "i": jnp.ones(3, jnp.int32),
    }

    def f(q):
        return sum(jnp.sum(q[n].astype(jnp.float32) ** 2) for n in "abcd")

    for dist in ["rademacher", "normal", "orthogonal"]:
        fvg = jax.jit(forward_value_and_grad(f, num_tangents=2, distribution=dist))
        _, est = fvg(jax.random.key(0), p)
        assert {n: est[n].dtype for n in "abcd"} == {n: p[n].dtype for n in "abcd"}
        assert est["i"].dtype == jax.dtypes.float0
        v = jax.jit(sample_tangents, static_argnames=("num_tangents", "distribution"))(
            jax.random.key(0), p, num_tangents=2, distribution=dist
        )
        assert v["a"].shape == (2, 4, 3) and v["i"].shape == (2, 3)


def test_non_finite_value_gives_a_nan_estimate():
    # Issue 21: a NaN parameter gave a NaN value and a finite (all-zero) estimate, which an
    # optimizer would apply silently; JAX's own gradient of relu at NaN is finite too.
    params = {"w": jnp.array([1.0, jnp.nan, 2.0]), "b": jnp.array(0.5)}

    def loss(p):
        return jnp.sum(jax.nn.relu(p["w"])) + p["b"]

    for k in (1, 3):
        value, est = forward_value_and_grad(loss, num_tangents=k)(jax.random.key(0), params)
        assert jnp.isnan(value)
        assert all(bool(jnp.all(jnp.isnan(leaf))) for leaf in jax.tree.leaves(est))
    finite = {"w": jnp.array([1.0, -3.0, 2.0]), "b": jnp.array(0.5)}
    _, est = forward_value_and_grad(loss)(jax.random.key(0), finite)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(est))


def test_custom_jvp_rule_is_used():
    @jax.custom_jvp
    def ste_round(x):
        return jnp.round(x)

    @ste_round.defjvp
    def _ste_round_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return jnp.round(x), 2.0 * t  # straight-through, scaled so the rule is recognisable

    def f(w):
        return jnp.sum((ste_round(3.0 * w) - jnp.arange(4.0)) ** 2)

    w = jnp.array([0.6, 0.1, -0.4, 1.3])
    _, est = forward_value_and_grad(f, num_tangents=4, distribution="orthogonal")(
        jax.random.key(1), w
    )
    expected = jax.grad(f)(w)
    assert np.all(np.abs(expected) > 0)  # jnp.round alone would give zero
    np.testing.assert_allclose(est, expected, rtol=1e-6, atol=1e-8)


def test_custom_vjp_is_rejected_by_jax():
    @jax.custom_vjp
    def g(x):
        return x

    g.defvjp(lambda x: (x, None), lambda _, ct: (ct,))
    with pytest.raises(TypeError):
        forward_value_and_grad(lambda x: jnp.sum(g(x)))(jax.random.key(0), jnp.ones(3))


def test_argument_errors():
    with pytest.raises(ValueError, match="'rademacher', 'normal', 'orthogonal'.*got distribution"):
        forward_value_and_grad(_loss, distribution="gaussian")
    with pytest.raises(ValueError, match="num_tangents=0"):
        forward_value_and_grad(_loss, num_tangents=0)
    with pytest.raises(TypeError, match="num_tangents"):
        forward_value_and_grad(_loss, num_tangents=2.0)
    with pytest.raises(ValueError, match="d = 17.*num_tangents=18"):
        forward_value_and_grad(_loss, num_tangents=18, distribution="orthogonal")(
            jax.random.key(0), _params()
        )
    with pytest.raises(TypeError, match="real scalar"):
        forward_value_and_grad(lambda x: x**2)(jax.random.key(0), jnp.ones(3))
    with pytest.raises(TypeError, match="real parameters"):
        forward_value_and_grad(lambda x: jnp.sum(jnp.abs(x)))(
            jax.random.key(0), jnp.ones(3, jnp.complex64)
        )


def test_each_option_accepts_exactly_the_values_its_signature_names():
    """An option is one ``Literal`` type: the values it names are accepted, others rejected."""

    def fn(*args):
        return args

    calls = {
        forward_value_and_grad: lambda **o: forward_value_and_grad(_loss, **o),
        sample_tangents: lambda **o: jax.eval_shape(
            lambda: sample_tangents(jax.random.key(0), {"w": jnp.zeros(2)}, **o)
        ),
        perturbed_dim_factor: lambda **o: perturbed_dim_factor(10, **o),
        scale_by_perturbed_dim: lambda **o: scale_by_perturbed_dim(**o),
        activity_value_and_grad: lambda **o: activity_value_and_grad(fn, fn, fn, **o),
        local_value_and_grad: lambda **o: local_value_and_grad([fn], [fn], fn, **o),
    }
    for public, call in calls.items():
        hints = typing.get_type_hints(public)
        for name in ("distribution", "estimator"):
            if name not in hints:
                continue
            allowed = typing.get_args(hints[name])
            assert len(allowed) >= 2 and all(isinstance(a, str) for a in allowed), allowed
            for value in allowed:
                call(**{name: value})
            listed = ", ".join(repr(a) for a in allowed)
            with pytest.raises(ValueError, match=f"`{name}` must be one of {listed}, got"):
                call(**{name: "none of those"})


# ---------------------------------------------------------------- generator quality


def _corr(a, b):
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    n = min(a.size, b.size)
    return np.corrcoef(a[:n], b[:n])[0, 1], n


@pytest.mark.parametrize("distribution", ["rademacher", "normal"])
def test_generator_moments_and_correlations(distribution):
    p = {
        "a": jnp.zeros((400, 500), jnp.float32),
        "b": jnp.zeros(200000, jnp.float32),
        "c": jnp.zeros((400, 500), jnp.float32),
        "d": jnp.zeros((7, 3), jnp.float64),
    }
    v = sample_tangents(jax.random.key(11), p, num_tangents=2, distribution=distribution)
    w = sample_tangents(jax.random.key(12), p, num_tangents=2, distribution=distribution)
    for name in "abc":
        x = np.asarray(v[name], np.float64).ravel()
        n = x.size
        m, var = x.mean(), x.var()
        kurt = np.mean((x - m) ** 4) / var**2
        assert abs(m) < Z / np.sqrt(n)
        if distribution == "rademacher":
            assert set(np.unique(x)) == {-1.0, 1.0}
        else:
            assert abs(var - 1) < Z * np.sqrt(2 / n)
            assert abs(kurt - 3) < Z * np.sqrt(24 / n)
            # The law, not just the moments: P(|z| < t) against the normal CDF.
            for t, prob in [
                (0.5, 0.38292492),
                (1.0, 0.68268949),
                (2.0, 0.95449974),
                (3.0, 0.99730020),
            ]:
                hit = np.mean(np.abs(x) < t)
                assert abs(hit - prob) < Z * np.sqrt(prob * (1 - prob) / n), (t, hit)
        # Within a leaf: neighbours, a 32-element lag, a row lag, and the tangent index.
        flat = np.asarray(v[name], np.float64).reshape(-1)
        for lag in (1, 2, 32, 500):
            r, cnt = _corr(flat[:-lag], flat[lag:])
            assert abs(r) < Z / np.sqrt(cnt), (name, lag, r)
        r, cnt = _corr(v[name][0], v[name][1])
        assert abs(r) < Z / np.sqrt(cnt)
        # Across keys.
        r, cnt = _corr(v[name], w[name])
        assert abs(r) < Z / np.sqrt(cnt)
    # Across leaves (same shape, same index).
    for a, b in [("a", "c"), ("a", "b"), ("b", "c")]:
        r, cnt = _corr(v[a], v[b])
        assert abs(r) < Z / np.sqrt(cnt), (a, b, r)


# ---------------------------------------------------------------- optax pieces and training


def test_perturbed_dim_scaling_and_fgd_schedule():
    assert perturbed_dim_factor(10, num_tangents=2) == 2 / 11
    assert perturbed_dim_factor(10, num_tangents=2, distribution="normal") == 2 / 13
    assert perturbed_dim_factor(10, num_tangents=2, distribution="orthogonal") == 2 / 10
    upd = {"w": jnp.ones(6), "n": np.zeros(4, jax.dtypes.float0), "b": jnp.ones(4)}
    tx = scale_by_perturbed_dim(num_tangents=3)
    out, _ = tx.update(upd, tx.init(upd))
    np.testing.assert_allclose(out["w"], 3 / (3 + 10 - 1))
    tx = fgd(0.5, decay=0.1)
    grads = {"w": jnp.ones(2)}
    state = tx.init(grads)
    for step in range(3):
        out, state = tx.update(grads, state)
        np.testing.assert_allclose(out["w"], -0.5 * np.exp(-0.1 * step), rtol=1e-6)
    with pytest.raises(ValueError, match="decay"):
        fgd(0.1, decay=-1.0)


def test_fgd_takes_optax_schedules_and_checks_learning_rates():
    grads = {"w": jnp.ones(2, jnp.float32)}
    for tx, rates in [
        (fgd(optax.constant_schedule(0.1)), [0.1, 0.1, 0.1]),
        (fgd(optax.linear_schedule(0.3, 0.1, 2)), [0.3, 0.2, 0.1]),
        (fgd(optax.constant_schedule(0.5), decay=0.1), [0.5 * np.exp(-0.1 * i) for i in range(3)]),
        (fgd(jnp.float32(0.2)), [0.2, 0.2, 0.2]),
    ]:
        state = tx.init(grads)
        for rate in rates:
            out, state = jax.jit(tx.update)(grads, state)
            np.testing.assert_allclose(out["w"], -rate, rtol=1e-6)
    # A traced learning rate (not checkable at trace time) is accepted.
    out = jax.jit(lambda lr: fgd(lr).update(grads, fgd(lr).init(grads))[0])(jnp.float32(0.3))
    np.testing.assert_allclose(out["w"], -0.3, rtol=1e-6)
    for bad, error, message in [
        (-0.1, ValueError, "learning_rate=-0.1"),
        (0.0, ValueError, "learning_rate=0.0"),
        (float("nan"), ValueError, "learning_rate=nan"),
        (jnp.float32(-2.0), ValueError, "learning_rate=-2.0"),
        (True, TypeError, "learning_rate=True"),
        ("0.1", TypeError, "learning_rate='0.1'"),
        (jnp.ones(2), TypeError, "shape \\(2,\\)"),
        (jnp.asarray(1), TypeError, "dtype int"),
    ]:
        with pytest.raises(error, match=message):
            fgd(bad)


def _regression_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 4)).astype(np.float32)
    y = np.sin(x @ np.array([1.0, -2.0, 0.5, 1.5], np.float32))[:, None]
    return jnp.asarray(x), jnp.asarray(y)


def _train(loss, params, steps=300, lr=0.02, **options):
    x, y = _regression_data()
    opt = optax.adam(lr)
    fvg = forward_value_and_grad(loss, **options)

    @jax.jit
    def step(key, params, state):
        value, g = fvg(key, params, x, y)
        with jax.numpy_dtype_promotion("standard"):  # optax's adam is not strict-promotion clean
            updates, state = opt.update(g, state, params)
        return optax.apply_updates(params, updates), state, value

    state = opt.init(params)
    first = float(loss(params, x, y))
    for i in range(steps):
        params, state, _ = step(jax.random.key(i), params, state)
    return first, float(loss(params, x, y))


def test_flax_nnx_model_trains():
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(4, 16, rngs=rngs)
            self.l2 = nnx.Linear(16, 1, rngs=rngs)

        def __call__(self, x):
            return self.l2(jnp.tanh(self.l1(x)))

    graphdef, params = nnx.split(MLP(nnx.Rngs(0)))

    def loss(params, x, y):
        return jnp.mean((nnx.merge(graphdef, params)(x) - y) ** 2)

    first, last = _train(loss, params, num_tangents=4)
    assert last < 0.3 * first, (first, last)


def test_flax_nnx_state_with_rng_leaves():
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(3, 2, rngs=rngs)
            self.rngs = rngs  # a PRNG key leaf and a uint32 counter leaf in the state

    graphdef, state = nnx.split(Model(nnx.Rngs(0)))

    def loss(state, x):
        return jnp.sum(nnx.merge(graphdef, state).lin(x) ** 2)

    x = jnp.ones((4, 3), jnp.float32)
    _, est = forward_value_and_grad(loss, num_tangents=8, distribution="orthogonal")(
        jax.random.key(0), state, x
    )  # d = 3 * 2 + 2: K = d gives the exact gradient
    grad = jax.grad(loss, allow_int=True)(state, x)
    for name in ("kernel", "bias"):
        np.testing.assert_allclose(est["lin"][name][...], grad["lin"][name][...], rtol=1e-4)
    assert est["rngs"]["default"]["key"][...].dtype == jax.dtypes.float0
    assert est["rngs"]["default"]["count"][...].dtype == jax.dtypes.float0


def test_flax_linen_model_trains():
    from flax import linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(jnp.tanh(nn.Dense(16)(x)))

    model = MLP()
    x, _ = _regression_data()
    params = model.init(jax.random.key(0), x)

    def loss(params, x, y):
        return jnp.mean((model.apply(params, x) - y) ** 2)

    first, last = _train(loss, params, num_tangents=4)
    assert last < 0.3 * first, (first, last)


# ---------------------------------------------------------------- data parallel

# On 8 simulated devices (a subprocess): tests/test_forward_grad_sharding.py.


# ---------------------------------------------------------------- memory


def _mlp_temp_bytes(depth, width=64, batch=256):
    k = jax.random.key(0)
    params = [
        (
            jax.random.normal(jax.random.fold_in(k, i), (width, width), jnp.float32) / 8,
            jnp.zeros(width, jnp.float32),
        )
        for i in range(depth)
    ]
    x = jnp.ones((batch, width), jnp.float32)

    def loss(p, x):
        for w, b in p:
            x = jnp.tanh(x @ w + b[None, :])
        return jnp.mean(x**2)

    def temp(f, *args):
        return jax.jit(f).lower(*args).compile().memory_analysis().temp_size_in_bytes

    return (
        temp(forward_value_and_grad(loss), jax.random.key(1), params, x),
        temp(jax.value_and_grad(loss), params, x),
    )


def test_forward_mode_temp_memory_is_flat_in_depth():
    fwd10, bwd10 = _mlp_temp_bytes(10)
    fwd40, bwd40 = _mlp_temp_bytes(40)
    assert fwd40 <= 1.1 * fwd10, (fwd10, fwd40)
    assert bwd40 >= 3 * bwd10, (bwd10, bwd40)
    assert fwd40 * 2 < bwd40


@pytest.mark.slow
def test_forward_mode_temp_memory_is_flat_up_to_depth_100():
    fwd5, bwd5 = _mlp_temp_bytes(5)
    fwd10, _ = _mlp_temp_bytes(10)
    fwd100, bwd100 = _mlp_temp_bytes(100)
    # At depth 5 XLA keeps fewer activation buffers live (0.33 MB vs 0.66 MB); from depth 10 on
    # the jvp's temporary memory is constant, while backprop's grows linearly.
    assert fwd5 <= fwd10
    assert fwd100 <= 1.1 * fwd10, (fwd10, fwd100)
    assert bwd100 >= 10 * bwd5, (bwd5, bwd100)
