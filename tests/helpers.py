"""Shared test helpers: tolerances, finite differences and the derivative battery."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

# float64 tolerances used across the suite.
RTOL64 = 1e-8
ATOL64 = 1e-8
# float32 tolerance for comparisons against float64 references.
RTOL32 = 2e-4


def fd_jvp(f, x, v, eps=1e-6):
    """Central finite-difference directional derivative of ``f`` at ``x`` along ``v`` (float64)."""
    x = np.asarray(x, np.float64)
    v = np.asarray(v, np.float64)
    return (np.asarray(f(x + eps * v)) - np.asarray(f(x - eps * v))) / (2 * eps)


def derivative_battery(f, x, *, order=2, atol=1e-5, rtol=1e-5, eps=1e-6, seed=0):
    """The STYLE.md battery for one op at one float64 point ``x``.

    - ``check_grads`` in forward and reverse mode against finite differences;
    - JVP vs VJP consistency: ``<u, J v> == <J^T u, v>``;
    - ``jit`` gives the same value and JVP as eager.
    """
    x = jnp.asarray(x, jnp.float64)
    check_grads(f, (x,), order=order, modes=("fwd", "rev"), atol=atol, rtol=rtol, eps=eps)
    rng = np.random.default_rng(seed)
    v = jnp.asarray(rng.standard_normal(x.shape))
    y, jv = jax.jvp(f, (x,), (v,))
    u = jnp.asarray(rng.standard_normal(np.shape(y)))
    _, vjp = jax.vjp(f, x)
    (ju,) = vjp(u)
    np.testing.assert_allclose(jnp.vdot(u, jv), jnp.vdot(ju, v), rtol=1e-10, atol=1e-10)
    yj, jvj = jax.jit(lambda x, v: jax.jvp(f, (x,), (v,)))(x, v)
    np.testing.assert_allclose(yj, f(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(jvj, jv, rtol=1e-10, atol=1e-10)


# Public names with no derivative of their own to check, and why.
NOT_OPS = {
    "SinkhornOutput": "a NamedTuple of results",
    "SoftTopKOutput": "a NamedTuple of results",
    "TopKMaskOutput": "a NamedTuple of results",
    "TokenChoiceRouting": "a NamedTuple of results",
    "ExpertChoiceRouting": "a NamedTuple of results",
    "activity_value_and_grad": "a gradient estimator (unbiasedness: tests/test_forward_grad*.py)",
    "forward_value_and_grad": "a gradient estimator (unbiasedness: tests/test_forward_grad.py)",
    "local_value_and_grad": "a gradient estimator (tests/test_forward_grad_local.py)",
    "fgd": "an optax optimizer (tests/test_forward_grad.py)",
    "scale_by_perturbed_dim": "an optax transform (tests/test_forward_grad.py)",
    "perturbed_dim_factor": "a Python float of the dimension",
    "sample_tangents": "random tangents (their law: tests/test_forward_grad.py)",
    "no_tap": "the identity layer wrapper of the activity estimators",
}
