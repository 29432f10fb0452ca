r"""Forward gradients: unbiased gradient estimates from one forward-mode pass, no backward pass.

For a scalar loss :math:`f(\theta)`, :math:`\theta \in \mathbb{R}^d`, and a random tangent
:math:`v` with :math:`\mathbb{E}[v v^\top] = I`, the forward gradient

.. math::
    \hat g = (\nabla f(\theta) \cdot v)\, v, \qquad \mathbb{E}[\hat g] = \nabla f(\theta),

needs only the directional derivative :math:`\nabla f \cdot v`, which ``jax.jvp`` computes
alongside :math:`f(\theta)` without storing activations for a backward pass. With i.i.d. entries of
kurtosis :math:`\kappa` (1 for Rademacher, 3 for Gaussian),
:math:`\mathbb{E}\|\hat g\|^2 = (d + \kappa - 1)\|\nabla f\|^2`; averaging :math:`K` independent
tangents gives :math:`\|\nabla f\|^2 (1 + (d + \kappa - 2)/K)`. With :math:`K \le d` orthonormal
directions :math:`q_k` (Haar-random), :math:`v_k = \sqrt{d}\, q_k` gives
:math:`\hat g = \tfrac{d}{K} Q Q^\top \nabla f`, unbiased, with
:math:`\mathbb{E}\|\hat g\|^2 = \tfrac{d}{K}\|\nabla f\|^2`; :math:`K = d` is the exact
gradient.

Tangents come from a counter-based integer hash of (leaf seed, element index) (see
``softops/_fg_random.py``): one independent stream per parameter leaf, reproducible from the key,
and far cheaper on CPU than ``jax.random``'s threefry for millions of parameters.

Reference: Baydin, Pearlmutter, Syme, Wood, Torr, Gradients without Backpropagation,
arXiv:2202.08587, 2022.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from softops import _fg_random
from softops._checks import check_choice, check_positive, compute_dtype

Distribution = Literal["rademacher", "normal", "orthogonal"]
DISTRIBUTIONS = ("rademacher", "normal", "orthogonal")
_KURTOSIS = {"rademacher": 1, "normal": 3}


def _is_float(leaf) -> bool:
    dtype = jnp.result_type(leaf)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            f"forward gradients support real parameters only, got a leaf of dtype {dtype}"
        )
    return jnp.issubdtype(dtype, jnp.floating)


def _check_num_tangents(num_tangents) -> int:
    if not isinstance(num_tangents, (int, np.integer)) or isinstance(num_tangents, bool):
        raise TypeError(f"`num_tangents` must be an int, got num_tangents={num_tangents!r}")
    if num_tangents < 1:
        raise ValueError(f"`num_tangents` must be >= 1, got num_tangents={num_tangents}")
    return int(num_tangents)


def _float0_zeros(leaf, prefix=()) -> np.ndarray:
    return np.zeros(prefix + np.shape(leaf), dtype=jax.dtypes.float0)


def _sample_float_leaves(
    key, leaves: Sequence, ids: Sequence[int], num_leaves: int, num_tangents: int, distribution: str
) -> list[jax.Array]:
    """Tangents ``[K, *leaf.shape]`` for the float ``leaves`` (``ids``: positions in the tree)."""
    seeds = jax.random.bits(key, (num_leaves + 1, 2), jnp.uint32)
    k = num_tangents
    if distribution != "orthogonal":
        gen = _fg_random.rademacher if distribution == "rademacher" else _fg_random.normal
        return [gen(seeds[i], (k,) + np.shape(x), jnp.result_type(x)) for i, x in zip(ids, leaves)]
    sizes = [math.prod(np.shape(x)) for x in leaves]
    d = sum(sizes)
    if k > d:
        raise ValueError(
            f"`num_tangents` must be <= d = {d} (the number of float parameters) for "
            f"distribution='orthogonal', got num_tangents={k}"
        )
    dtype = compute_dtype(max((jnp.result_type(x) for x in leaves), key=lambda t: t.itemsize))
    gauss = _fg_random.normal(seeds[num_leaves], (d, k), dtype)
    q, r = jnp.linalg.qr(gauss)  # Haar column space; signs of diag(r) fixed below.
    sign = jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(dtype)[None, :]
    v = (q * sign * math.sqrt(d)).T  # [K, d]
    out, start = [], 0
    for x, n in zip(leaves, sizes):
        out.append(v[:, start : start + n].reshape((k,) + np.shape(x)).astype(jnp.result_type(x)))
        start += n
    return out


def sample_tangents(
    key: jax.Array,
    params: Any,
    *,
    num_tangents: int | None = None,
    distribution: Distribution = "rademacher",
) -> Any:
    """Random tangents shaped like ``params``, one independent stream per leaf.

    Float leaves get entries with mean 0 and variance 1 in the leaf's dtype: ``"rademacher"`` (±1,
    exact), ``"normal"`` (Box–Muller on a 24-bit grid, see ``_fg_random.normal``), or
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
    check_choice(distribution, DISTRIBUTIONS, "distribution")
    k = 1 if num_tangents is None else _check_num_tangents(num_tangents)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    ids = [i for i, x in enumerate(leaves) if _is_float(x)]
    prefix = () if num_tangents is None else (k,)
    out = [_float0_zeros(x, prefix) for x in leaves]
    if ids:
        sampled = _sample_float_leaves(
            key, [leaves[i] for i in ids], ids, len(leaves), k, distribution
        )
        for i, t in zip(ids, sampled):
            out[i] = t[0] if num_tangents is None else t
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
    with ``has_aux``) where, for tangents :math:`v_1..v_K` from :func:`sample_tangents`,

    .. math::
        \hat g = \frac1K \sum_{k=1}^K (\nabla f \cdot v_k)\, v_k,
        \qquad \mathbb{E}[\hat g] = \nabla f.

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
        A function of ``(key, *args, **kwargs)``.

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
    check_choice(distribution, DISTRIBUTIONS, "distribution")
    k = _check_num_tangents(num_tangents)
    if not isinstance(argnums, (int, np.integer)) or isinstance(argnums, bool):
        raise TypeError(f"`argnums` must be an int, got argnums={argnums!r}")

    def value_and_estimate(key, *args, **kwargs):
        if not -len(args) <= argnums < len(args):
            raise ValueError(f"`argnums`={argnums} is out of range for {len(args)} arguments")
        leaves, treedef = jax.tree_util.tree_flatten(args[argnums])
        ids = [i for i, x in enumerate(leaves) if _is_float(x)]
        primals = [jnp.asarray(leaves[i]) for i in ids]

        def f_float(*float_leaves):
            new = list(leaves)
            for i, x in zip(ids, float_leaves):
                new[i] = x
            new_args = list(args)
            new_args[argnums] = jax.tree_util.tree_unflatten(treedef, new)
            out = fun(*new_args, **kwargs)
            value, aux = out if has_aux else (out, None)
            if jnp.ndim(value) != 0 or not jnp.issubdtype(jnp.result_type(value), jnp.floating):
                raise TypeError(
                    "`fun` must return a real scalar (its first output with has_aux=True), "
                    f"got shape {jnp.shape(value)} and dtype {jnp.result_type(value)}"
                )
            return value, aux

        tangents = _sample_float_leaves(key, primals, ids, len(leaves), k, distribution)

        def directional(*tans):
            return jax.jvp(f_float, tuple(primals), tuple(tans), has_aux=True)

        if k == 1:
            value, dval, aux = directional(*(t[0] for t in tangents))
            dvals = dval[None]
        else:
            value, dvals, aux = jax.vmap(directional, out_axes=(None, 0, None))(*tangents)
        if axis_name is not None:
            value, dvals = lax.pmean((value, dvals), axis_name)
        est = [_float0_zeros(x) for x in leaves]
        for i, t in zip(ids, tangents):
            c = dvals.astype(t.dtype)
            est[i] = (c[0] * t[0]) if k == 1 else jnp.tensordot(c, t, axes=1) * (1.0 / k)
        estimate = jax.tree_util.tree_unflatten(treedef, est)
        return ((value, aux) if has_aux else value), estimate

    return value_and_estimate


