"""The task suite's data and metrics (``softops/showcase/sorting_data.py``, NumPy only).

The sorting and quantile tasks compare softops with diffsort on data this module builds; a
wrong number image, a wrong value or a wrong accuracy would make every recorded table wrong.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

PATH = Path(__file__).resolve().parents[1] / "softops" / "showcase" / "sorting_data.py"


def _module():
    spec = importlib.util.spec_from_file_location("_sorting_data", PATH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _images(rng, count=40, side=3):
    images = rng.random((count, side, side)).astype(np.float32)
    labels = rng.integers(0, 10, count)
    return images, labels


def test_numbers_put_the_four_digits_side_by_side_and_values_read_them():
    sd = _module()
    rng = np.random.default_rng(0)
    images, labels = _images(rng)
    idx = rng.integers(0, len(images), (2, 3, 4))  # 2 sequences of 3 numbers
    x = sd.numbers(images, idx)
    assert x.shape == (2, 3, 3, 12)
    for s in range(2):
        for i in range(3):
            for d in range(4):
                np.testing.assert_array_equal(x[s, i, :, 3 * d : 3 * d + 3], images[idx[s, i, d]])
    v = sd.values(labels, idx)
    want = [[int("".join(str(labels[j]) for j in idx[s, i])) for i in range(3)] for s in range(2)]
    np.testing.assert_array_equal(v, np.array(want, np.float32))


def test_make_writes_distinct_values_from_each_split_only(tmp_path):
    sd = _module()
    rng = np.random.default_rng(1)
    train, test = _images(rng, 30), _images(rng, 20)
    data = sd.make(
        str(tmp_path / "d.npz"), (*train, *test), n=9, seed=0, steps=5, batch=4, num_test=50
    )
    assert data["train_idx"].shape == (5, 4, 9, 4) and data["test_idx"].shape == (50, 9, 4)
    assert data["train_idx"].max() < 30 and data["test_idx"].max() < 20
    for lab, idx in ((train[1], data["train_idx"]), (test[1], data["test_idx"])):
        v = np.sort(sd.values(lab, idx), axis=-1)
        assert np.all(v[..., 1:] > v[..., :-1])  # distinct values: the order is well defined
    with np.load(tmp_path / "d.npz") as f:
        np.testing.assert_array_equal(f["test_idx"], data["test_idx"])


def test_accuracies_count_whole_orders_and_positions():
    sd = _module()
    targets = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    scores = np.array([[10.0, 20.0, 30.0], [20.0, 10.0, 30.0]])  # right; two swapped
    exact, elementwise = sd.accuracies(scores, targets)
    assert exact == 0.5
    assert elementwise == 4 / 6
