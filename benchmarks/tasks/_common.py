"""What the task scripts share: the number images' digit pools, and the recorded-run file."""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from softops.showcase.data import load_data

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _record import run_meta  # noqa: E402


def digit_images(mnist: str | None, seed: int):
    """``(train_images, train_labels, test_images, test_labels)``, images ``[m, s, s]``.

    scikit-learn's digits (a stratified 70/30 split per seed) or a local MNIST ``.npz``.
    """
    xtr, ytr, xte, yte = load_data(mnist, seed=seed, test_size=0.3)
    side = int(round(np.sqrt(xtr.shape[1])))
    return xtr.reshape(-1, side, side), ytr, xte.reshape(-1, side, side), yte


def predict(fn, params, x: np.ndarray, chunks: int = 4) -> np.ndarray:
    """``fn(params, x)`` over ``x``'s leading axis in ``chunks`` pieces (bounded memory)."""
    return np.concatenate([np.asarray(fn(params, c)) for c in np.array_split(x, chunks)])


def write_json(path: str, args, body: dict, *, skip=("json", "mnist"), **meta) -> None:
    """Writes ``{"meta": ..., **body}`` to ``path``.

    The meta: the versions, the machine, ``meta`` and the command-line ``args`` (an
    ``argparse.Namespace``) less ``skip`` (paths of this machine).
    """
    meta = run_meta(**meta, args={k: v for k, v in vars(args).items() if k not in skip})
    with open(path, "w") as f:
        json.dump(dict(meta=meta, **body), f, indent=1)
