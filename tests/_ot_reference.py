"""Float64 NumPy reference for entropic-OT top-k, written from Xie et al. (2020), arXiv:2002.06504.

Plain log-domain Sinkhorn run to convergence, and the paper's top-k operators built on it:
anchors {0, 1} (mask) or k, k-1, ..., 0 (sorted), cost (x - y)^2 divided by its maximum.
"""

from __future__ import annotations

import numpy as np


def _lse(z, axis):
    zmax = np.max(z, axis=axis, keepdims=True)
    zmax = np.where(np.isfinite(zmax), zmax, 0.0)
    out = np.log(np.sum(np.exp(z - zmax), axis=axis, keepdims=True)) + zmax
    return np.squeeze(out, axis=axis)


def sinkhorn_ref(cost, a, b, eps, tol=1e-13, max_iter=200_000):
    """Returns (plan, f, g) with g[-1] = 0 for one problem; raises if it does not converge."""
    cost = np.asarray(cost, np.float64)
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    with np.errstate(divide="ignore"):
        log_a, log_b = np.log(a), np.log(b)
    f = np.zeros(cost.shape[0])
    g = np.zeros(cost.shape[1])
    for _ in range(max_iter):
        f = eps * log_a - eps * _lse((g[None, :] - cost) / eps, axis=1)
        g = eps * log_b - eps * _lse((f[:, None] - cost) / eps, axis=0)
        f = eps * log_a - eps * _lse((g[None, :] - cost) / eps, axis=1)
        plan = np.exp((f[:, None] + g[None, :] - cost) / eps)
        if np.abs(plan.sum(axis=0) - b).sum() <= tol:
            break
    else:
        raise RuntimeError("reference Sinkhorn did not converge")
    f, g = f + g[-1], g - g[-1]
    return np.exp((f[:, None] + g[None, :] - cost) / eps), f, g


def topk_mask_ref(x, k, eps, largest=True):
    """The paper's soft top-k mask of one row: anchors {0, 1}, C / max C, A = n Gamma[:, sel]."""
    x = np.asarray(x, np.float64)
    n = x.size
    anchors = np.array([0.0, 1.0])
    cost = (x[:, None] - anchors[None, :]) ** 2
    cost = cost / cost.max()
    sel = k / n
    b = np.array([1 - sel, sel]) if largest else np.array([sel, 1 - sel])
    plan, _, _ = sinkhorn_ref(cost, np.full(n, 1 / n), b, eps)
    return n * plan[:, 1 if largest else 0]


def soft_topk_ref(x, k, eps, largest=True):
    """The paper's sorted soft top-k of one row: returns (values [k], assignment [k, n])."""
    x = np.asarray(x, np.float64)
    n = x.size
    m = k + 1 if k < n else k
    anchors = np.arange(k, k - m, -1.0) if largest else np.arange(m, dtype=np.float64)
    cost = (x[:, None] - anchors[None, :]) ** 2
    cost = cost / cost.max()
    b = np.full(m, 1 / n)
    if m > k:
        b[k] = (n - k) / n
    plan, _, _ = sinkhorn_ref(cost, np.full(n, 1 / n), b, eps)
    assignment = n * plan[:, :k].T
    return assignment @ x, assignment
