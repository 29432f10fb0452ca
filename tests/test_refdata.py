"""Every case of the shared float64 reference data: outputs, JVPs and VJPs to 1e-8 relative."""

import collections
import functools
import os
from pathlib import Path

import jax
import numpy as np
import pytest

import softops
from tests._marks import slow_where

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
def _evaluator(op_name, regularization, descending, method, masked):
    """One jitted function per static config: outputs, JVPs and VJPs of a stack of rows."""
    op = getattr(softops, op_name)

    def run(x, eps, v, u, where):
        def f(x):
            return op(
                x,
                descending=descending,
                regularization=regularization,
                regularization_strength=eps,
                where=where if masked else None,
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
# Descending is a negation of the scores around the same kernels (checked in the fast pass against
# the NumPy reference by test_projection.py::test_matches_numpy_reference); its reference cases
# run in the slow pass.
CONFIG_PARAMS = slow_where(CONFIGS, lambda c: c[2])


def _stack(group, width):
    """The cases' rows padded to ``width`` items (masked), with per-row strengths and flags."""
    cat = {}
    for k in ("x", "out", "u", "v", "vjp", "jvp"):
        rows = [np.pad(arr[k], [(0, 0), (0, width - arr[k].shape[1])]) for _, arr in group]
        cat[k] = np.concatenate(rows)
    lengths = np.concatenate([np.full(arr["x"].shape[0], arr["x"].shape[1]) for _, arr in group])
    where = np.arange(width)[None, :] < lengths[:, None]
    eps = np.concatenate(
        [np.full(arr["x"].shape[0], meta["regularization_strength"]) for meta, arr in group]
    )
    unique = np.concatenate(
        [np.full(arr["x"].shape[0], meta["grad_unique"]) for meta, arr in group]
    )
    return cat, where, eps, unique


@pytest.mark.parametrize("method", ["sequential", pytest.param("parallel", marks=pytest.mark.slow)])
@pytest.mark.parametrize(
    "config", CONFIG_PARAMS, ids=lambda c: f"{c[0]}-{c[1]}-{'desc' if c[2] else 'asc'}"
)
def test_soft_sort_rank_reference(config, method):
    """All 84 cases of a config in one call: rows padded to the longest with ``where=`` masks
    (the valid items of a row are processed exactly as the row alone), plus the cases of the most
    common length without a mask. Each row gets its own strength (per-row strength array)."""
    cases = _cases("soft_sort_rank_ref.npz")
    assert len(cases) == 672
    cases = [
        (meta, arr)
        for meta, arr in cases
        if (meta["op"], meta["regularization"], meta["direction"] == "DESCENDING") == config
    ]
    assert len(cases) == 84
    op_name, reg, descending = config
    width = max(arr["x"].shape[1] for _, arr in cases)
    by_length = collections.Counter(arr["x"].shape[1] for _, arr in cases)
    common = by_length.most_common(1)[0][0]
    for masked, group in (
        (True, cases),
        (False, [c for c in cases if c[1]["x"].shape[1] == common]),
    ):
        cat, where, eps, unique = _stack(group, width if masked else common)
        out, jv, vj = _evaluator(op_name, reg, descending, method, masked)(
            cat["x"], eps, cat["v"], cat["u"], where
        )
        what = f"{op_name} {reg} descending={descending} masked={masked}"
        valid = where[unique]
        _assert_close(np.asarray(out)[where], cat["out"][where], f"out {what}")
        _assert_close(np.asarray(jv)[unique][valid], cat["jvp"][unique][valid], f"jvp {what}")
        _assert_close(np.asarray(vj)[unique][valid], cat["vjp"][unique][valid], f"vjp {what}")
        if masked:
            assert not np.any(np.asarray(out)[~where]), "masked outputs must be exactly 0"
            n_grad = sum(meta["grad_unique"] for meta, _ in group)
            assert n_grad == (84 if op_name == "soft_rank" else 84 - 18)


def _pad_decreasing(s, w, width):
    """Appends items to decreasing isotonic problems that can never pool with the given ones.

    The tail's targets (s - w, or s for kl with w = 0) are strictly decreasing and below every
    target of the row, so each tail item is its own block and leaves the other blocks alone.
    """
    pad = width - s.shape[1]
    low = np.min(s - w, axis=1, keepdims=True) - 1.0 - np.arange(pad)[None, :]
    return np.concatenate([s, low], axis=1), np.concatenate([w, np.zeros_like(low)], axis=1)


@pytest.mark.parametrize("reg", ["l2", "kl"])
def test_isotonic_reference(reg):
    cases = [c for c in _cases("isotonic_ref.npz") if c[0]["regularization"] == reg]
    assert len(cases) == 10
    op = softops.isotonic_l2 if reg == "l2" else softops.isotonic_kl
    width = max(arr["s"].shape[1] for _, arr in cases)

    def padded(k):
        return np.concatenate(
            [np.pad(arr[k], [(0, 0), (0, width - arr[k].shape[1])]) for _, arr in cases]
        )

    s, w = zip(*(_pad_decreasing(arr["s"], arr["w"], width) for _, arr in cases))
    s, w = np.concatenate(s), np.concatenate(w)
    valid = np.concatenate(
        [
            np.arange(width)[None, :] < np.full((arr["s"].shape[0], 1), arr["s"].shape[1])
            for _, arr in cases
        ]
    )

    @jax.jit
    def run(s, w, v, u):
        sol, jv = jax.jvp(lambda s: op(s, w), (s,), (v,))
        _, pullback = jax.vjp(op, s, w)
        return sol, jv, *pullback(u)

    sol, jv, vs, vw = run(s, w, padded("v"), padded("u"))
    _assert_close(np.asarray(sol)[valid], padded("solution")[valid], f"solution {reg}")
    _assert_close(np.asarray(jv)[valid], padded("jvp_s")[valid], f"jvp_s {reg}")
    _assert_close(np.asarray(vs)[valid], padded("vjp_s")[valid], f"vjp_s {reg}")
    _assert_close(np.asarray(vw)[valid], padded("vjp_w")[valid], f"vjp_w {reg}")
