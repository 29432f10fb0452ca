"""Sizes that may be symbolic: ``jax.export`` with a symbolic dimension (a dynamic batch).

Some choices are made in Python from the shapes (the dense or the looped isotonic solver, chunk
and screening sizes of the top-k Newton solver); with ``jax.export.symbolic_shape("b, n")`` a
comparison of a symbolic size is inconclusive. These helpers say whether sizes are concrete, so
that a choice falls back to the path that is exact at every size.
"""

from __future__ import annotations

from jax import export


def is_static(*dims) -> bool:
    """Whether every dimension is a concrete integer (not a ``jax.export`` symbolic one)."""
    return not any(export.is_symbolic_dim(d) for d in dims)
