"""Small float64 NumPy references written from Blondel et al. (2020), for the tests only."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp


def pav_decreasing(s, w, regularization):
    """Stack PAV for one row: l2 solves min ½‖v − (s − w)‖², kl the entropic problem."""
    blocks = []  # [first, last] index ranges
    for i in range(len(s)):
        blocks.append([i, i])
        while len(blocks) >= 2 and _value(s, w, blocks[-2], regularization) <= _value(
            s, w, blocks[-1], regularization
        ):
            last = blocks.pop()
            blocks[-1][1] = last[1]
    out = np.empty(len(s))
    for lo, hi in blocks:
        out[lo : hi + 1] = _value(s, w, (lo, hi), regularization)
    return out


def _value(s, w, block, regularization):
    lo, hi = block
    if regularization == "l2":
        return np.mean(s[lo : hi + 1] - w[lo : hi + 1])
    return logsumexp(s[lo : hi + 1]) - logsumexp(w[lo : hi + 1])


def soft_rank(x, eps, regularization="l2", descending=False):
    """Soft rank of one row: the projection of ±x/eps onto the permutahedron of (n, …, 1)."""
    theta = (-x if descending else x) / eps
    n = len(x)
    perm = np.argsort(-theta, kind="stable")
    ts = theta[perm]
    w = np.arange(n, 0, -1.0)
    if regularization == "l2":
        out_sorted = ts - pav_decreasing(ts, w, "l2")
    else:
        out_sorted = np.exp(ts - pav_decreasing(ts, np.log(w), "kl"))
    out = np.empty(n)
    out[perm] = out_sorted
    return out


def soft_sort(x, eps, regularization="l2", descending=False):
    """Soft sort of one row (the reference definition; see softops.projection)."""
    sign = 1.0 if descending else -1.0
    s = np.sort(sign * x)[::-1]
    w = np.arange(len(x), 0, -1.0) / eps
    return sign * (w - pav_decreasing(w, s, regularization))


def all_pairs_soft_rank(x, eps):
    """The O(n²) baseline: rank_i = 1 + Σ_j sigmoid((x_i − x_j)/eps) − 1/2 (Qin et al. 2010)."""
    d = (x[:, None] - x[None, :]) / eps
    return 0.5 + np.sum(1.0 / (1.0 + np.exp(-d)), axis=1)
