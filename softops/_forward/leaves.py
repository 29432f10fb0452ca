"""The float leaves of a pytree: the ones a forward gradient perturbs (private).

Estimators flatten a parameter tree, work on its real floating-point leaves only
(``float_positions``) and put values back in their places (``replace_at``); the other leaves (ints,
bools, PRNG keys) get the ``float0`` zero tangent ``jax.jvp`` expects (``float0_zeros``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

T = TypeVar("T")


def is_float(leaf: Any) -> bool:
    """Whether a leaf is a real floating-point array; raises for complex leaves."""
    dtype = jnp.result_type(leaf)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            f"forward gradients support real parameters only, got a leaf of dtype {dtype}"
        )
    return bool(jnp.issubdtype(dtype, jnp.floating))


def float_positions(leaves: Sequence[Any]) -> list[int]:
    """The positions of the real floating-point ``leaves`` (raises for complex ones)."""
    return [i for i, leaf in enumerate(leaves) if is_float(leaf)]


def replace_at(items: Sequence[T], positions: Sequence[int], values: Iterable[T]) -> list[T]:
    """A copy of ``items`` with ``values`` at ``positions`` (in that order)."""
    out = list(items)
    for i, value in zip(positions, values):
        out[i] = value
    return out


def float0_zeros(leaf: Any, prefix: tuple[int, ...] = ()) -> np.ndarray:
    """The ``float0`` zero tangent of a non-float leaf (with optional leading axes)."""
    return np.zeros(prefix + np.shape(leaf), dtype=jax.dtypes.float0)
