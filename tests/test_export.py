"""``jax.export`` with a symbolic batch dimension (serving with a dynamic batch).

Every public op and its gradient is exported for ``symbolic_shape("b, 100")``, serialized,
deserialized and called at two batch sizes; the results equal the op's at those sizes. (A
symbolic item axis, ``"b, n"``, is not supported: the ops choose solvers and validate ``k``
from the row length in Python.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import softops
from softops import losses

N = 100


def _rows(fn):
    """``fn`` of one row [n] mapped over the batch."""
    return jax.vmap(fn)


OPS = {
    "soft_rank": lambda x: softops.soft_rank(x, regularization_strength=0.5),
    "soft_rank_kl": lambda x: softops.soft_rank(x, regularization="kl"),
    "soft_sort": lambda x: softops.soft_sort(x),
    "soft_sort_kl": lambda x: softops.soft_sort(x, regularization="kl"),
    "isotonic_l2": lambda x: softops.isotonic_l2(x, jnp.zeros_like(x)),
    "isotonic_kl": lambda x: softops.isotonic_kl(x, jnp.zeros_like(x)),
    "isotonic_regression": lambda x: softops.isotonic_regression(x),
    "projection_permutahedron": lambda x: softops.projection_permutahedron(x),
    "soft_quantile_normalization": lambda x: softops.soft_quantile_normalization(
        x, jnp.linspace(-1.0, 1.0, N, dtype=x.dtype)
    ),
    "soft_quantize": lambda x: softops.soft_quantize(x, 3),
    "soft_topk_mask": lambda x: softops.soft_topk_mask(x, 3),
    "soft_topk_mask_solve": lambda x: softops.soft_topk_mask_solve(x, 3).mask,
    "soft_topk_mask_sinkhorn": lambda x: softops.soft_topk_mask(x, 3, solver="sinkhorn"),
    "soft_topk_mask_l2": lambda x: softops.soft_topk_mask(x, 3, regularization="l2"),
    "soft_topk_magnitude": lambda x: softops.soft_topk_magnitude(x, 3, regularization="p=4/3"),
    "soft_topk": lambda x: softops.soft_topk(x, 3),
    "soft_topk_solve": lambda x: softops.soft_topk_solve(x, 3).values,
    "soft_topk_sinkhorn": lambda x: softops.soft_topk(x, 3, solver="sinkhorn")[0],
    "sinkhorn": lambda x: (
        softops.sinkhorn(
            jnp.square(x[..., :, None] - jnp.arange(3.0, dtype=x.dtype)[None, None]), epsilon=0.5
        ).plan
    ),
    "soft_permutation": lambda x: softops.soft_permutation(x[..., :16]),
    "sort_with": _rows(lambda r: softops.sort_with(jnp.stack([r, -r], -1), r, k=2)),
    "spearman_loss": lambda x: losses.spearman_loss(x, jnp.cos(x)),
    "spearman_correlation": lambda x: losses.spearman_correlation(x, jnp.cos(x)),
    "soft_ndcg": lambda x: losses.soft_ndcg(x, jnp.abs(jnp.cos(x)), k=3),
    "soft_topk_rank_loss": lambda x: losses.soft_topk_rank_loss(
        x, jnp.zeros(x.shape[0], jnp.int32), k=2
    ),
    "soft_topk_mask_loss": lambda x: losses.soft_topk_mask_loss(
        x, jnp.zeros(x.shape[0], jnp.int32), k=2
    ),
    "soft_quantile": lambda x: losses.soft_quantile(x, 0.3),
    "soft_median": lambda x: losses.soft_median(x),
    "soft_lts_loss": lambda x: losses.soft_lts_loss(x, trim=0.25),
}
COVERED_ELSEWHERE = {  # not ops on a batch of rows, or the same kernel as an op above
    "SinkhornOutput", "SoftTopKOutput", "TopKMaskOutput",  # result types
    "forward_value_and_grad", "activity_value_and_grad", "local_value_and_grad",
    "sample_tangents", "no_tap", "fgd", "scale_by_perturbed_dim", "perturbed_dim_factor",
}  # fmt: skip


def test_every_public_op_is_exported():
    missing = [n for n in softops.__all__ if n not in OPS and n not in COVERED_ELSEWHERE]
    assert not missing


def _scalar(fn):
    def f(x):
        return sum(jnp.sum(o * o) for o in jax.tree.leaves(fn(x)))

    return f


CASES = [(name, kind) for name in sorted(OPS) for kind in ("value", "grad")]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        pytest.param(*case, marks=() if case == ("soft_rank", "grad") else pytest.mark.slow)
        for case in CASES
    ],
)
def test_export_with_symbolic_batch(name, kind, float32_default):
    fn = OPS[name] if kind == "value" else jax.grad(_scalar(OPS[name]))
    spec = jax.ShapeDtypeStruct(export.symbolic_shape(f"b, {N}"), jnp.float32)
    exported = export.export(jax.jit(fn))(spec)
    restored = export.deserialize(exported.serialize())
    for batch in (2, 5):
        x = jnp.asarray(np.random.default_rng(batch).standard_normal((batch, N)), jnp.float32)
        for got, want in zip(jax.tree.leaves(restored.call(x)), jax.tree.leaves(fn(x))):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
