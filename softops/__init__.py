"""softops: differentiable sorting, ranking and top-k, and forward gradients, in pure JAX."""

from softops import routing as routing  # the module: its names are not re-exported
from softops.forward_grad import activity_value_and_grad as activity_value_and_grad
from softops.forward_grad import fgd as fgd
from softops.forward_grad import forward_value_and_grad as forward_value_and_grad
from softops.forward_grad import local_value_and_grad as local_value_and_grad
from softops.forward_grad import no_tap as no_tap
from softops.forward_grad import perturbed_dim_factor as perturbed_dim_factor
from softops.forward_grad import sample_tangents as sample_tangents
from softops.forward_grad import scale_by_perturbed_dim as scale_by_perturbed_dim
from softops.isotonic import isotonic_kl as isotonic_kl
from softops.isotonic import isotonic_l2 as isotonic_l2
from softops.isotonic import isotonic_regression as isotonic_regression
from softops.losses import soft_lts_loss as soft_lts_loss
from softops.losses import soft_median as soft_median
from softops.losses import soft_ndcg as soft_ndcg
from softops.losses import soft_quantile as soft_quantile
from softops.losses import soft_topk_mask_loss as soft_topk_mask_loss
from softops.losses import soft_topk_rank_loss as soft_topk_rank_loss
from softops.losses import spearman_correlation as spearman_correlation
from softops.losses import spearman_loss as spearman_loss
from softops.projection import projection_permutahedron as projection_permutahedron
from softops.projection import soft_quantile_normalization as soft_quantile_normalization
from softops.projection import soft_quantize as soft_quantize
from softops.projection import soft_rank as soft_rank
from softops.projection import soft_sort as soft_sort
from softops.sparse_topk import soft_topk_magnitude as soft_topk_magnitude
from softops.topk_ot import SinkhornOutput as SinkhornOutput
from softops.topk_ot import SoftTopKOutput as SoftTopKOutput
from softops.topk_ot import TopKMaskOutput as TopKMaskOutput
from softops.topk_ot import sinkhorn as sinkhorn
from softops.topk_ot import soft_permutation as soft_permutation
from softops.topk_ot import soft_topk as soft_topk
from softops.topk_ot import soft_topk_mask as soft_topk_mask
from softops.topk_ot import soft_topk_mask_solve as soft_topk_mask_solve
from softops.topk_ot import soft_topk_solve as soft_topk_solve
from softops.topk_ot import sort_with as sort_with

__version__ = "0.1.0.dev0"

__all__ = [
    "activity_value_and_grad",
    "fgd",
    "forward_value_and_grad",
    "local_value_and_grad",
    "no_tap",
    "perturbed_dim_factor",
    "sample_tangents",
    "scale_by_perturbed_dim",
    "isotonic_kl",
    "isotonic_l2",
    "isotonic_regression",
    "projection_permutahedron",
    "soft_quantile_normalization",
    "soft_quantize",
    "soft_rank",
    "soft_sort",
    "soft_topk_magnitude",
    "soft_lts_loss",
    "soft_median",
    "soft_ndcg",
    "soft_quantile",
    "soft_topk_mask_loss",
    "soft_topk_rank_loss",
    "spearman_correlation",
    "spearman_loss",
    "SinkhornOutput",
    "SoftTopKOutput",
    "TopKMaskOutput",
    "sinkhorn",
    "soft_permutation",
    "soft_topk",
    "soft_topk_mask",
    "soft_topk_mask_solve",
    "soft_topk_solve",
    "sort_with",
]
