"""One block's activity-perturbed forward gradient, in named steps (private).

``make_block_estimator`` (behind ``activity_value_and_grad`` and ``local_value_and_grad``)
returns a ``BlockEstimator``, whose call ``(seeds, params, x, *targets) -> ((value, h), grads)``
runs, in order:

1. ``trace_activities``: an abstract trace of the block, for the tapped activities' shapes;
2. ``draw_tangents``: per-example tangents of the activities, and zero probes to perturb;
3. ``perturbed_jvp``: one JVP of the block along the tangents of the probes;
4. ``local_loss``: the head and loss, differentiated exactly (reverse mode through them only);
5. ``directional_derivatives``: per tangent (and example, and group), the loss's derivative;
6. ``layer_estimates``: the activity estimates, mapped to weight gradients by each layer's exact
   transpose, beside the head's exact gradients.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

import jax
import jax.numpy as jnp
from jax import lax

from softops import _checks
from softops._forward import noise
from softops._forward.leaves import float0_zeros, float_positions, is_float, replace_at
from softops._forward.tangents import check_num_tangents, example_tangents, jvp_tangents, nan_flags
from softops._forward.tap import PerturbingTap, ShapeTap, TapInfo, TapRecord, layer_grads
from softops._sharding import explicit_spec, to_varying

#: Whose directional derivative weighs a tangent: each example's own loss, or the batch's mean.
Estimator = Literal["per_example", "batch"]
ESTIMATORS: tuple[str, ...] = get_args(Estimator)


def check_options(
    num_tangents: Any, distribution: Any, num_groups: Any, estimator: Any, axis_name: Any
) -> int:
    """Validates the options of an activity-perturbed estimator; returns ``num_tangents``."""
    k = check_num_tangents(num_tangents)
    _checks.choice(distribution, noise.IID_DISTRIBUTIONS, "distribution")
    _checks.choice(estimator, ESTIMATORS, "estimator")
    _checks.integer(num_groups, "num_groups", minimum=1)
    if axis_name is not None and not isinstance(axis_name, (str, tuple)):
        raise TypeError(f"`axis_name` must be a str or None, got axis_name={axis_name!r}")
    return k


def _group_split(x: jax.Array, groups: int) -> jax.Array:
    """``[..., D] -> [..., G, D / G]``."""
    return x.reshape(x.shape[:-1] + (groups, x.shape[-1] // groups))


def _combine(coef: jax.Array, u: jax.Array, groups: int, per_example: bool) -> jax.Array:
    r"""``\frac1K \sum_k coef[k, (n), g] u[k, n, ..., g, :]``, shaped like ``u[0]``."""
    k = u.shape[0]
    ug = _group_split(u, groups)  # [K, B, ..., G, D/G]
    middle = (1,) * (u.ndim - 3)
    if per_example:  # coef [K, B, G]
        c = coef.reshape(coef.shape[:2] + middle + (groups, 1))
    else:  # coef [K, G]
        c = coef.reshape((k, 1) + middle + (groups, 1))
    est = jnp.sum(c.astype(u.dtype) * ug, axis=0) * jnp.asarray(1.0 / k, u.dtype)
    return est.reshape(u.shape[1:])


def _check_activities(avals: list[jax.ShapeDtypeStruct], h_aval: Any, groups: int) -> int:
    """Raises unless the activities and ``h`` are float, batched and divisible in groups."""
    if not avals:
        raise ValueError("`block` must call `tap` at least once (on the layers that learn)")
    if not isinstance(h_aval, jax.ShapeDtypeStruct) or not h_aval.shape:
        raise ValueError(f"`block` must return one array with a batch axis, got {h_aval}")
    batch = h_aval.shape[0]
    for i, aval in enumerate(avals + [h_aval]):
        what = "the block's output h" if i == len(avals) else f"tapped activity {i}"
        if not jnp.issubdtype(aval.dtype, jnp.floating):
            raise TypeError(f"{what} must be floating point, got dtype {aval.dtype}")
        if not aval.shape or aval.shape[0] != batch:
            raise ValueError(
                f"{what} must have the batch ({batch}, the leading axis of h) as its "
                f"leading axis, got shape {aval.shape}"
            )
        if aval.shape[-1] % groups or (groups > 1 and len(aval.shape) < 2):
            raise ValueError(
                f"the last axis of {what} must be divisible by num_groups={groups}, got "
                f"shape {aval.shape}"
            )
    return batch


@dataclasses.dataclass(frozen=True)
class BlockEstimator:
    """``activity_value_and_grad`` of one block, taking a ``uint32[2]`` seed pair, not a key."""

    block: Callable
    head: Callable
    loss: Callable
    num_tangents: int
    distribution: noise.IidDistribution
    groups: int
    per_example: bool
    axis_name: str | None

    def __call__(
        self, seeds: jax.Array, params: Any, x: Any, *targets: Any
    ) -> tuple[tuple[jax.Array, jax.Array], Any]:
        leaves, treedef = jax.tree_util.tree_flatten(params)
        params = jax.tree_util.tree_unflatten(treedef, leaves)  # taps find these leaves by id
        avals, batch = self.trace_activities(params, x)
        tangents, probes = self.draw_tangents(seeds, avals, x, batch)
        h, h_dot, records, infos = self.perturbed_jvp(params, x, leaves, tangents, probes)
        float_ids = float_positions(leaves)
        # Inside shard_map, the float leaves typed as varying over the axis (see to_varying).
        varying_leaves = replace_at(
            leaves, float_ids, to_varying([leaves[i] for i in float_ids], self.axis_name)
        )
        ell, head_grads, g_h = self.local_loss(
            treedef, varying_leaves, float_ids, h, targets, batch
        )
        coef = self.directional_derivatives(g_h, h_dot)
        grads = self.layer_estimates(
            leaves, varying_leaves, float_ids, head_grads, coef, infos, records, tangents
        )
        value = jnp.mean(ell)
        if self.axis_name is not None:
            value = lax.pmean(value, self.axis_name)
            grads = replace_at(
                grads, float_ids, lax.pmean([grads[i] for i in float_ids], self.axis_name)
            )
        return (value, h), jax.tree_util.tree_unflatten(treedef, grads)

    def trace_activities(self, params: Any, x: Any) -> tuple[list[jax.ShapeDtypeStruct], int]:
        """The tapped activities' shapes and the batch size (trace only: no computation)."""
        tap = ShapeTap()
        h_aval = jax.eval_shape(lambda p, a: self.block(p, a, tap), params, x)
        return tap.avals, _check_activities(tap.avals, h_aval, self.groups)

    def draw_tangents(
        self, seeds: jax.Array, avals: list[jax.ShapeDtypeStruct], x: Any, batch: int
    ) -> tuple[list[jax.Array], list[jax.Array]]:
        """Per-example tangents ``[K, B, ...]`` (by global example index) and zero probes."""
        activity_seeds = noise.derive_seeds(seeds, len(avals))
        flags = nan_flags(x, batch)
        offset: int | jax.Array = 0
        total: int | None = None
        if self.axis_name is not None:
            size = lax.axis_size(self.axis_name)
            offset, total = lax.axis_index(self.axis_name) * batch, batch * size
        tangents, probes = [], []
        for i, aval in enumerate(avals):
            spec = explicit_spec(aval)
            tangents.append(
                example_tangents(
                    activity_seeds[i],
                    aval,
                    self.num_tangents,
                    self.distribution,
                    batch_offset=offset,
                    depends_on=flags,
                    batch_total=total,
                    sharding=None if spec is None else jax.P(None, *spec),
                )
            )
            probes.append(
                jnp.zeros(
                    aval.shape,
                    aval.dtype,
                    **({} if spec is None else {"out_sharding": aval.sharding}),
                )
            )
        return tangents, probes

    def perturbed_jvp(
        self,
        params: Any,
        x: Any,
        leaves: Sequence[Any],
        tangents: list[jax.Array],
        probes: list[jax.Array],
    ) -> tuple[jax.Array, jax.Array, list[TapRecord], list[TapInfo]]:
        """``h``, its tangents ``h_dot [K, B, ...]``, the taps' activities and descriptions."""
        position = {id(leaf): i for i, leaf in enumerate(leaves)}
        infos: list[TapInfo] = []

        def run(*perturbations: jax.Array) -> tuple[jax.Array, list[TapRecord]]:
            tap = PerturbingTap(perturbations, position, infos)
            return self.block(params, x, tap), tap.records

        h, h_dot, records = jvp_tangents(run, probes, tangents, self.num_tangents)
        return h, h_dot, records, infos

    def local_loss(
        self,
        treedef: Any,
        varying_leaves: list[Any],
        float_ids: list[int],
        h: jax.Array,
        targets: Sequence[Any],
        batch: int,
    ) -> tuple[jax.Array, list[jax.Array], jax.Array]:
        """Per-example losses, the head's gradients and ``g_h = dL/dh`` (``L`` their mean)."""

        def head_loss(float_leaves: list[jax.Array], h: jax.Array) -> jax.Array:
            tree = jax.tree_util.tree_unflatten(
                treedef, replace_at(varying_leaves, float_ids, float_leaves)
            )
            return self.loss(self.head(tree, h), *targets)

        ell, pullback = jax.vjp(head_loss, [varying_leaves[i] for i in float_ids], h)
        if jnp.shape(ell) != (batch,) or not jnp.issubdtype(jnp.result_type(ell), jnp.floating):
            raise ValueError(
                f"`loss` must return one real loss per example, shape ({batch},), got shape "
                f"{jnp.shape(ell)} and dtype {jnp.result_type(ell)}"
            )
        head_grads, g_h = pullback(jnp.full_like(ell, 1.0 / batch))
        return ell, head_grads, g_h

    def directional_derivatives(self, g_h: jax.Array, h_dot: jax.Array) -> jax.Array:
        """``coef[k, n, g] = g_h[n, group g] . h_dot[k, n, group g]``, or its sum over ``n``."""
        gh = _group_split(g_h, self.groups)
        hd = _group_split(h_dot, self.groups).astype(gh.dtype)
        coef = jnp.sum(
            gh[None] * hd, axis=tuple(range(2, hd.ndim - 2)) + (hd.ndim - 1,)
        )  # [K, B, G]
        if not self.per_example:
            coef = jnp.sum(coef, axis=1)  # [K, G]: the directional derivative of L
            if self.axis_name is not None:
                coef = lax.psum(coef, self.axis_name)
        return coef

    def layer_estimates(
        self,
        leaves: list[Any],
        varying_leaves: list[Any],
        float_ids: list[int],
        head_grads: list[jax.Array],
        coef: jax.Array,
        infos: list[TapInfo],
        records: list[TapRecord],
        tangents: list[jax.Array],
    ) -> list[Any]:
        """The gradient of every leaf: the head's exact one plus the tapped layers' estimates."""
        grads: list[Any] = replace_at([None] * len(leaves), float_ids, head_grads)
        for info, (a, z, s), u in zip(infos, records, tangents):
            est = _combine(coef, u, self.groups, self.per_example)
            if info.activation is not None:  # units whose true gradient is 0 get exactly 0
                slope = jax.jvp(info.activation, (s,), (jnp.ones_like(s),))[1]
                est = jnp.where(slope == 0, jnp.zeros_like(est), est)
            if info.norm is not None:
                _, norm_vjp = jax.vjp(info.norm, z)
                (est,) = norm_vjp(est.astype(jnp.result_type(s)))
            for i, g in layer_grads(
                info, varying_leaves, a, est.astype(jnp.result_type(z))
            ).items():
                grads[i] = g if grads[i] is None else grads[i] + g.astype(grads[i].dtype)
        return [
            float0_zeros(leaf)
            if not is_float(leaf)
            else jnp.zeros_like(leaf)
            if grads[i] is None
            else grads[i].astype(jnp.result_type(leaf))
            for i, leaf in enumerate(leaves)
        ]


def make_block_estimator(
    block: Callable,
    head: Callable,
    loss: Callable,
    *,
    num_tangents: int,
    distribution: noise.IidDistribution,
    num_groups: int,
    estimator: Estimator,
    axis_name: str | None,
) -> BlockEstimator:
    """``activity_value_and_grad``, taking a ``uint32[2]`` seed pair instead of a key."""
    if not callable(block) or not callable(head) or not callable(loss):
        raise TypeError("`block`, `head` and `loss` must be callables")
    k = check_options(num_tangents, distribution, num_groups, estimator, axis_name)
    return BlockEstimator(
        block, head, loss, k, distribution, int(num_groups), estimator == "per_example", axis_name
    )
