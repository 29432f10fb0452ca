r"""Losses and statistics built on soft sort, soft rank and the soft top-k mask.

Conventions (as optax's ranking losses): the last axis holds the items (list entries, classes,
residuals), the leading axes are a batch; every function returns one value per example (the batch
shape), with no reduction over the batch. ``where=`` is an optional boolean mask of the items'
shape: ``False`` entries take no part (they neither count as items nor receive gradient). Every
function is built on the public ops ([`softops.soft_rank`][softops.projection.soft_rank],
[`softops.soft_sort`][softops.projection.soft_sort],
[`softops.soft_topk_mask`][softops.topk_ot.soft_topk_mask]), so batches sharded over devices run
where they live and an example with a NaN input gets a NaN value.

- [`spearman_correlation`][softops.losses.spearman_correlation],
  [`spearman_loss`][softops.losses.spearman_loss]: correlation of soft ranks;
- [`soft_ndcg`][softops.losses.soft_ndcg]: NDCG with soft ranks in the discount;
- [`soft_topk_rank_loss`][softops.losses.soft_topk_rank_loss]: hinge on the soft (descending)
  rank of the true class;
- [`soft_topk_mask_loss`][softops.losses.soft_topk_mask_loss]: minus the log mass of the soft
  top-k mask on the true class;
- [`soft_quantile`][softops.losses.soft_quantile], [`soft_median`][softops.losses.soft_median]:
  interpolated order statistics of the soft sort;
- [`soft_lts_loss`][softops.losses.soft_lts_loss]: soft least trimmed squares.

Each tends to its hard counterpart as the regularization strength ε goes to 0.

Reference: Blondel, Teboul, Berthet, Djolonga, Fast Differentiable Sorting and Ranking, ICML 2020,
arXiv:2002.08871 (Section 6: top-k classification, Spearman, least trimmed squares).
"""

from softops.losses._classification import soft_topk_mask_loss as soft_topk_mask_loss
from softops.losses._classification import soft_topk_rank_loss as soft_topk_rank_loss
from softops.losses._ltr import lambda_weights as lambda_weights
from softops.losses._ltr import rank_linear_loss as rank_linear_loss
from softops.losses._ltr import soft_mrr as soft_mrr
from softops.losses._ltr import soft_ndcg as soft_ndcg
from softops.losses._ltr import soft_precision as soft_precision
from softops.losses._order_statistics import soft_lts_loss as soft_lts_loss
from softops.losses._order_statistics import soft_median as soft_median
from softops.losses._order_statistics import soft_quantile as soft_quantile
from softops.losses._ranking import spearman_correlation as spearman_correlation
from softops.losses._ranking import spearman_loss as spearman_loss
from softops.losses._sampling import plackett_luce_rank as plackett_luce_rank

__all__ = [
    "lambda_weights",
    "plackett_luce_rank",
    "rank_linear_loss",
    "soft_lts_loss",
    "soft_median",
    "soft_mrr",
    "soft_ndcg",
    "soft_precision",
    "soft_quantile",
    "soft_topk_mask_loss",
    "soft_topk_rank_loss",
    "spearman_correlation",
    "spearman_loss",
]
