"""Smoke test of examples/forward_gradient_training.py at a tiny size."""

import importlib.util
import math
import pathlib

import pytest

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "forward_gradient_training.py"


def _load():
    spec = importlib.util.spec_from_file_location("forward_gradient_training", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_tiny(tmp_path):
    example = _load()
    out = tmp_path / "forward_grad_test.png"
    res = example.run(quick=True, steps=60, chunk=20, lrs_backprop=(0.3,), lrs_fgd=(0.01,),
                      out=out, progress=False)
    assert res["dataset"] == "digits"
    assert res["lr_backprop"] == 0.3 and res["lr_fgd"] == 0.01
    assert out.exists() and out.stat().st_size > 1000 and res["plot"] == str(out)
    for method in ("backprop", "fgd"):
        curve = res["curves"][method]
        assert len(curve) == 4  # initial point + 3 chunks
        times = [t for t, _, _ in curve]
        assert times == sorted(times) and times[0] == 0.0
        assert curve[-1][2] < curve[0][2]  # both methods lower the training loss
        assert 0.0 <= res[f"test_acc_{method}"] <= 1.0
    assert res["test_acc_backprop"] > 0.5  # far above chance (0.1) after 60 steps
    # The target is reached by construction, by both methods.
    assert math.isfinite(res["time_backprop_s"]) and math.isfinite(res["time_fgd_s"])
    assert math.isclose(res["tf_over_tb"], res["time_fgd_s"] / res["time_backprop_s"])


@pytest.mark.slow
def test_run_mnist_npz_path(tmp_path):
    # A synthetic stand-in with MNIST's file layout (uint8 28x28 images); no download.
    import numpy as np

    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 300)
    x = (rng.random((300, 28, 28)) * 60).astype(np.uint8)
    x[np.arange(300), y, :] = 255  # a learnable pattern: the bright row is the label
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x[:200], y_train=y[:200], x_test=x[200:], y_test=y[200:])
    res = _load().run(steps=40, chunk=20, lrs_backprop=(0.3,), lrs_fgd=(0.01,), mnist=str(path),
                      out="", progress=False)
    assert res["dataset"] == "mnist" and "plot" not in res
    assert res["curves"]["backprop"][-1][2] < res["curves"]["backprop"][0][2]
