"""The straight-through estimator every family offers as an explicit option (private).

A straight-through output has the hard op's value and the soft op's derivative. It is never a
default: the derivative is deliberately not the derivative of the returned value (it is the soft
op's at the chosen strength), and each public op documents it as such.
"""

from __future__ import annotations

import jax
from jax import lax


def with_soft_derivative(hard: jax.Array, soft: jax.Array) -> jax.Array:
    """``hard`` in value (exactly: ``soft - stop_gradient(soft)`` is 0), ``soft``'s derivative."""
    return lax.stop_gradient(hard) + (soft - lax.stop_gradient(soft))
