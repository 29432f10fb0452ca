"""diffsort's side of ``sorting.py``: the same scorer in PyTorch, trained with ``DiffSortNet``.

Run by ``sorting.py`` in an interpreter that has torch and diffsort (``pip install
torch==2.13.0 diffsort``; not softops' extras: diffsort pulls a PyTorch build of several GB):

    python sorting_torch.py DATA.npz --steps N --lr LR --seed S --steepness S --evals 10 20

Prints one JSON line: ``{"evals": [[step, exact, elementwise], ...], "versions": {...}}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def _sorting_data():
    """``softops/showcase/sorting_data.py`` by its path (NumPy only; importing the package would
    import JAX, which this interpreter need not have)."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "..", "softops", "showcase", "sorting_data.py")
    spec = importlib.util.spec_from_file_location("sorting_data", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


sorting_data = _sorting_data()

CHANNELS = (8, 16)
HIDDEN = 64


class Scorer(nn.Module):
    def __init__(self, side: int):
        super().__init__()
        self.conv0 = nn.Conv2d(1, CHANNELS[0], 3, padding=1)
        self.conv1 = nn.Conv2d(CHANNELS[0], CHANNELS[1], 3, padding=1)
        flat = CHANNELS[1] * (side // 4) * (sorting_data.DIGITS * side // 4)
        self.fc0 = nn.Linear(flat, HIDDEN)
        self.fc1 = nn.Linear(HIDDEN, 1)

    def forward(self, x):  # [..., n, s, 4s] -> [..., n]
        lead = x.shape[:-2]
        h = x.reshape(-1, 1, *x.shape[-2:])
        h = F.max_pool2d(F.relu(self.conv0(h)), 2)
        h = F.max_pool2d(F.relu(self.conv1(h)), 2)
        h = F.relu(self.fc0(h.flatten(1)))
        return self.fc1(h).reshape(lead)


def main():
    import diffsort

    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--steepness", type=float, required=True)
    p.add_argument("--evals", type=int, nargs="+", required=True)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    with np.load(a.data) as f:
        data = {k: f[k] for k in f.files}
    n = data["train_idx"].shape[2]
    model = Scorer(data["train_images"].shape[-1])
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    sorter = diffsort.DiffSortNet("odd_even", n, steepness=a.steepness)
    test_x = torch.from_numpy(sorting_data.numbers(data["test_images"], data["test_idx"]))
    test_v = sorting_data.values(data["test_labels"], data["test_idx"])
    evals = []
    for t in range(a.steps):
        idx = data["train_idx"][t]
        x = torch.from_numpy(sorting_data.numbers(data["train_images"], idx))
        v = torch.from_numpy(sorting_data.values(data["train_labels"], idx))
        _, perm = sorter(model(x))
        true = F.one_hot(torch.argsort(v, dim=-1), n).transpose(-2, -1).float()
        loss = F.binary_cross_entropy(perm, true)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if t + 1 in a.evals:
            with torch.no_grad():
                s = model(test_x).numpy()
            evals.append([t + 1, *sorting_data.accuracies(s, test_v)])
    versions = {"torch": torch.__version__, "diffsort": _version("diffsort")}
    print(json.dumps({"evals": evals, "versions": versions}))


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
