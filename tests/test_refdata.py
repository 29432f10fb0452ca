"""Every case of the shared float64 reference data: outputs, JVPs and VJPs to 1e-8 relative."""

import collections
import functools
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import softops

REFDATA = Path(
    os.environ.get("SOFTOPS_REFDATA", Path(__file__).resolve().parents[2] / "shared" / "refdata")
)
FLAT = {"x", "out", "u", "vjp", "v", "jvp", "s", "w", "solution", "vjp_s", "vjp_w", "jvp_s"}
RTOL = 1e-8


def _cases(name):
    path = REFDATA / name
    if not path.exists():
        pytest.skip(f"reference data not found at {path} (set SOFTOPS_REFDATA)")
    d = np.load(path)
    per_case = [k for k in d.files if k not in FLAT and d[k].ndim == 1]
    out = []
    for i in range(len(d["n"])):
        b, n, o = int(d["batch"][i]), int(d["n"][i]), int(d["offset"][i])
        meta = {k: d[k][i].item() for k in per_case}
        arrays = {k: d[k][o : o + b * n].reshape(b, n) for k in FLAT if k in d.files}
        out.append((meta, arrays))
    return out


def _assert_close(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    scale = np.maximum(np.abs(want), 1.0)
    err = np.max(np.abs(got - want) / scale) if want.size else 0.0
    assert err <= RTOL, f"{what}: relative error {err:.3g}"


@functools.cache
def _evaluator(op_name, regularization, descending, method):
    """One jitted function per static config: outputs, JVPs and VJPs of a stack of rows."""
    op = getattr(softops, op_name)

    def run(x, eps, v, u):
        def f(x):
            return op(
                x,
                descending=descending,
                regularization=regularization,
                regularization_strength=eps,
                method=method,
            )

        out, jv = jax.jvp(f, (x,), (v,))
        _, pullback = jax.vjp(f, x)
        return out, jv, pullback(u)[0]

    return jax.jit(run)


CONFIGS = [
    (op, reg, desc)
    for op in ("soft_rank", "soft_sort")
    for reg in ("l2", "kl")
    for desc in (False, True)
]


@pytest.mark.parametrize("method", ["sequential", pytest.param("parallel", marks=pytest.mark.slow)])
@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: f"{c[0]}-{c[1]}-{'desc' if c[2] else 'asc'}"
)
def test_soft_sort_rank_reference(config, method):
    """Rows of cases that share a config and a length are stacked into one batched call.

    Each row gets its own strength (a per-row `regularization_strength` array), so the batch
    also checks that rows are processed independently.
    """
    cases = _cases("soft_sort_rank_ref.npz")
    assert len(cases) == 672
    cases = [
        (meta, arr)
        for meta, arr in cases
        if (meta["op"], meta["regularization"], meta["direction"] == "DESCENDING") == config
    ]
    assert len(cases) == 84
    groups = collections.defaultdict(list)
    for meta, arr in cases:
        key = (
            meta["op"],
            meta["regularization"],
            meta["direction"] == "DESCENDING",
            arr["x"].shape[1],
        )
        groups[key].append((meta, arr))
    n_grad = 0
    for (op_name, reg, descending, _), group in groups.items():
        cat = {
            k: np.concatenate([arr[k] for _, arr in group])
            for k in ("x", "out", "u", "v", "vjp", "jvp")
        }
        eps = np.concatenate(
            [np.full(arr["x"].shape[0], meta["regularization_strength"]) for meta, arr in group]
        )
        unique = np.concatenate(
            [np.full(arr["x"].shape[0], meta["grad_unique"]) for meta, arr in group]
        )
        out, jv, vj = _evaluator(op_name, reg, descending, method)(
            cat["x"], eps, cat["v"], cat["u"]
        )
        what = f"{op_name} {reg} descending={descending}"
        _assert_close(out, cat["out"], f"out {what}")
        _assert_close(np.asarray(jv)[unique], cat["jvp"][unique], f"jvp {what}")
        _assert_close(np.asarray(vj)[unique], cat["vjp"][unique], f"vjp {what}")
        n_grad += sum(meta["grad_unique"] for meta, _ in group)
    assert n_grad == (84 if config[0] == "soft_rank" else 84 - 18)


def test_isotonic_reference():
    cases = _cases("isotonic_ref.npz")
    assert len(cases) == 20
    for meta, arr in cases:
        op = softops.isotonic_l2 if meta["regularization"] == "l2" else softops.isotonic_kl
        s, w = jnp.asarray(arr["s"]), jnp.asarray(arr["w"])
        _assert_close(op(s, w), arr["solution"], f"solution {meta}")
        _, jv = jax.jvp(lambda s, w=w, op=op: op(s, w), (s,), (jnp.asarray(arr["v"]),))
        _, pullback = jax.vjp(op, s, w)
        vs, vw = pullback(jnp.asarray(arr["u"]))
        _assert_close(jv, arr["jvp_s"], f"jvp_s {meta}")
        _assert_close(vs, arr["vjp_s"], f"vjp_s {meta}")
        _assert_close(vw, arr["vjp_w"], f"vjp_w {meta}")
