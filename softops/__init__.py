"""softops: differentiable sorting, ranking and top-k, and forward gradients, in pure JAX."""

from softops.isotonic import isotonic_kl as isotonic_kl
from softops.isotonic import isotonic_l2 as isotonic_l2
from softops.isotonic import isotonic_regression as isotonic_regression
from softops.projection import projection_permutahedron as projection_permutahedron
from softops.projection import soft_rank as soft_rank
from softops.projection import soft_sort as soft_sort

__version__ = "0.1.0.dev0"

__all__ = [
    "isotonic_kl",
    "isotonic_l2",
    "isotonic_regression",
    "projection_permutahedron",
    "soft_rank",
    "soft_sort",
]
