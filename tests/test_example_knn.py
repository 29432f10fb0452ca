"""Smoke test of examples/knn_digits.py at tiny size."""

import math

import pytest

from tests._examples import load_example


@pytest.mark.slow
def test_knn_example_runs_and_reports(float32_default):
    module = load_example("knn_digits")
    res = module.run(quick=True, steps=15, pool=64, batch=32, progress=False)
    assert res["dataset"] == "digits" and res["steps"] == 15 and res["n_test"] == 300
    for key in ("knn_pixels", "knn_soft_topk_embedding", "cross_entropy"):
        assert 0.0 <= res[key] <= 1.0
    assert res["knn_pixels"] > 0.9  # kNN on 8x8 digit pixels is a strong baseline
    assert res["knn_soft_topk_embedding"] > 0.5  # far above chance (0.1) after 15 steps
    assert math.isfinite(res["loss_last"]) and res["loss_last"] < res["loss_first"]
