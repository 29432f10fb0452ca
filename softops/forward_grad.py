r"""Forward gradients: unbiased gradient estimates from one forward-mode pass, no backward pass.

For a scalar loss $f(\theta)$, $\theta \in \mathbb{R}^d$, and a random tangent
$v$ with $\mathbb{E}[v v^\top] = I$, the forward gradient

$$
\hat g = (\nabla f(\theta) \cdot v)\, v, \qquad \mathbb{E}[\hat g] = \nabla f(\theta),
$$

needs only the directional derivative $\nabla f \cdot v$, which ``jax.jvp`` computes
alongside $f(\theta)$ without storing activations for a backward pass. With i.i.d. entries of
kurtosis $\kappa$ (1 for Rademacher, 3 for Gaussian),
$\mathbb{E}\|\hat g\|^2 = (d + \kappa - 1)\|\nabla f\|^2$; averaging $K$ independent
tangents gives $\|\nabla f\|^2 (1 + (d + \kappa - 2)/K)$. With $K \le d$ orthonormal
directions $q_k$ (Haar-random), $v_k = \sqrt{d}\, q_k$ gives
$\hat g = \tfrac{d}{K} Q Q^\top \nabla f$, unbiased, with
$\mathbb{E}\|\hat g\|^2 = \tfrac{d}{K}\|\nabla f\|^2$; $K = d$ is the exact
gradient.

Tangents come from a counter-based integer hash of (leaf seed, element index) (see
``softops/_forward/noise.py``): one independent stream per parameter leaf, reproducible from the
key, and far cheaper on CPU than ``jax.random``'s threefry for millions of parameters.

Reference: Baydin, Pearlmutter, Syme, Wood, Torr, Gradients without Backpropagation,
arXiv:2202.08587, 2022.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from softops import _checks
from softops._forward.activity import activity_value_and_grad
from softops._forward.leaves import float0_zeros, float_positions, replace_at
from softops._forward.local import local_value_and_grad
from softops._forward.tangents import (
    DISTRIBUTIONS,
    Distribution,
    check_num_tangents,
    jvp_tangents,
    sample_float_leaves,
)
from softops._forward.tap import no_tap
from softops._forward.transforms import fgd, perturbed_dim_factor, scale_by_perturbed_dim


def sample_tangents(
    key: jax.Array,
    params: Any,
    *,
    num_tangents: int | None = None,
    distribution: Distribution = "rademacher",
) -> Any:
    """Random tangents shaped like ``params``, one independent stream per leaf.

    Float leaves get entries with mean 0 and variance 1 in the leaf's dtype: ``"rademacher"`` (±1,
    exact), ``"normal"`` (Box–Muller on a 24-bit grid, see ``_forward.noise.normal``), or
    ``"orthogonal"`` (``sqrt(d)`` times Haar-random orthonormal directions over all ``d`` float
    entries, from a QR of a ``[d, K]`` Gaussian matrix: O(dK^2), for moderate ``d * K``). Other
    leaves (ints, bools, PRNG keys) get ``float0`` zeros, the tangent ``jax.jvp`` expects.

    Args:
        key: a PRNG key; the same key gives bit-identical tangents (``"normal"``: within one
            compiled program; ``jit`` and eager may differ by float32 rounding of ``log``).
        params: any pytree of arrays (plain dicts, Flax linen params, ``nnx.State``).
        num_tangents: ``None`` for one tangent shaped like ``params``; an int ``K`` for ``K``
            independent tangents stacked on a new leading axis ``[K, *leaf.shape]``.
        distribution: ``"rademacher"``, ``"normal"`` or ``"orthogonal"``.

    Returns:
        A pytree with the structure of ``params``.

    Raises:
        ValueError: if ``distribution`` is unknown, ``num_tangents < 1``, ``num_tangents > d`` for
            ``"orthogonal"``, or a leaf times ``num_tangents`` exceeds 2**32 elements.
        TypeError: if a leaf is complex or ``num_tangents`` is not an int.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from softops.forward_grad import sample_tangents
        >>> v = sample_tangents(jax.random.key(0), {"w": jnp.zeros(3), "n": jnp.zeros(2, int)})
        >>> v["w"].dtype, v["n"].dtype
        (dtype('float32'), dtype([('float0', 'V')]))
    """
    _checks.choice(distribution, DISTRIBUTIONS, "distribution")
    k = 1 if num_tangents is None else check_num_tangents(num_tangents)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    float_ids = float_positions(leaves)
    prefix = () if num_tangents is None else (k,)
    out: list[Any] = [float0_zeros(x, prefix) for x in leaves]
    if float_ids:
        sampled = sample_float_leaves(
            key, [leaves[i] for i in float_ids], float_ids, len(leaves), k, distribution
        )
        out = replace_at(out, float_ids, (t[0] if num_tangents is None else t for t in sampled))
    return jax.tree_util.tree_unflatten(treedef, out)


def forward_value_and_grad(
    fun: Callable,
    *,
    argnums: int = 0,
    num_tangents: int = 1,
    distribution: Distribution = "rademacher",
    has_aux: bool = False,
    axis_name: str | None = None,
) -> Callable:
    r"""Like ``jax.value_and_grad``, but the gradient is a forward-gradient estimate.

    Returns ``g(key, *args, **kwargs) -> (value, grad_estimate)`` (``((value, aux), estimate)``
    with ``has_aux``) where, for tangents $v_1..v_K$ from
    [`sample_tangents`][softops.forward_grad.sample_tangents],

    $$
    \hat g = \frac1K \sum_{k=1}^K (\nabla f \cdot v_k)\, v_k,
    \qquad \mathbb{E}[\hat g] = \nabla f.
    $$

    The K directional derivatives come from ``jax.jvp`` batched with ``vmap`` (the primal is
    computed once); there is no backward pass, so temporary memory does not grow with depth.
    Works through ``jax.custom_jvp`` rules; fails on ``jax.custom_vjp`` functions (no JVP).

    Data parallelism: inside ``shard_map`` or ``pmap`` with a mapped axis ``axis_name``, pass the
    same (replicated) ``key`` on every replica; the tangents are then identical everywhere and only
    the ``K`` scalar directional derivatives (and the scalar value) are averaged with
    ``lax.pmean``. The estimate is the one for the mean loss over replicas, identical on all of
    them. ``aux`` is returned per replica.

    Args:
        fun: a function whose output (first output with ``has_aux``) is a real scalar.
        argnums: the positional argument of ``fun`` (after the key is removed) to differentiate,
            any pytree; its non-float leaves get ``float0`` zeros, as with ``jax.grad(...,
            allow_int=True)``.
        num_tangents: the number ``K`` of tangents averaged.
        distribution: ``"rademacher"`` (default, cheapest, lowest variance), ``"normal"`` or
            ``"orthogonal"`` (``K <= d`` orthonormal directions scaled by ``sqrt(d)``).
        has_aux: whether ``fun`` returns ``(value, aux)``.
        axis_name: the mapped axis to average directional derivatives over, or ``None``.

    Returns:
        A function of ``(key, *args, **kwargs)``. Where the value is NaN or infinite, every
        entry of the estimate is NaN: an optimizer step on it is visibly bad, never a silent
        step along a finite direction.

    Raises:
        ValueError: for an unknown ``distribution`` or a bad ``num_tangents``.
        TypeError: if ``fun``'s output is not a real scalar.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from softops.forward_grad import forward_value_and_grad
        >>> f = lambda x: jnp.sum(x ** 2)
        >>> x = jnp.array([1.0, -2.0, 0.5])
        >>> value, g = forward_value_and_grad(f, num_tangents=3, distribution="orthogonal")(
        ...     jax.random.key(0), x)
        >>> value, jnp.round(g, 4)
        (Array(5.25, dtype=float32), Array([ 2., -4.,  1.], dtype=float32))

    Reference:
        Baydin et al., Gradients without Backpropagation, arXiv:2202.08587, 2022.
    """
    _checks.choice(distribution, DISTRIBUTIONS, "distribution")
    k = check_num_tangents(num_tangents)
    if not isinstance(argnums, (int, np.integer)) or isinstance(argnums, bool):
        raise TypeError(f"`argnums` must be an int, got argnums={argnums!r}")

    def value_and_estimate(key: jax.Array, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        if not -len(args) <= argnums < len(args):
            raise ValueError(f"`argnums`={argnums} is out of range for {len(args)} arguments")
        leaves, treedef = jax.tree_util.tree_flatten(args[argnums])
        float_ids = float_positions(leaves)
        primals = [jnp.asarray(leaves[i]) for i in float_ids]

        def f_float(*float_leaves: jax.Array) -> tuple[jax.Array, Any]:
            new_args = list(args)
            new_args[argnums] = jax.tree_util.tree_unflatten(
                treedef, replace_at(leaves, float_ids, float_leaves)
            )
            out = fun(*new_args, **kwargs)
            value, aux = out if has_aux else (out, None)
            if jnp.ndim(value) != 0 or not jnp.issubdtype(jnp.result_type(value), jnp.floating):
                raise TypeError(
                    "`fun` must return a real scalar (its first output with has_aux=True), "
                    f"got shape {jnp.shape(value)} and dtype {jnp.result_type(value)}"
                )
            return value, aux

        tangents = sample_float_leaves(key, primals, float_ids, len(leaves), k, distribution)
        value, dvals, aux = jvp_tangents(f_float, primals, tangents, k)
        if axis_name is not None:
            value, dvals = lax.pmean((value, dvals), axis_name)
        dvals = jnp.where(jnp.isfinite(value), dvals, jnp.nan)  # a bad value: a NaN estimate

        def weighted_mean(t: jax.Array) -> jax.Array:  # (1/K) sum_k dvals[k] t[k]
            c = dvals.astype(t.dtype)
            return (c[0] * t[0]) if k == 1 else jnp.tensordot(c, t, axes=1) * (1.0 / k)

        est = replace_at([float0_zeros(x) for x in leaves], float_ids, map(weighted_mean, tangents))
        estimate = jax.tree_util.tree_unflatten(treedef, est)
        return ((value, aux) if has_aux else value), estimate

    return value_and_estimate


# One public face for forward gradients: the names above and those imported from the family.
__all__ = [
    "activity_value_and_grad",
    "fgd",
    "forward_value_and_grad",
    "local_value_and_grad",
    "no_tap",
    "perturbed_dim_factor",
    "sample_tangents",
    "scale_by_perturbed_dim",
]

# doctest.testmod(softops.forward_grad) also runs the examples of the re-exported functions.
__test__ = {
    name: globals()[name]
    for name in (
        "activity_value_and_grad",
        "fgd",
        "local_value_and_grad",
        "no_tap",
        "perturbed_dim_factor",
        "scale_by_perturbed_dim",
    )
}