def _num_float_entries(tree) -> int:
    return sum(
        math.prod(np.shape(x))
        for x in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.floating)
    )


def perturbed_dim_factor(
    d: int, *, num_tangents: int = 1, distribution: Distribution = "rademacher"
) -> float:
    r"""The step-size factor :math:`\|\nabla f\|^2 / \mathbb{E}\|\hat g\|^2` for ``d`` parameters.

    ``K / (K + d + κ - 2)`` for i.i.d. tangents, ``K / d`` for orthogonal ones. On a quadratic with
    isotropic curvature ``L`` the step :math:`\eta\hat g` that minimizes the expected loss is
    ``factor / L``: the gradient-descent step shrunk by the estimate's excess second moment.

    Args:
        d: the number of perturbed (float) coordinates.
        num_tangents: ``K``, as passed to :func:`forward_value_and_grad`.
        distribution: as passed to :func:`forward_value_and_grad`.

    Returns:
        The factor in (0, 1].

    Raises:
        ValueError: for an unknown ``distribution`` or ``num_tangents < 1``.

    Examples:
        >>> from softops.forward_grad import perturbed_dim_factor
        >>> perturbed_dim_factor(100, num_tangents=4)
        0.038834951456310676
    """
    check_choice(distribution, DISTRIBUTIONS, "distribution")
    k = _check_num_tangents(num_tangents)
    if distribution == "orthogonal":
        return k / max(d, k)
    return k / (k + d + _KURTOSIS[distribution] - 2)


