"""float64 NumPy references for the sparse top-k masks and the p-norm isotonic block values.

Written from the math (Sander et al., 2023, arXiv:2302.01425), independently of the kernels:

- the capped-simplex mask ``y = clip((x - theta) / tau, 0, 1) ** r`` with ``sum y = k``: the
  breakpoints ``{x_i - tau, x_i}`` are sorted, ``F(theta) = sum y - k`` is evaluated at each of
  them, and the root is solved on the piece that brackets it (r = 1: in closed form; r = 2, 3:
  by bisection on that piece, to the last bit). When F vanishes on a whole interval (every entry
  0 or 1), the mask of its midpoint.
"""

from __future__ import annotations

import numpy as np


def g(u, power: int):
    return np.clip(u, 0.0, 1.0) ** power


def sparse_mask(x, k: float, tau: float, power: int) -> tuple[np.ndarray, float]:
    """(mask, theta) of one row ``x`` (1-D, finite) for ``0 <= k <= len(x)``."""
    x = np.asarray(x, np.float64)
    n = x.size
    if k <= 0:
        return np.zeros(n), np.nan
    if k >= n:
        return np.ones(n), np.nan

    def f(t):
        return g((x - t) / tau, power).sum() - k

    points = np.unique(np.concatenate([x, x - tau]))
    values = np.array([f(t) for t in points])  # non-increasing
    i = int(np.nonzero(values >= 0)[0].max())
    if values[i] == 0:  # F = 0 on [points[a], points[i]] (non-increasing): its midpoint
        a = int(np.nonzero(values == 0)[0].min())
        theta = 0.5 * (points[a] + points[i])
        return g((x - theta) / tau, power), theta
    lo, hi = points[i], points[i + 1]
    mid = 0.5 * (lo + hi)
    u = (x - mid) / tau
    inner = (u > 0) & (u < 1)
    c = k - np.sum(u >= 1)
    if power == 1:
        theta = (x[inner].sum() - tau * c) / inner.sum()
    else:
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if (((x[inner] - mid) / tau) ** power).sum() > c:
                lo = mid
            else:
                hi = mid
        theta = 0.5 * (lo + hi)
    return g((x - theta) / tau, power), theta


def hard_mask(x, k: int) -> np.ndarray:
    """The indicator of the k largest entries (distinct values assumed)."""
    out = np.zeros(len(x))
    out[np.argsort(-np.asarray(x), kind="stable")[:k]] = 1.0
    return out
