"""Taps: the layers of a block whose output activities are perturbed (private).

``tap(fn, params, x)`` or ``tap(nnx_module, x)`` inside a block function marks a layer that learns
by activity perturbation; [`no_tap`][softops.forward_grad.no_tap] (public, re-exported by
[`softops.forward_grad`][softops.forward_grad]) is the tap that just applies the layer. The
weight gradient of a tapped layer is the exact transpose of its linear map
``params -> fn(params, x)`` applied to the estimate of its output's gradient.

The estimator runs a block with two taps of its own: ``ShapeTap`` (an abstract first trace, for
the activities' shapes) and ``PerturbingTap`` (the run whose JVP gives the estimates).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from softops._forward.leaves import float_positions, replace_at


def as_layer(layer: Any, args: Sequence[Any]) -> tuple[Callable, Any, Any]:
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
    """Applies a layer as the ``tap`` of an activity estimator does, without perturbing it.

    (The estimator: [`activity_value_and_grad`][softops.forward_grad.activity_value_and_grad].)

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
    """What the estimator needs of a tapped layer, beyond its activities."""

    fn: Callable
    treedef: Any
    positions: tuple[int, ...]  # position of each of the layer's parameter leaves in the block's
    norm: Callable | None
    activation: Callable | None


class TapRecord(NamedTuple):
    """The activities of one tapped layer in the perturbed run of a block."""

    a: Any  # the layer's input
    z: jax.Array  # its output fn(params, a)
    s: jax.Array  # norm(z) plus the probe: the perturbed activity


class _Tap:
    """A tap with the signature of ``no_tap``; a subclass says what it does with a layer."""

    def __call__(
        self,
        layer: Any,
        *args: Any,
        norm: Callable | None = None,
        activation: Callable | None = None,
    ) -> jax.Array:
        fn, params, a = as_layer(layer, args)
        return self.apply(fn, params, a, norm, activation)

    def apply(
        self, fn: Callable, params: Any, a: Any, norm: Callable | None, activation: Callable | None
    ) -> jax.Array:
        """``activation(norm(fn(params, a)))``, perturbed or recorded as the tap does."""
        raise NotImplementedError


class ShapeTap(_Tap):
    """The tap of a first, abstract trace of a block: records each tapped activity's shape."""

    def __init__(self) -> None:
        self.avals: list[jax.ShapeDtypeStruct] = []

    def apply(
        self, fn: Callable, params: Any, a: Any, norm: Callable | None, activation: Callable | None
    ) -> jax.Array:
        """Applies the layer; records the shape of ``norm(fn(params, a))``."""
        s = fn(params, a)
        s = s if norm is None else norm(s)
        self.avals.append(jax.typeof(s))
        out = s if activation is None else activation(s)
        if activation is not None and jnp.shape(out) != jnp.shape(s):
            raise ValueError(
                "a tap's `activation` must be elementwise (keep the shape), got shape "
                f"{jnp.shape(s)} -> {jnp.shape(out)}"
            )
        return out


class PerturbingTap(_Tap):
    """The tap of the perturbed run: adds ``probes[i]`` to the ``i``-th tapped activity.

    ``position`` maps ``id(leaf)`` to the leaf's position in the block's parameters; the first
    run appends a ``TapInfo`` per tap to ``infos`` (shared by all runs of one trace), every run
    records its activities in ``records``.
    """

    def __init__(
        self, probes: Sequence[jax.Array], position: dict[int, int], infos: list[TapInfo]
    ) -> None:
        self.probes, self.position, self.infos = probes, position, infos
        self.records: list[TapRecord] = []

    def apply(
        self, fn: Callable, params: Any, a: Any, norm: Callable | None, activation: Callable | None
    ) -> jax.Array:
        """``activation(norm(fn(params, a)) + probe)``; records the activities."""
        i = len(self.records)
        if i >= len(self.probes):
            raise ValueError("`block` called `tap` more often than when first traced")
        leaves, treedef = jax.tree_util.tree_flatten(params)
        positions = tuple(self.position.get(id(leaf), -1) for leaf in leaves)
        if -1 in positions:
            raise TypeError(
                "the parameters of a tapped layer must be leaves of the block's "
                "`params`, passed unchanged (indexing a sub-tree is fine; computing "
                f"new arrays is not): leaf {positions.index(-1)} of tap {i} is not"
            )
        z = fn(params, a)
        s = (z if norm is None else norm(z)) + self.probes[i]
        self.records.append(TapRecord(a, z, s))
        if len(self.infos) == i:
            self.infos.append(TapInfo(fn, treedef, positions, norm, activation))
        return s if activation is None else activation(s)


def layer_grads(
    info: TapInfo, leaves: Sequence[Any], a: Any, ct: jax.Array
) -> dict[int, jax.Array]:
    """The exact transpose of ``params -> fn(params, a)`` at ``ct``, keyed by block position."""
    layer_leaves = [leaves[i] for i in info.positions]
    float_ids = float_positions(layer_leaves)

    def linear(*float_leaves: jax.Array) -> Any:
        return info.fn(
            jax.tree_util.tree_unflatten(
                info.treedef, replace_at(layer_leaves, float_ids, float_leaves)
            ),
            a,
        )

    try:
        cts = jax.linear_transpose(linear, *(layer_leaves[j] for j in float_ids))(ct)
    except (NotImplementedError, TypeError, ValueError) as err:
        raise ValueError(
            "a layer passed to `tap` must be linear in its parameters (dense, convolution or "
            "einsum layers, with their biases, are); transposing it failed with: "
            f"{type(err).__name__}: {err}"
        ) from err
    return {info.positions[j]: c for j, c in zip(float_ids, cts)}
