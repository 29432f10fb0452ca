"""Float64 NumPy references for softops._ot.permutation, written from the definitions.

Hard quantile normalization and quantization (the ε → 0 limits, which are also the limits of
ott-jax's operators), and the soft versions built from a plain-Python PAV (Blondel et al., 2020).
"""

from __future__ import annotations

import numpy as np

from tests._np_reference import pav_decreasing


def target_quantiles(targets, weights, n):
    """w_i = n * integral of the targets' quantile function over [(i-1)/n, i/n] (i = 1..n)."""
    order = np.argsort(targets, kind="stable")
    t = np.asarray(targets, np.float64)[order]
    w = np.asarray(weights, np.float64)[order]
    w = w / w.sum()
    edges = np.concatenate([[0.0], np.cumsum(w)])
    out = np.zeros(n)
    for i in range(n):
        lo, hi = i / n, (i + 1) / n
        for j in range(len(t)):  # overlap of [lo, hi] with target j's interval
            overlap = max(0.0, min(hi, edges[j + 1]) - max(lo, edges[j]))
            out[i] += n * overlap * t[j]
    return out


def projection_l2(z, w):
    """Euclidean projection of z onto the permutahedron of w (PAV on the sorted vectors)."""
    z = np.asarray(z, np.float64)
    order = np.argsort(-z, kind="stable")
    w_desc = np.sort(np.asarray(w, np.float64))[::-1]
    out = np.empty_like(z)
    out[order] = z[order] - pav_decreasing(z[order], w_desc, "l2")
    return out


def binned(x, levels):
    """Hard equal-mass quantization of sorted x: V_p = mean of the bin levels over position p."""
    s = np.sort(np.asarray(x, np.float64))
    n = len(s)
    # overlap[p, l] = n * |[p/n, (p+1)/n] cap [l/L, (l+1)/L]|: rows sum to 1, columns to n/L
    overlap = np.zeros((n, levels))
    for p in range(n):
        for lv in range(levels):
            lo, hi = max(p / n, lv / levels), min((p + 1) / n, (lv + 1) / levels)
            overlap[p, lv] = n * max(0.0, hi - lo)
    level = overlap.T @ s * levels / n
    return overlap @ level


def quantize(x, levels, eps):
    """The projection of x / eps onto the permutahedron of the hard-quantized sorted values."""
    return projection_l2(np.asarray(x) / eps, binned(x, levels))


def hard_quantize(x, levels):
    """Each item gets V at its rank; tied items share the mean of V over their positions."""
    x = np.asarray(x, np.float64)
    v = binned(x, levels)
    s = np.sort(x)
    out = np.empty_like(x)
    for i, xi in enumerate(x):
        out[i] = v[s == xi].mean()
    return out


def hard_quantile_normalization(x, targets, weights):
    x = np.asarray(x, np.float64)
    w = target_quantiles(targets, weights, len(x))
    s = np.sort(x)
    return np.array([w[s == xi].mean() for xi in x])


def quantile_normalization(x, targets, weights, eps):
    """The projection of x / eps onto the permutahedron of the n target quantiles."""
    return projection_l2(np.asarray(x) / eps, target_quantiles(targets, weights, len(x)))
