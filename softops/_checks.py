"""Trace-time argument checks shared by the public operators.

Every check raises a ``ValueError`` or ``TypeError`` that names the argument and the value it
received, at trace time (shapes, dtypes and Python numbers are static under ``jit``).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def check_choice(value, allowed: Sequence[str], name: str) -> str:
    """Returns ``value`` if it is one of ``allowed``, else raises a ``ValueError``."""
    if not isinstance(value, str) or value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"`{name}` must be one of {choices}, got {name}={value!r}")
    return value


def check_floating(x, name: str) -> jax.Array:
    """Converts ``x`` to an array and checks that its dtype is floating point."""
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a floating-point array, got {name}={x!r}")
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
                f"`{name}` must have a floating-point dtype, got dtype {dtype} "
                f"(cast it first, e.g. {name}.astype(jnp.float32))"
        )
    return jnp.asarray(x)


def compute_dtype(dtype) -> jnp.dtype:
    """The dtype to compute in: float32 for half-precision inputs, else the input's dtype."""
    dtype = jnp.dtype(dtype)
    if dtype.itemsize < 4:
        return jnp.dtype(jnp.float32)
    return dtype


def canonicalize_axis(axis, ndim: int, name: str = "axis") -> int:
    """Returns ``axis`` in ``[0, ndim)``; raises if it is not an int in ``[-ndim, ndim)``."""
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"`{name}` must be an int, got {name}={axis!r}")
    if ndim == 0:
        raise ValueError(
            f"the input must have at least one dimension to use `{name}`, got a scalar"
        )
    if not -ndim <= axis < ndim:
        raise ValueError(
                f"`{name}` must satisfy {-ndim} <= {name} < {ndim} for an input of rank {ndim}, "
                f"got {name}={axis}"
        )
    return int(axis) % ndim


def check_positive(value, name: str):
    """Checks a strength-like argument: a positive Python number, or any float array.

    Python numbers (and concrete NumPy scalars) are checked for being finite and positive; traced
    arrays cannot be checked at trace time and are documented to give NaN when not positive.
    """
    if isinstance(value, bool):
        raise TypeError(
            f"`{name}` must be a positive number or a float array, got {name}={value!r}"
        )
    if isinstance(value, numbers.Real):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"`{name}` must be positive and finite, got {name}={value!r}")
        return value
    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.floating) and not jnp.issubdtype(
            value.dtype, jnp.integer
    ):
        raise TypeError(f"`{name}` must be a real number or array, got dtype {value.dtype}")
    return value
