"""Taps: the layers of a block whose output activities are perturbed (private).

``tap(fn, params, x)`` or ``tap(nnx_module, x)`` inside a block function marks a layer that learns
by activity perturbation; [`no_tap`][softops.forward_grad.no_tap] (public, re-exported by
[`softops.forward_grad`][softops.forward_grad]) is the tap that just applies the layer. The weight
gradient of a tapped layer is the exact transpose of its linear map ``params -> fn(params, x)``
applied to the estimate of its output's gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from softops._forward.tangents import is_float


def as_layer(layer, args) -> tuple[Callable, Any, Any]:
    """``(fn, params, x)`` from ``tap(fn, params, x)`` or ``tap(module, x)``."""
    if len(args) == 2:
        if not callable(layer):
            raise TypeError(f"tap(fn, params, x) needs a callable `fn`, got {layer!r}")
        return layer, args[0], args[1]
    if len(args) == 1:
        from flax import nnx

        if isinstance(layer, nnx.Module):
            graphdef, state = nnx.split(layer)
            return (lambda st, a: nnx.merge(graphdef, st)(a)), state, args[0]
        raise TypeError(
            "tap(layer, x) needs a Flax nnx Module as `layer`; for a function of parameters "
            f"use tap(fn, params, x), got layer of type {type(layer).__name__}"
        )
    raise TypeError(
        f"tap takes (fn, params, x) or (nnx_module, x), got {len(args) + 1} positional arguments"
    )


def no_tap(
    layer: Callable,
    *args: Any,
    norm: Callable | None = None,
    activation: Callable | None = None,
) -> Any:
    """Applies a layer as `activity_value_and_grad`'s ``tap`` does, without perturbing it.

    Pass it as the ``tap`` of a block function to run the block for inference (or to train it
    with backprop): ``tap(fn, params, x)`` returns ``fn(params, x)``, ``tap(module, x)`` returns
    ``module(x)``, then ``norm`` and ``activation`` (if given) are applied to the result.

    Args:
        layer: a function ``fn(params, x)``, or a Flax nnx Module called as ``module(x)``.
        *args: ``(params, x)`` for a function, ``(x,)`` for a module.
        norm: an optional parameter-free function applied to the layer's output.
        activation: an optional elementwise function applied last.

    Returns:
        ``activation(norm(layer output))`` (each if given).

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops.forward_grad import no_tap
        >>> dense = lambda p, x: x @ p["w"] + p["b"]
        >>> no_tap(dense, {"w": jnp.eye(2), "b": jnp.ones(2)}, jnp.ones((1, 2)))
        Array([[2., 2.]], dtype=float32)
    """
    fn, params, x = as_layer(layer, args)  # validates the call
    z = layer(x) if len(args) == 1 else fn(params, x)
    z = z if norm is None else norm(z)
    return z if activation is None else activation(z)


class TapInfo(NamedTuple):
    fn: Callable
    treedef: Any
    positions: tuple[int, ...]  # position of each of the layer's parameter leaves in the block's
    norm: Callable | None
    activation: Callable | None


def layer_grads(info: TapInfo, leaves: list, a, ct) -> dict[int, jax.Array]:
    """The exact transpose of ``params -> fn(params, a)`` at ``ct``, keyed by block position."""
    lp = [leaves[i] for i in info.positions]
    fids = [j for j, leaf in enumerate(lp) if is_float(leaf)]

    def linear(*float_leaves):
        new = list(lp)
        for j, v in zip(fids, float_leaves):
            new[j] = v
        return info.fn(jax.tree_util.tree_unflatten(info.treedef, new), a)

    try:
        cts = jax.linear_transpose(linear, *(lp[j] for j in fids))(ct)
    except (NotImplementedError, TypeError, ValueError) as err:
        raise ValueError(
            "a layer passed to `tap` must be linear in its parameters (dense, convolution or "
            "einsum layers, with their biases, are); transposing it failed with: "
            f"{type(err).__name__}: {err}"
        ) from err
    return {info.positions[j]: c for j, c in zip(fids, cts)}
