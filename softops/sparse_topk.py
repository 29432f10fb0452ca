r"""Exactly sparse top-k: capped-simplex masks, Euclidean and p-norm (Sander et al., 2023).

[soft_topk_mask][softops.topk_ot.soft_topk_mask] takes `regularization=` to choose the mask:
`"kl"` (default: the entropic mask of Xie et al., never exactly 0) or one of three exactly sparse
masks, each the solution of a regularized top-k linear program over the capped simplex
$\mathcal{C}_k = \{y \in [0, 1]^n : \sum_i y_i = k\}$ (the permutahedron of
$(1, \dots, 1, 0, \dots, 0)$):

$$
y^\star = \arg\max_{y \in \mathcal{C}_k} \langle x, y\rangle - T \sum_i \phi(y_i),
\qquad y^\star_i = g\big((x_i - \theta)/T\big), \quad g(u) = \min(\max(u, 0), 1)^r,
$$

with the threshold $\theta$ fixed by $\sum_i y_i = k$ and

| `regularization` | $\phi(y)$ | $r$ | where an entry leaves 0 |
|---|---|---|---|
| `"l2"` | $y^2/2$: the Euclidean projection of $x/T$ onto $\mathcal{C}_k$ | 1 | continuous |
| `"p=3/2"` | $\tfrac{2}{3}\lvert y\rvert^{3/2}$ | 2 | $C^1$ |
| `"p=4/3"` | $\tfrac{3}{4}\lvert y\rvert^{4/3}$ | 3 | $C^2$ |

The strength is `temperature=T`, in the units of the scores (default 1.0). Entries are exactly 0
at and below $\theta$ and exactly 1 from $\theta + T$ on: only the scores within $T$ above the
threshold are fractional. As $T \to 0$ the mask becomes the hard top-k indicator (exactly k ones
when the k-th and (k+1)-th scores differ by more than T); as $T \to \infty$ it tends to $k/n$
everywhere. Where an entry reaches the cap 1 while others are fractional ($k \ge 2$), every
regularization has a kink: the p-norms (Sander et al.'s $p = 4/3$ included) smooth only the
entries leaving 0. For $k = 1$ (the sparse argmax) an entry reaches 1 only when all others reach 0,
so `"p=3/2"` and `"p=4/3"` are $C^1$ and $C^2$ everywhere.

The threshold is found without sorting: a bracketing search over $\theta$ whose every pass over
a row also gives the polynomial piece of $\sum_i g$ that $\theta$ lies in; it ends on the
closed-form root of the piece that holds the root (linear, quadratic, or a cubic by Cardano's
formula), usually within 2-5 passes. Derivatives are implicit and $O(n)$, in forward mode
(`jax.custom_jvp`; reverse mode is their transpose): with $g'_i = g'(u_i)$,
$dy = g' \odot (dx - \langle g', dx\rangle / \textstyle\sum g') / T$ (and the terms of $dk$,
$dT$). They exist to every order away from the breakpoints, so `hessian` works.

[soft_topk_magnitude][softops.sparse_topk.soft_topk_magnitude] selects by magnitude and keeps
the values: $x \odot \mathrm{mask}(\lvert x\rvert)$, for pruning and top-k sparse coding.

Reference: Sander, Puigcerver, Djolonga, Peyré, Blondel, Fast, Differentiable and Sparse Top-k:
a Convex Analysis Perspective, ICML 2023, arXiv:2302.01425.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softops import _checks
from softops._ot import ops
from softops._ot.ops import MaskRegularization

__all__ = ["soft_topk_magnitude"]


def soft_topk_magnitude(
    x: ArrayLike,
    k: int | ArrayLike,
    *,
    axis: int = -1,
    regularization: MaskRegularization = "l2",
    temperature: float | ArrayLike | None = None,
    where: ArrayLike | None = None,
    max_iter: int = 100,
    straight_through: bool = False,
) -> jax.Array:
    r"""Soft top-k by magnitude: $x \odot \mathrm{mask}(\lvert x\rvert)$, exactly sparse.

    The mask is [soft_topk_mask][softops.topk_ot.soft_topk_mask] of $\lvert x\rvert$ with the
    same `regularization` (default `"l2"`, the Euclidean projection onto the capped simplex),
    so the entries whose magnitude is more than `temperature` below the threshold are exactly
    0 and those more than `temperature` above it are kept exactly. As the temperature goes to 0
    it becomes the hard top-k by magnitude, `x * (rank of |x| < k)` (magnitude pruning); the
    derivative is that of the returned value, $\mathrm{mask} + x\,\mathrm{sign}(x) \odot
    \partial \mathrm{mask}$.

    Args:
        x: values, `[..., n, ...]` with the items along `axis` (floating dtype).
        k: a Python int with `0 <= k <= n`, or a per-row integer or float array (traced and
            differentiable as in `soft_topk_mask`).
        axis: the item axis (default last).
        regularization: `"l2"` (default), `"p=3/2"`, `"p=4/3"` (exactly sparse) or `"kl"`.
        temperature: strength in the units of `|x|` (default 1.0), positive, a number or an
            array of the batch shape.
        where: boolean array of the shape of `x`; `False` entries are not selected (output 0).
        max_iter: maximum passes of the threshold search.
        straight_through: return `x` times the hard top-k indicator of `|x|` with this
            operator's derivative (biased on purpose).

    Returns:
        The soft top-k by magnitude, with the shape and dtype of `x`.

    Raises:
        ValueError: `k` outside `[0, n]`, a non-positive `temperature`, a bad `regularization`,
            `where` of the wrong shape, `x` sharded along `axis`.
        TypeError: non-floating `x`, non-boolean `where`.

    Examples:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([0.3, -2.0, 0.1, 1.5, 0.2])
        >>> soft_topk_magnitude(x, 2, temperature=0.1).tolist()
        [0.0, -2.0, 0.0, 1.5, 0.0]
    """
    x = _checks.floating(x, "x")
    ax = _checks.axis(axis, x.ndim)
    _checks.choice(regularization, ops.MASK_REGULARIZATIONS, "regularization")
    if regularization == "kl" and temperature is None:
        temperature = ops.DEFAULT_TEMPERATURE
    mask = ops.mask_op(
        _magnitude(x),
        k,
        axis=ax,
        max_iter=max_iter,
        temperature=temperature,
        where=where,
        straight_through=straight_through,
        regularization=regularization,
    )[0]
    return _scaled(x, mask, None if where is None else _checks.array(where, "where"), ax)


@jax.jit
def _magnitude(x):
    # A row with a non-finite entry is NaN with a zero derivative (the package's policy): the
    # non-finite entries enter |x| through a branch that takes no derivative (no 0 * NaN).
    finite = jnp.isfinite(x)
    return jnp.where(finite, jnp.abs(jnp.where(finite, x, 0)), jnp.abs(x))


@functools.partial(jax.jit, static_argnames=("ax",))
def _scaled(x, mask, where, ax: int):
    """The scores times their mask; NaN rows where the mask is; exact 0 at where=False."""
    bad = jnp.isnan(mask).any(axis=ax, keepdims=True)
    keep = ~bad if where is None else ~bad & where
    out = jnp.where(keep, x, 0) * jnp.where(keep, mask, 0)  # no 0 * NaN in either mode
    out = jnp.where(bad, jnp.nan, out)
    if where is not None:
        out = jnp.where(where, out, 0)  # exact 0 at where=False
    return out.astype(x.dtype)
