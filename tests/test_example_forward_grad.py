"""Smoke tests of examples/forward_gradient_training.py at a tiny size."""

import math
import pathlib

import numpy as np
import pytest

from tests._examples import load_example

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "forward_gradient_training.py"
TINY_LRS = {"backprop": (0.01,), "fgd": (0.001,), "fgd_activity": (0.002,), "fgd_local": (0.01,)}


def _load():
    return load_example("forward_gradient_training")


@pytest.mark.slow
def test_run_tiny_writes_nothing_without_out(tmp_path, monkeypatch, float32_default):
    monkeypatch.chdir(tmp_path)
    images = EXAMPLE.parents[1] / "docs" / "images"
    before = {p.name: p.stat().st_mtime_ns for p in images.iterdir()}
    example = _load()
    res = example.run(steps=60, chunk=20, lrs=TINY_LRS, progress=False)
    assert "plot" not in res and list(tmp_path.iterdir()) == []
    assert {p.name: p.stat().st_mtime_ns for p in images.iterdir()} == before
    assert res["dataset"] == "digits" and res["seeds"] == 1
    for method in example.METHODS:
        assert res[f"lr_{method}"] == TINY_LRS[method][0]
        curve = res["curves"][method]
        assert len(curve) == 4  # initial point + 3 chunks
        times = [t for t, *_ in curve]
        assert times == sorted(times) and times[0] == 0.0
        assert 0.0 <= res[f"test_acc_{method}"] <= 1.0
        assert res[f"step_cost_ratio_{method}"] > 0
    for method in ("backprop", "fgd_local"):  # both lower the training loss in 60 steps
        assert res["curves"][method][-1][2] < 0.5 * res["curves"][method][0][2]
    assert res["test_acc_backprop"] > 0.8 and res["test_acc_fgd_local"] > 0.5
    # Backprop reaches its own target (its final accuracy minus a point) by construction.
    assert math.isfinite(res["time_to_target_s_backprop"]) and res["time_ratio_backprop"] == 1.0
    assert "| FGD, activity-perturbed + local losses |" in example.report(res)
    # The plot, into the folder the user names (or at the .png path the showcase names).
    out = tmp_path / "report"
    assert example.plot_path(out, "digits") == out / "forward_grad_digits.png"
    assert example.plot_path(out / "a.png", "digits") == out / "a.png"
    path = example.plot(res, example.METHODS, example.plot_path(out, "digits"))
    assert path.stat().st_size > 1000 and [p.name for p in out.iterdir()] == [path.name]


@pytest.mark.slow
def test_run_mnist_npz_path(tmp_path, float32_default):
    # A synthetic stand-in with MNIST's file layout (uint8 28x28 images); no download.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 300)
    x = (rng.random((300, 28, 28)) * 60).astype(np.uint8)
    x[np.arange(300), y, :] = 255  # a learnable pattern: the bright row is the label
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    res = _load().run(
        steps=40,
        chunk=20,
        lrs=TINY_LRS,
        mnist=str(path),
        progress=False,
        methods=("backprop", "fgd_local"),
    )
    assert res["dataset"] == "mnist" and "plot" not in res
    assert res["curves"]["fgd_local"][-1][2] < res["curves"]["fgd_local"][0][2]
