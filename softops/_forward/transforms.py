"""optax pieces for forward-gradient training (private; re-exported by ``softops.forward_grad``)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from softops import _checks
from softops._forward.noise import KURTOSIS
from softops._forward.tangents import DISTRIBUTIONS, Distribution, check_num_tangents


def _num_float_entries(tree: Any) -> int:
    return sum(
        math.prod(np.shape(x))
        for x in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.floating)
    )


def perturbed_dim_factor(
    d: int, *, num_tangents: int = 1, distribution: Distribution = "rademacher"
) -> float:
    r"""The step-size factor $\|\nabla f\|^2 / \mathbb{E}\|\hat g\|^2$ for ``d`` parameters.

    ``K / (K + d + κ - 2)`` for i.i.d. tangents, ``K / d`` for orthogonal ones. On a quadratic with
    isotropic curvature ``L`` the step $\eta\hat g$ that minimizes the expected loss is
    ``factor / L``: the gradient-descent step shrunk by the estimate's excess second moment.

    Args:
        d: the number of perturbed (float) coordinates.
        num_tangents: ``K``, as passed to
            [`forward_value_and_grad`][softops.forward_grad.forward_value_and_grad].
        distribution: as passed to
            [`forward_value_and_grad`][softops.forward_grad.forward_value_and_grad].

    Returns:
        The factor in (0, 1].

    Raises:
        ValueError: for an unknown ``distribution`` or ``num_tangents < 1``.

    Examples:
        >>> from softops.forward_grad import perturbed_dim_factor
        >>> perturbed_dim_factor(100, num_tangents=4)
        0.038834951456310676
    """
    _checks.choice(distribution, DISTRIBUTIONS, "distribution")
    k = check_num_tangents(num_tangents)
    if distribution == "orthogonal":
        return k / max(d, k)
    return k / (k + d + KURTOSIS[distribution] - 2)


def scale_by_perturbed_dim(
    *, num_tangents: int = 1, distribution: Distribution = "rademacher"
) -> optax.GradientTransformation:
    """An optax transformation that scales forward-gradient updates by `perturbed_dim_factor`.

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

    def update_fn(
        updates: optax.Updates, state: optax.EmptyState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, optax.EmptyState]:
        del params
        factor = perturbed_dim_factor(
            _num_float_entries(updates), num_tangents=num_tangents, distribution=distribution
        )
        return jax.tree_util.tree_map(
            lambda u: u * factor if jnp.issubdtype(jnp.result_type(u), jnp.floating) else u, updates
        ), state

    def init_fn(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    return optax.GradientTransformation(init_fn, update_fn)


def _check_learning_rate(
    learning_rate: float | jax.Array | optax.Schedule,
) -> float | jax.Array | optax.Schedule:
    """A positive finite number, a scalar float array (traced: unchecked) or a schedule."""
    if callable(learning_rate):
        return learning_rate
    if isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, bool):
        _checks.per_row(learning_rate, "learning_rate", (), jnp.float32)
        return learning_rate
    shape, dtype = getattr(learning_rate, "shape", ()), getattr(learning_rate, "dtype", None)
    if dtype is not None and (shape != () or not jnp.issubdtype(dtype, jnp.floating)):
        raise TypeError(
            "`learning_rate` given as an array must be a float scalar, got shape "
            f"{shape} and dtype {dtype}"
        )
    try:
        return _checks.per_row(learning_rate, "learning_rate", (), jnp.result_type(learning_rate))
    except TypeError as err:
        raise TypeError(
            "`learning_rate` must be a positive float or an optax schedule (a callable of "
            f"the step count), got learning_rate={learning_rate!r}"
        ) from err


def fgd(
    learning_rate: float | jax.Array | optax.Schedule, *, decay: float = 0.0
) -> optax.GradientTransformation:
    r"""Forward gradient descent with Baydin et al.'s decay $\eta_i = \eta(i)\, e^{-i k}$.

    Plain SGD on the estimates (``optax.sgd``); $\eta(i)$ is the constant
    ``learning_rate`` or the optax schedule ``learning_rate(i)``, times an exponential decay.

    Args:
        learning_rate: $\eta_0 > 0$ (a Python number, checked here; a float scalar array,
            checked when concrete, so that it can be traced) or an optax schedule, a function of
            the step count such as ``optax.cosine_decay_schedule(0.1, 1000)``.
        decay: $k \ge 0$ per step (0 keeps the rate, or the schedule, unchanged).

    Returns:
        An ``optax.GradientTransformation``.

    Raises:
        ValueError: if ``learning_rate`` is a number (or a concrete array) that is not positive and
            finite, or ``decay`` is not a number >= 0.
        TypeError: if ``learning_rate`` is neither a real number, a float scalar array nor a
            callable.

    Examples:
        >>> import optax
        >>> from softops.forward_grad import fgd
        >>> opt = fgd(0.01, decay=1e-4)
        >>> opt = fgd(optax.constant_schedule(0.1))
    """
    learning_rate = _check_learning_rate(learning_rate)
    decay = _checks.tolerance(decay, "decay", allow_none=False)
    if decay == 0:
        return optax.sgd(learning_rate)

    def schedule(count: jax.Array) -> jax.Array:
        rate = learning_rate(count) if callable(learning_rate) else learning_rate
        return rate * jnp.exp(count.astype(jnp.float32) * (-decay))

    return optax.sgd(schedule)
