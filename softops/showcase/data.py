"""Data for the showcase and the examples: scikit-learn's digits, or a local MNIST ``.npz``.

Nothing is downloaded: the digits (8x8, 1,797 images) ship with scikit-learn; ``mnist`` is the
path of an ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test`` that you already have.
"""

from __future__ import annotations

import numpy as np


def load_data(
    mnist: str | None = None,
    *,
    seed: int = 0,
    test_size: float = 0.25,
    max_train: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Returns float32 ``(x_train, y_train, x_test, y_test)``, features in [0, 1], int32 labels.

    Args:
        mnist: path of a local MNIST ``.npz`` (uint8 pixels in [0, 255] or floats in [0, 1]);
            ``None`` for scikit-learn's digits.
        seed: the digits' stratified train/test split.
        test_size: the digits' test fraction.
        max_train: keep only the first ``max_train`` training examples.
    """
    if mnist is not None:
        with np.load(mnist) as f:
            xtr, ytr, xte, yte = (f[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        scale = 255.0 if xtr.max() > 1.5 else 1.0
        xtr = xtr.reshape(len(xtr), -1).astype(np.float32) / np.float32(scale)
        xte = xte.reshape(len(xte), -1).astype(np.float32) / np.float32(scale)
    else:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype(np.float32)
        xtr, xte, ytr, yte = train_test_split(
            x, y, test_size=test_size, random_state=seed, stratify=y
        )
    if max_train is not None:
        xtr, ytr = xtr[:max_train], ytr[:max_train]
    return xtr, np.asarray(ytr, np.int32), xte, np.asarray(yte, np.int32)


def digit_images(mnist: str | None = None, *, seed: int = 0):
    """``(train_images, train_labels, test_images, test_labels)``, images ``[m, s, s]``.

    scikit-learn's digits (a stratified 70/30 split per ``seed``) or a local MNIST ``.npz``.
    """
    xtr, ytr, xte, yte = load_data(mnist, seed=seed, test_size=0.3)
    side = int(round(np.sqrt(xtr.shape[1])))
    return xtr.reshape(-1, side, side), ytr, xte.reshape(-1, side, side), yte