def scale_by_perturbed_dim(
    *, num_tangents: int = 1, distribution: Distribution = "rademacher"
) -> optax.GradientTransformation:
    """An optax transformation that scales forward-gradient updates by :func:`perturbed_dim_factor`.

    ``d`` is the number of float entries of the updates (static). Chain it before a learning rate
    to make a step size tuned for backprop a safe (conservative) step for forward gradients.

    Args:
        num_tangents: ``K`` used by the estimator.
        distribution: the estimator's tangent distribution.

    Returns:
        A stateless ``optax.GradientTransformation``.

    Examples:
        >>> import optax
        >>> from softops.forward_grad import scale_by_perturbed_dim
        >>> opt = optax.chain(scale_by_perturbed_dim(num_tangents=8), optax.sgd(0.1))
    """
    perturbed_dim_factor(1, num_tangents=num_tangents, distribution=distribution)  # validates

    def update_fn(updates, state, params=None):
        del params
        factor = perturbed_dim_factor(
            _num_float_entries(updates), num_tangents=num_tangents, distribution=distribution
        )
        return jax.tree_util.tree_map(
            lambda u: u * factor if jnp.issubdtype(jnp.result_type(u), jnp.floating) else u, updates
        ), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def fgd(learning_rate: float, *, decay: float = 0.0) -> optax.GradientTransformation:
    r"""Forward gradient descent with Baydin et al.'s decay :math:`\eta_i = \eta_0 e^{-i k}`.

    Plain SGD on the estimates (``optax.sgd``) with an exponential learning-rate schedule.

    Args:
        learning_rate: :math:`\eta_0 > 0`.
        decay: :math:`k \ge 0` per step (0 keeps the rate constant).

    Returns:
        An ``optax.GradientTransformation``.

    Raises:
        ValueError: if ``learning_rate`` is a Python number <= 0 (arrays are not checked, so that
            it can be traced) or ``decay`` is not a number >= 0.

    Examples:
        >>> from softops.forward_grad import fgd
        >>> opt = fgd(0.01, decay=1e-4)
    """
    check_positive(learning_rate, "learning_rate")
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not decay >= 0:
        raise ValueError(f"`decay` must be a real number >= 0, got decay={decay!r}")
    if decay == 0:
        return optax.sgd(learning_rate)

    def schedule(count):
        return learning_rate * jnp.exp(count.astype(jnp.float32) * (-decay))

    return optax.sgd(schedule)
