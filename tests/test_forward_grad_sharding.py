"""Forward gradients on a batch sharded over 8 simulated CPU devices (a subprocess: the device count
must be set before JAX starts): under ``jit`` with Explicit and Auto meshes, in ``shard_map`` and
``pmap``.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent("""
    import re, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    jax.config.update("jax_numpy_rank_promotion", "raise")
    from softops.forward_grad import (
        activity_value_and_grad, forward_value_and_grad, local_value_and_grad, sample_tangents)
    assert jax.device_count() == 8, jax.devices()
    FULL = sys.argv[1] == "full"  # else the main cases only

    COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute",
                   "reduce-scatter")

    def run(f, *args):
        # The result of jit(f) and the number of each collective in its compiled HLO.
        compiled = jax.jit(f).lower(*args).compile()
        text = compiled.as_text()
        return compiled(*args), {
            c: len(re.findall(rf"\\b{c}(-start)?\\(", text)) for c in COLLECTIVES}

    def close(a, b):
        for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-14)

    rng = np.random.default_rng(0)
    def layer(n_in, n_out):
        return {"w": jnp.asarray(rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)),
                "b": jnp.asarray(0.1 * rng.standard_normal(n_out))}
    p = {"l1": layer(5, 8), "l2": layer(8, 8), "head": layer(8, 3)}
    x = jnp.asarray(rng.standard_normal((64, 5)))
    y = jnp.asarray(rng.integers(0, 3, 64))
    key = jax.random.key(3)

    def dense(q, a):
        return a @ q["w"] + q["b"][None, :]
    def xent(o, y):
        return -jnp.take_along_axis(jax.nn.log_softmax(o), y[:, None], 1)[:, 0]
    def block(q, a, tap):
        h = tap(dense, q["l1"], a, activation=jnp.tanh)
        return tap(dense, q["l2"], h, norm=jax.nn.standardize, activation=jax.nn.relu)
    def head(q, h):
        return dense(q["head"], h)
    def mse(q, a, y):
        return jnp.mean((head(q, block(q, a, lambda f, w, v, **k: f(w, v))) - 1.0) ** 2)
    p2 = [p, {"l1": layer(8, 8), "l2": layer(8, 8), "head": layer(8, 3)}]
    single = {}
    for dist in ("rademacher", "normal", "orthogonal") if FULL else ("rademacher",):
        f = forward_value_and_grad(mse, num_tangents=3, distribution=dist)
        single["fvg", dist] = (f, jax.jit(f)(key, p, x, y))
    for est in ("per_example", "batch") if FULL else ("per_example",):
        f = activity_value_and_grad(block, head, xent, num_tangents=3, num_groups=2, estimator=est)
        single["activity", est] = (f, jax.jit(f)(key, p, x, y))
    f = local_value_and_grad([block, block], [head, head], xent, num_tangents=2, num_groups=4)
    single["local", ""] = (f, jax.jit(f)(key, p2, x, y))
    tangent = jax.jit(sample_tangents)(key, p)

    for name, types in (("explicit", None), ("auto", (AxisType.Auto,)))[:2 if FULL else 1]:
        mesh = (jax.make_mesh((8,), ("b",)) if types is None
                else jax.make_mesh((8,), ("b",), axis_types=types))
        with jax.set_mesh(mesh):
            xs = jax.device_put(x, NamedSharding(mesh, P("b")))
            ys = jax.device_put(y, NamedSharding(mesh, P("b")))
            ps = jax.device_put(p, NamedSharding(mesh, P()))
            p2s = jax.device_put(p2, NamedSharding(mesh, P()))
            for (kind, option), (f, expected) in single.items():
                params = p2s if kind == "local" else ps
                out, count = run(f, key, params, xs, ys)
                close(out, expected)
                assert sum(count[c] for c in COLLECTIVES[1:]) == 0, (name, kind, option, count)
                # One all-reduce: of the loss and the K directional derivatives (weight
                # perturbation), or of the losses and gradients (activity perturbation, whose
                # gradients are data parallel like backprop's; XLA combines them in one); the
                # batch estimator adds one of its K x G directional derivatives.
                expected_count = 2 if option == "batch" else 1
                assert count["all-reduce"] == expected_count, (name, kind, option, count)
                print(name, kind, option, count)
            # Tangents: sampled from the replicated key, replicated, the same on every device, and
            # sampling them gathers nothing.
            t, count = run(sample_tangents, key, ps)
            assert sum(count.values()) == 0, count
            for leaf, ref in zip(jax.tree_util.tree_leaves(t), jax.tree_util.tree_leaves(tangent)):
                assert leaf.sharding.is_fully_replicated, leaf.sharding
                for shard in leaf.addressable_shards:
                    np.testing.assert_array_equal(shard.data, ref)

    # shard_map with axis_name: the estimators average over the axis, same results.
    mesh = jax.make_mesh((8,), ("b",))
    with jax.set_mesh(mesh):
        xs = jax.device_put(x, NamedSharding(mesh, P("b")))
        ys = jax.device_put(y, NamedSharding(mesh, P("b")))
        specs = (P(), P(), P("b"), P("b"))
        for dist in ("rademacher", "normal", "orthogonal") if FULL else ("rademacher",):
            f = forward_value_and_grad(mse, num_tangents=3, distribution=dist, axis_name="b")
            out = jax.jit(jax.shard_map(f, mesh=mesh, in_specs=specs, out_specs=(P(), P())))(
                key, p, xs, ys)
            close(out, single["fvg", dist][1])
        # Without the all-reduce each device would see its own shard: a different estimate,
        # whose mean over devices is the full-batch one (the same tangents everywhere).
        plain = forward_value_and_grad(mse, num_tangents=3)
        local = jax.jit(jax.shard_map(
            lambda *a: jax.tree_util.tree_map(lambda e: e[None], plain(*a)[1]), mesh=mesh,
            in_specs=specs, out_specs=P("b")))(key, p, xs, ys)
        local = np.asarray(local["l1"]["w"])
        full = single["fvg", "rademacher"][1][1]["l1"]["w"]
        assert local.shape == (8, 5, 8) and not np.allclose(local[0], full)
        np.testing.assert_allclose(local.mean(0), full, rtol=1e-10, atol=1e-14)
    # pmap with a replicated key: the same estimate on every device.
    f = forward_value_and_grad(mse, num_tangents=3, axis_name="b")
    out = jax.pmap(f, axis_name="b", in_axes=(None, None, 0, 0))(
        key, p, x.reshape(8, 8, 5), y.reshape(8, 8))
    np.testing.assert_allclose(np.asarray(out[1]["l1"]["w"]),
                               np.broadcast_to(full, (8, 5, 8)), rtol=1e-12, atol=1e-14)
    with jax.set_mesh(mesh):
        for est in ("per_example", "batch") if FULL else ("per_example",):
            f = activity_value_and_grad(block, head, xent, num_tangents=3, num_groups=2,
                                        estimator=est, axis_name="b")
            out = jax.jit(jax.shard_map(f, mesh=mesh, in_specs=(P(), P(), P("b"), P("b")),
                                        out_specs=((P(), P("b")), P())))(key, p, xs, ys)
            close(out, single["activity", est][1])
        # A training loop inside shard_map: the updates must keep the carry's varying-axes type
        # (replicated parameters stay invariant), for both kinds of estimates.
        fw = forward_value_and_grad(mse, axis_name="b")
        fa = activity_value_and_grad(block, head, xent, axis_name="b")
        for fn in (lambda k, q, a, b: fw(k, q, a, b)[1], lambda k, q, a, b: fa(k, q, a, b)[1]):
            def train(q, a, b, fn=fn):
                def step(q, k):
                    g = fn(k, q, a, b)
                    return jax.tree_util.tree_map(lambda u, v: u - 0.1 * v, q, g), None
                return jax.lax.scan(step, q, jax.random.split(key, 3))[0]
            trained = jax.jit(jax.shard_map(train, mesh=mesh, in_specs=(P(), P("b"), P("b")),
                                            out_specs=P()))(p, xs, ys)
            assert not np.allclose(trained["l1"]["w"], p["l1"]["w"])
        if not FULL:
            print("SHARDING_OK")
            raise SystemExit(0)
        f = local_value_and_grad([block, block], [head, head], xent, num_tangents=2,
                                 num_groups=4, axis_name="b")
        out = jax.jit(jax.shard_map(f, mesh=mesh, in_specs=(P(), P(), P("b"), P("b")),
                                    out_specs=(P(), P())))(key, p2, xs, ys)
        close(out, single["local", ""][1])
        # check_vma=False (no varying-axes types): the same.
        f = activity_value_and_grad(block, head, xent, num_tangents=3, num_groups=2,
                                    axis_name="b")
        out = jax.jit(jax.shard_map(f, mesh=mesh, in_specs=(P(), P(), P("b"), P("b")),
                                    out_specs=((P(), P("b")), P()), check_vma=False))(
            key, p, xs, ys)
        close(out, single["activity", "per_example"][1])
    print("SHARDING_OK")
""")


def _run(mode):
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert "SHARDING_OK" in res.stdout


@pytest.mark.slow
def test_sharded_batch_under_jit_and_shard_map():
    # Explicit mesh; weight perturbation (Rademacher), activity perturbation, local losses.
    _run("main")


@pytest.mark.slow
def test_sharded_batch_all_distributions_estimators_and_meshes():
    # Also the Auto mesh, normal and orthogonal tangents, the batch estimator, local losses in
    # shard_map, and shard_map without varying-axes checks.
    _run("full")
