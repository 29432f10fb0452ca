"""softops: differentiable sorting, ranking and top-k, and forward gradients, in pure JAX."""

__version__ = "0.1.0.dev0"

__all__ = []
