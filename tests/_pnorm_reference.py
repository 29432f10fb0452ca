"""Float64 NumPy reference of the p-norm permutahedron projections (Sander et al., 2023).

Written from the math, independently of ``softops._isotonic.pnorm``: the decreasing isotonic
problem ``min_v sum |z_i - v_i|^q / q + w_i v_i`` by stack PAV, each block's value found by
bisection on its monotone optimality condition ``sum phi(z_i - v) = sum w_i`` (200 halvings:
to the last bit of float64), and the projection ``mu = phi(z - v)``, ``phi(t) = sign(t) |t|^r``.
"""

import numpy as np

POWERS = {"p=3/2": 2, "p=4/3": 3}


def _phi(t, r):
    return np.sign(t) * np.abs(t) ** r


def _block_value(z, w, r):
    total = w.sum()
    reach = (abs(total) / len(z)) ** (1 / r) + 1
    lo, hi = z.min() - reach, z.max() + reach  # F(lo) >= 0 >= F(hi)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _phi(z - mid, r).sum() > total:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _isotonic(z, w, r):
    blocks = []  # [start, end, value]
    for i in range(len(z)):
        blocks.append([i, i + 1, _block_value(z[i : i + 1], w[i : i + 1], r)])
        while len(blocks) > 1 and blocks[-2][2] <= blocks[-1][2]:
            start, end = blocks[-2][0], blocks[-1][1]
            blocks[-2:] = [[start, end, _block_value(z[start:end], w[start:end], r)]]
    v = np.empty(len(z))
    for start, end, value in blocks:
        v[start:end] = value
    return v


def projection(z, w, regularization):
    """``argmax_{mu in P(w)} <z, mu> - sum |mu|^p / p`` of one row."""
    r = POWERS[regularization]
    z, w = np.asarray(z, np.float64), np.sort(np.asarray(w, np.float64))[::-1]
    perm = np.argsort(-z, kind="stable")
    out = np.empty_like(z)
    out[perm] = _phi(z[perm] - _isotonic(z[perm], w, r), r)
    return out


def soft_rank(x, eps, regularization):
    """Ascending soft ranks: the projection of ``x / eps`` onto the permutahedron of (n, ..., 1)."""
    n = len(x)
    return projection(np.asarray(x) / eps, np.arange(n, 0, -1.0), regularization)


def soft_sort(x, eps, regularization, descending=False):
    """The projection of ``rho / eps`` onto the permutahedron of ``x`` (negated for ascending)."""
    n = len(x)
    sign = 1.0 if descending else -1.0
    out = projection(np.arange(n, 0, -1.0) / eps, sign * np.asarray(x), regularization)
    return sign * out
