"""Float64 reference for small-ε entropic OT: the semi-dual optimality conditions by MINPACK.

In the anchor potentials g (gauge g[-1] = 0) the optimal plan of entropic OT is
P_ij = a_i softmax_j((g_j - C_ij) / eps), and g solves b_j - sum_i P_ij = 0 for j < m - 1
(the stationarity of the semi-dual; Cuturi & Peyré, Computational Optimal Transport, 2019, §4.6).
Sinkhorn needs O(1/eps) iterations; this reference solves those m - 1 equations with SciPy's
Powell hybrid method (``scipy.optimize.root``, MINPACK ``hybrj``), ε halved from max(C) with warm
starts, so it checks the Newton kernel where ``sinkhorn_ref`` is too slow.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import root
from scipy.special import softmax


def semidual_ref(cost, a, b, eps, tol=1e-12):
    """Returns (plan, g) with g[-1] = 0 for one problem (cost [n, m], a [n], b [m])."""
    cost, a, b = (np.asarray(v, np.float64) for v in (cost, a, b))
    scale = float(np.max(cost)) or 1.0
    g = np.zeros(cost.shape[1] - 1)

    def equations(g_free, e):
        pi = softmax((np.append(g_free, 0.0)[None, :] - cost) / e, axis=1)
        col = a @ pi
        jac = (np.diag(col) - (pi * a[:, None]).T @ pi) / e
        return (b - col)[:-1] / b[:-1], -jac[:-1, :-1] / b[:-1, None]

    levels = [scale * 2.0**-i for i in range(200) if scale * 2.0**-i > eps] + [eps]
    for e in levels:
        g = root(equations, g, args=(e,), jac=True, method="hybr", options={"xtol": 1e-15}).x
    plan = a[:, None] * softmax((np.append(g, 0.0)[None, :] - cost) / eps, axis=1)
    if np.abs(plan.sum(0) - b).sum() > tol:
        raise RuntimeError("reference semi-dual did not converge")
    return plan, np.append(g, 0.0)
