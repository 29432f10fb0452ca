"""The sorting-supervision data (NumPy only: the JAX and the PyTorch trainers both read it).

The PyTorch trainer, ``benchmarks/tasks/_sorting_torch.py``, loads this file by its path.

A *number* is four digit images side by side (an ``s x 4s`` image, ``s`` the digit side: 8 for
scikit-learn's digits, 28 for MNIST) whose value is the four labels read as a decimal number. A
*sequence* is ``n`` numbers with distinct values; its target is their order. The training
numbers are made only of training-split digit images, the test numbers only of test-split ones,
so that no test image was seen in training.

``make(path, ...)`` writes everything both trainers need into one ``.npz``: the two image pools
and their labels, the training batches (one array of image indices ``[steps, batch, n, 4]``)
and the test sequences (``[num_test, n, 4]``). ``numbers(images, idx)`` and
``values(labels, idx)`` assemble the inputs and targets from them.
"""

from __future__ import annotations

import numpy as np

DIGITS = 4


def _sequences(rng, labels: np.ndarray, count: int, n: int) -> np.ndarray:
    """``[count, n, 4]`` image indices, resampled until every sequence's values are distinct."""
    idx = rng.integers(0, len(labels), size=(count, n, DIGITS))
    while True:
        v = np.sort(values(labels, idx), axis=-1)
        bad = np.any(v[:, 1:] == v[:, :-1], axis=-1)
        if not bad.any():
            return idx
        idx[bad] = rng.integers(0, len(labels), size=(int(bad.sum()), n, DIGITS))


def values(labels: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The numbers' values ``[..., n]`` (float32) from their digit-image indices ``[..., n, 4]``."""
    place = 10 ** np.arange(DIGITS - 1, -1, -1)
    return (labels[idx] * place).sum(-1).astype(np.float32)


def numbers(images: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The number images ``[..., n, s, 4 s]`` from digit images ``[m, s, s]`` and indices."""
    x = images[idx]  # [..., n, 4, s, s]
    x = np.moveaxis(x, -3, -2)  # [..., n, s, 4, s]
    return x.reshape(*x.shape[:-3], x.shape[-3], DIGITS * x.shape[-1])


def make(path: str | None, images, *, n: int, seed: int, steps: int, batch: int, num_test: int):
    """The data of one (n, seed) run as a dict, also written to ``path`` (``.npz``) unless None.

    ``images``: ``(train_images, train_labels, test_images, test_labels)``, images ``[m, s, s]``.
    """
    xtr, ytr, xte, yte = images
    rng = np.random.default_rng([seed, n])
    data = {
        "train_images": xtr,
        "train_labels": ytr,
        "test_images": xte,
        "test_labels": yte,
        "train_idx": _sequences(rng, ytr, steps * batch, n).reshape(steps, batch, n, DIGITS),
        "test_idx": _sequences(rng, yte, num_test, n),
    }
    if path is not None:  # for a trainer in another process (diffsort's)
        np.savez(path, **data)
    return data


def accuracies(scores: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """Exact-match and element-wise accuracy of ``argsort(scores)`` against ``argsort(targets)``.

    Exact match: the share of rows whose whole order is right; element-wise: the share of
    positions holding the right number.
    """
    right = np.argsort(scores, axis=-1) == np.argsort(targets, axis=-1)
    return float(right.all(-1).mean()), float(right.mean())
