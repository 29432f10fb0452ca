"""The task suite's data and metrics (``softops/showcase/sorting_data.py``, NumPy only), and the
top-k task's choice of a strength on a validation split.

The sorting and quantile tasks compare softops with diffsort on data this module builds; a
wrong number image, a wrong value or a wrong accuracy would make every recorded table wrong.
"""

from __future__ import annotations

import numpy as np

from softops.showcase import sorting_data


def _images(rng, count=40, side=3):
    images = rng.random((count, side, side)).astype(np.float32)
    labels = rng.integers(0, 10, count)
    return images, labels


def test_numbers_put_the_four_digits_side_by_side_and_values_read_them():
    rng = np.random.default_rng(0)
    images, labels = _images(rng)
    idx = rng.integers(0, len(images), (2, 3, 4))  # 2 sequences of 3 numbers
    x = sorting_data.numbers(images, idx)
    assert x.shape == (2, 3, 3, 12)
    for s in range(2):
        for i in range(3):
            for d in range(4):
                np.testing.assert_array_equal(x[s, i, :, 3 * d : 3 * d + 3], images[idx[s, i, d]])
    v = sorting_data.values(labels, idx)
    want = [[int("".join(str(labels[j]) for j in idx[s, i])) for i in range(3)] for s in range(2)]
    np.testing.assert_array_equal(v, np.array(want, np.float32))


def test_make_writes_distinct_values_from_each_split_only(tmp_path):
    rng = np.random.default_rng(1)
    train, test = _images(rng, 30), _images(rng, 20)
    data = sorting_data.make(
        str(tmp_path / "d.npz"), (*train, *test), n=9, seed=0, steps=5, batch=4, num_test=50
    )
    assert data["train_idx"].shape == (5, 4, 9, 4) and data["test_idx"].shape == (50, 9, 4)
    assert data["train_idx"].max() < 30 and data["test_idx"].max() < 20
    for lab, idx in ((train[1], data["train_idx"]), (test[1], data["test_idx"])):
        v = np.sort(sorting_data.values(lab, idx), axis=-1)
        assert np.all(v[..., 1:] > v[..., :-1])  # distinct values: the order is well defined
    with np.load(tmp_path / "d.npz") as f:
        np.testing.assert_array_equal(f["test_idx"], data["test_idx"])


def test_accuracies_count_whole_orders_and_positions():
    targets = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    scores = np.array([[10.0, 20.0, 30.0], [20.0, 10.0, 30.0]])  # right; two swapped
    exact, elementwise = sorting_data.accuracies(scores, targets)
    assert exact == 0.5
    assert elementwise == 4 / 6


def test_tuned_picks_the_best_validation_score_and_reports_its_test_run(monkeypatch):
    # `topk_task.tuned` trains each strength on four fifths of the training set, scores it on
    # the held-out fifth (disjoint, drawn by seed) and returns the test run of the best one.
    from softops.showcase import topk_task

    val_scores = {0.01: 0.5, 0.03: 0.9, 0.1: 0.9, 0.3: 0.2}  # a tie: the first best wins
    calls = []

    def fake_train(loss, data, seed, *, steps, strength=None):
        xtr, ytr, xev, yev = data
        calls.append((strength, len(xtr), len(xev), set(xtr[:, 0]), set(xev[:, 0])))
        score = val_scores.get(strength, 0.5) if len(xev) == 20 else 0.77  # 20: validation
        return {"top1": score, "top5": 1.0, "max_abs_logit": 1.0}

    monkeypatch.setattr(topk_task, "train", fake_train)
    xtr = np.arange(100, dtype=np.float32)[:, None]
    data = (xtr, np.zeros(100, np.int32), np.zeros((7, 1), np.float32), np.zeros(7, np.int32))
    got = topk_task.tuned("rank_k1", data, 0, steps=1, metric="top1")
    assert got["strength"] == 0.03 and got["val"] == 0.9 and got["top1"] == 0.77
    assert [c[0] for c in calls] == [*topk_task.GRID, 0.03]
    for _, n_fit, n_eval, fit, held in calls[:-1]:
        assert (n_fit, n_eval) == (80, 20) and not fit & held and len(fit | held) == 100
    assert calls[-1][1:3] == (80, 7)  # the chosen strength, tested on the test set
    # cross-entropy has no strength: one validation run and one test run
    calls.clear()
    assert topk_task.tuned("cross_entropy", data, 0, steps=1, metric="top1")["strength"] is None
    assert [c[0] for c in calls] == [None, None]
