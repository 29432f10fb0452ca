"""The ops of the sharding check (tests/_sharding_check.py) and their inputs, importable without
setting the device count (tests/test_sharding.py checks that every public op has an entry)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import softops
from softops import losses, routing

rng = np.random.default_rng(0)
X = rng.standard_normal((16, 12)).astype(np.float32)
T = rng.standard_normal((16, 12)).astype(np.float32)
W = rng.uniform(0.5, 2.0, (16, 12)).astype(np.float32)
MASK = rng.random((16, 12)) > 0.2
MASK[:, :3] = True
LABELS = rng.integers(0, 12, 16).astype(np.int32)
U = rng.standard_normal((16, 12)).astype(np.float32)
SEGMENTS = rng.integers(0, 3, (16, 12)).astype(np.int32)  # packed lists, host constants

# Constants as host arrays (the ops move them explicitly) or inside jit: the ops also run under
# jax.transfer_guard("disallow") (tests/test_transfers.py), which refuses implicit transfers.
TARGETS = np.linspace(-1.0, 1.0, 5)
QUANTILES = np.array([0.25, 0.5])


@jax.jit
def _relevant(t):  # 0/1 relevance (the 0.5 a literal of the program: no host transfer)
    return (jnp.abs(t) > 0.5).astype(t.dtype)


@jax.jit
def _key():  # a key made on the device (an eager jax.random.key transfers its seed)
    return jax.random.key(0)


@jax.jit
def _cost(x):  # anchors as Python numbers: literals of the program, not hoisted array constants
    return jnp.stack([(x - y) ** 2 for y in (-1.0, -1 / 3, 1 / 3, 1.0)], axis=-1)


# Ops that draw random noise of the shape they see: inside shard_map, of the shard's shape.
SHARD_LOCAL_RANDOM = frozenset({"plackett_luce_rank"})

# "public_name" or "public_name:variant" -> op(x, aux); tests/test_sharding.py checks that every
# public op of softops and softops.losses has an entry.
OPS = {
    "soft_rank": lambda x, a: softops.soft_rank(x, regularization_strength=0.3),
    "soft_rank:kl_where": lambda x, a: softops.soft_rank(x, regularization="kl", where=a["mask"]),
    "soft_sort": lambda x, a: softops.soft_sort(x, regularization_strength=0.5),
    "soft_sort:kl_desc": lambda x, a: softops.soft_sort(x, regularization="kl", descending=True),
    "soft_rank:straight_through": lambda x, a: softops.soft_rank(x, straight_through=True),
    "soft_rank:p43_where": lambda x, a: softops.soft_rank(
        x, regularization="p=4/3", where=a["mask"]
    ),
    "soft_sort:p32": lambda x, a: softops.soft_sort(x, regularization="p=3/2"),
    "projection_permutahedron:p43": lambda x, a: softops.projection_permutahedron(
        x, a["w"], regularization="p=4/3"
    ),
    "projection_permutahedron:kl": lambda x, a: softops.projection_permutahedron(
        x, a["w"], regularization="kl"
    ),
    "isotonic_l2": lambda x, a: softops.isotonic_l2(x, a["t"]),
    "isotonic_kl": lambda x, a: softops.isotonic_kl(x, a["t"]),
    "isotonic_regression": lambda x, a: softops.isotonic_regression(x, weights=a["w"]),
    "soft_quantize": lambda x, a: softops.soft_quantize(x, 3, where=a["mask"]),
    "soft_quantile_normalization": lambda x, a: softops.soft_quantile_normalization(x, TARGETS),
    "soft_permutation": lambda x, a: softops.soft_permutation(x, temperature=0.5).sum(-1),
    "sort_with": lambda x, a: softops.sort_with(a["t"], x, temperature=0.5, k=4),
    "soft_topk_mask": lambda x, a: softops.soft_topk_mask(x, 3, temperature=0.3),
    "soft_topk_mask:epsilon_where": lambda x, a: softops.soft_topk_mask(x, 2, where=a["mask"]),
    "soft_topk_mask:straight_through": lambda x, a: softops.soft_topk_mask(
        x, 2, straight_through=True
    ),
    "soft_topk_mask_solve": lambda x, a: softops.soft_topk_mask_solve(x, 2, temperature=0.3).mask,
    "soft_topk:straight_through": lambda x, a: softops.soft_topk(
        x, 2, epsilon=0.05, straight_through=True
    )[0],
    "spearman_loss": lambda x, a: losses.spearman_loss(x, a["t"]),
    "spearman_correlation": lambda x, a: losses.spearman_correlation(x, a["t"]),
    "soft_ndcg": lambda x, a: losses.soft_ndcg(x, jnp.abs(a["t"]), k=5),
    "soft_ndcg:segments": lambda x, a: losses.soft_ndcg(
        x, jnp.abs(a["t"]), k=2, where=a["mask"], segments=a["ids"]
    ),
    "soft_rank:segments": lambda x, a: softops.soft_rank(x, segments=a["ids"]),
    "soft_sort:segments_where": lambda x, a: softops.soft_sort(
        x, where=a["mask"], segments=a["ids"]
    ),
    "soft_mrr": lambda x, a: losses.soft_mrr(x, _relevant(a["t"]), k=3, segments=a["ids"]),
    "soft_precision": lambda x, a: losses.soft_precision(x, _relevant(a["t"]), k=3),
    "rank_linear_loss": lambda x, a: losses.rank_linear_loss(x, a["t"], where=a["mask"]),
    "lambda_weights": lambda x, a: losses.lambda_weights(x, jnp.abs(a["t"]), segments=a["ids"]),
    "plackett_luce_rank": lambda x, a: losses.plackett_luce_rank(_key(), x, segments=a["ids"]),
    "soft_topk_rank_loss": lambda x, a: losses.soft_topk_rank_loss(x, a["labels"], k=2),
    "soft_topk_mask_loss": lambda x, a: losses.soft_topk_mask_loss(x, a["labels"], k=2),
    "soft_quantile": lambda x, a: losses.soft_quantile(x, QUANTILES),
    "soft_median": lambda x, a: losses.soft_median(x, where=a["mask"]),
    "soft_lts_loss": lambda x, a: losses.soft_lts_loss(x, where=a["mask"]),
    "soft_topk": lambda x, a: softops.soft_topk(x, 3, epsilon=0.05)[0],
    "soft_topk:where": lambda x, a: softops.soft_topk(
        x, 2, temperature=0.2, largest=False, where=a["mask"]
    )[1].sum(-2),
    # tol well below the comparison's rtol 1e-5: float32 sums round differently on 2 rows
    # than on 16, and at the default tol (3.5e-4) a row stops one iteration apart (6e-5 off).
    "soft_topk:sinkhorn": lambda x, a: softops.soft_topk(
        x, 3, epsilon=0.5, solver="sinkhorn", tol=1e-5
    )[0],
    "soft_topk_solve": lambda x, a: softops.soft_topk_solve(x, 2, epsilon=0.05).values,
    "soft_topk_mask:l2_where": lambda x, a: softops.soft_topk_mask(
        x, 3, temperature=0.5, where=a["mask"], regularization="l2"
    ),
    "soft_topk_mask:p=4/3_straight_through": lambda x, a: softops.soft_topk_mask(
        x, 2, temperature=0.4, regularization="p=4/3", straight_through=True
    ),
    "soft_topk_magnitude:p=3/2": lambda x, a: softops.soft_topk_magnitude(
        x, 3, temperature=0.3, regularization="p=3/2"
    ),
    # softops.routing: groups of 2 tokens (one group per device), or groups of one token
    "routing.token_choice": lambda x, a: routing.token_choice(
        x.reshape(-1, 2, 12), 2, capacity=1, temperature=0.5
    ).combine.reshape(x.shape),
    "routing.expert_choice": lambda x, a: routing.expert_choice(
        x.reshape(-1, 2, 12), 1, temperature=0.5
    ).combine.reshape(x.shape),
    "routing.load_balancing_loss": lambda x, a: routing.load_balancing_loss(
        x.reshape(-1, 1, 12), a["mask"].reshape(-1, 1, 12)
    ),
    "routing.router_z_loss": lambda x, a: routing.router_z_loss(x.reshape(-1, 1, 12)),
    "sinkhorn": lambda x, a: softops.sinkhorn(_cost(x), epsilon=0.5).plan.sum(-1),
}


AUX = {"t": T, "w": W, "mask": MASK, "labels": LABELS, "u": U, "ids": SEGMENTS}
