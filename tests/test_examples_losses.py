"""Smoke tests of the losses examples at tiny sizes (a few seconds each)."""

import math

import pytest

from tests._examples import load_example


def test_robust_regression_example(float32_default):
    res = load_example("robust_regression").run(quick=True, n=80, steps=120)
    assert res["n_train"] == 80 and res["steps"] == 120
    for key in ("ls_param_error", "lts_param_error", "ls_test_rmse", "lts_test_rmse"):
        assert math.isfinite(res[key])
    # 25% gross leverage outliers: least squares is off by several units, soft LTS is not.
    assert res["ls_param_error"] > 2.0
    assert res["lts_param_error"] < 0.25 * res["ls_param_error"]
    assert res["lts_test_rmse"] < res["ls_test_rmse"]
    assert res["loss_last"] < res["loss_first"]


@pytest.mark.slow
def test_spearman_regression_example(float32_default):
    res = load_example("spearman_regression").run(quick=True, n_train=500, n_test=500, steps=40)
    assert res["steps"] == 40
    soft, mse = res["soft_spearman_test_spearman"], res["mse_test_spearman"]
    assert -1.0 <= mse <= 1.0 and -1.0 <= soft <= 1.0
    assert soft > 0.8  # the latent order is recovered
    assert soft > mse  # MSE chases the skewed, corrupted targets
    assert res["spearman_loss_last"] < res["spearman_loss_first"]


@pytest.mark.slow
def test_topk_classification_example(float32_default):
    res = load_example("topk_classification").run(quick=True, steps=40, report_k=3)
    assert res["steps"] == 40 and res["n_test"] == 540
    for name in ("cross_entropy", "soft_rank", "soft_topk_mask"):
        top1, top3 = res[f"{name}_top1"], res[f"{name}_top3"]
        assert 0.0 <= top1 <= top3 <= 1.0
        assert top1 > 0.5  # far above chance (0.1) after 40 steps
        assert math.isfinite(res[f"{name}_loss_last"])
        assert res[f"{name}_loss_last"] < res[f"{name}_loss_first"]
