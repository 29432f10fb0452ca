r"""Mixture-of-experts routing with exactly sparse gates.

A router maps the scores of T tokens over E experts, `scores` `[..., T, E]` (the leading axes are
groups of tokens routed independently, e.g. one group per device), to

- **gates**: a soft top-k mask with exact zeros
  ([soft_topk_mask][softops.topk_ot.soft_topk_mask] with `regularization="l2"`, `"p=3/2"` or
  `"p=4/3"`; see [softops.sparse_topk][]), differentiable in the scores: only the experts with a
  nonzero gate run;
- **combine weights**: the router probabilities $p = \mathrm{softmax}(\text{scores})$ times the
  gates, renormalized over the selected experts (token choice), so an expert enters and leaves a
  token's mixture continuously; as the temperature goes to 0 they become the usual top-k
  routing weights $p_e / \sum_{e' \in \mathrm{top}k} p_{e'}$;
- **dispatch**: the indices of the nonzero gates and their positions in each expert's buffer of
  static size `capacity`; assignments past the capacity (or past the static number of slots)
  are dropped, reported, and get combine weight 0.

[token_choice][softops.routing.token_choice]: each token picks about k experts
(`sum_e gates = k`). [expert_choice][softops.routing.expert_choice]: each expert picks
`capacity` tokens of the group (`sum_t gates = capacity`; Zhou et al., 2022). The auxiliary
losses [load_balancing_loss][softops.routing.load_balancing_loss] (Fedus et al., 2021) and
[router_z_loss][softops.routing.router_z_loss] (Zoph et al., 2022) take the same arrays.

Everything is per group: under `jit`, `vmap`, `grad`, `jvp`, with bfloat16 scores (computed in
float32), and with the group axes sharded over devices, with no communication.

References: Sander et al., Fast, Differentiable and Sparse Top-k: a Convex Analysis Perspective,
ICML 2023, arXiv:2302.01425; Fedus, Zoph, Shazeer, Switch Transformers, JMLR 2022,
arXiv:2101.03961; Zhou et al., Mixture-of-Experts with Expert Choice Routing, NeurIPS 2022,
arXiv:2202.09368; Zoph et al., ST-MoE, arXiv:2202.08906.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from softops import _checks, _sort
from softops._ot import ops
from softops._ot.ops import MaskRegularization
from softops._sharding import on_batch_shards, take_last

__all__ = [
    "ExpertChoiceRouting",
    "TokenChoiceRouting",
    "expert_choice",
    "load_balancing_loss",
    "router_z_loss",
    "token_choice",
]


class TokenChoiceRouting(NamedTuple):
    """Result of [token_choice][softops.routing.token_choice] (S = `slots`).

    Attributes:
        gates: `[..., T, E]` the soft top-k mask of the scores (exact zeros; sums to k).
        combine: `[..., T, E]` combine weights: `softmax(scores) * gates` renormalized over the
            token's selected experts; 0 where the gate is 0 or the assignment was dropped.
        expert_index: `[..., T, S]` int32, the token's experts by decreasing gate (the first
            S of them; entries with a zero gate are not kept).
        position: `[..., T, S]` int32, the assignment's slot in its expert's buffer, or
            `capacity` where it is not kept (an index that a `mode="drop"` scatter drops).
        kept: `[..., T, S]` bool: a nonzero gate within the expert's capacity.
        dropped: `[...]` int32: assignments with a nonzero gate that were not kept (over capacity
            or beyond the S slots).
        load: `[..., E]` fraction of the group's tokens dispatched to each expert.
        importance: `[..., E]` mean router probability of each expert over the group.
    """

    gates: jax.Array
    combine: jax.Array
    expert_index: jax.Array
    position: jax.Array
    kept: jax.Array
    dropped: jax.Array
    load: jax.Array
    importance: jax.Array


class ExpertChoiceRouting(NamedTuple):
    """Result of [expert_choice][softops.routing.expert_choice] (S = `slots`).

    Attributes:
        gates: `[..., T, E]` the soft top-`capacity` mask of each expert's column of scores
            (exact zeros; each column sums to `capacity`).
        combine: `[..., T, E]` combine weights `softmax(scores) * gates`, 0 where dropped.
        token_index: `[..., E, S]` int32, each expert's tokens by decreasing gate.
        kept: `[..., E, S]` bool: a nonzero gate (within the S slots).
        dropped: `[...]` int32: nonzero gates beyond the S slots of their expert.
        load: `[..., E]` fraction of the group's tokens each expert processes.
        importance: `[..., E]` mean router probability of each expert over the group.
    """

    gates: jax.Array
    combine: jax.Array
    token_index: jax.Array
    kept: jax.Array
    dropped: jax.Array
    load: jax.Array
    importance: jax.Array


def _scores(scores) -> tuple[jax.Array, int, int]:
    scores = _checks.floating(scores, "scores")
    if scores.ndim < 2:
        raise ValueError(
            f"`scores` must have shape [..., tokens, experts], got shape {scores.shape}"
        )
    return scores, scores.shape[-2], scores.shape[-1]


def _count(value, name: str, low: int, high: int) -> int:
    value = _checks.integer(value, name, minimum=low)
    if value > high:
        raise ValueError(f"`{name}` must satisfy {low} <= {name} <= {high}, got {name}={value}")
    return value


def _gates(scores, k, axis, regularization, temperature, max_iter):
    _checks.choice(regularization, ops.MASK_REGULARIZATIONS, "regularization")
    temperature = ops.DEFAULT_TEMPERATURE if temperature is None else temperature
    return ops.mask_op(
        scores,
        k,
        axis=axis,
        max_iter=max_iter,
        temperature=temperature,
        regularization=regularization,
    )[0]


@functools.partial(jax.jit, static_argnames=("axis",))
def _finite_rows(scores, axis):
    """(scores with the bad rows replaced by 0, the good rows along ``axis``).

    A row with a non-finite score gives NaN values and exactly 0 derivatives: its inputs are
    replaced before any computation.
    """
    good = jnp.all(jnp.isfinite(scores), axis=axis, keepdims=True)
    return jnp.where(good, scores, 0), good


def _top_slots(values, slots: int):
    """Indices and values of the ``slots`` largest entries along the last axis (descending).

    Runs per batch shard (the sort's index operand has no sharding of its own).
    """

    def top(values):
        order = _sort.argsort(values.astype(_checks.compute_dtype(values.dtype)), descending=True)
        index = order[..., :slots]
        return index, take_last(values, index)

    return on_batch_shards(top, values, name="scores")


def token_choice(
    scores: ArrayLike,
    k: int,
    *,
    capacity: int | None = None,
    slots: int | None = None,
    regularization: MaskRegularization = "l2",
    temperature: float | ArrayLike | None = None,
    max_iter: int = 100,
) -> TokenChoiceRouting:
    r"""Token-choice routing: each token's sparse soft top-k over the experts.

    Capacity priority follows GShard/Switch: every token's first expert (largest gate) is
    placed before any second one, then in token order within the group.

    Args:
        scores: router logits `[..., T, E]` (leading axes: independent groups).
        k: experts per token, `1 <= k <= E` (the gates of a token sum to k).
        capacity: buffer size of each expert per group (static); default T (nothing dropped).
        slots: static number of experts dispatched per token (default `min(E, k + 1)`: a
            sparse mask has k nonzeros at low temperature, sometimes a few more).
        regularization: the gates' mask, `"l2"` (default), `"p=3/2"`, `"p=4/3"` (exactly
            sparse) or `"kl"` (entropic: no exact zeros, every expert selected).
        temperature: strength in the units of the scores (default 1.0), a number or `[...]`
            of the group shape plus T (per token).
        max_iter: maximum passes of the threshold search.

    Returns:
        A [TokenChoiceRouting][softops.routing.TokenChoiceRouting].

    Raises:
        ValueError: `scores` of fewer than 2 axes, `k`, `capacity` or `slots` out of range,
            a bad `regularization` or `temperature`.
        TypeError: non-floating `scores`, non-int `k`, `capacity` or `slots`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import numpy as np
        >>> scores = jnp.array([[2.0, 0.1, 1.0, -1.0], [0.0, 3.0, 2.75, 0.5]])
        >>> out = token_choice(scores, 1, temperature=0.5, capacity=1)
        >>> np.asarray(out.gates).round(3).tolist()
        [[1.0, 0.0, 0.0, 0.0], [0.0, 0.75, 0.25, 0.0]]
        >>> out.expert_index[:, 0].tolist(), out.kept.tolist()
        ([0, 1], [[True, False], [True, True]])
    """
    scores, n_tokens, n_experts = _scores(scores)
    k = _count(k, "k", 1, n_experts)
    capacity = n_tokens if capacity is None else _count(capacity, "capacity", 0, n_tokens)
    slots = min(n_experts, k + 1) if slots is None else _count(slots, "slots", 1, n_experts)
    gates = _gates(scores, k, scores.ndim - 1, regularization, temperature, max_iter)
    return _token_tail(scores, gates, capacity=capacity, slots=slots)


def expert_choice(
    scores: ArrayLike,
    capacity: int,
    *,
    slots: int | None = None,
    regularization: MaskRegularization = "l2",
    temperature: float | ArrayLike | None = None,
    max_iter: int = 100,
) -> ExpertChoiceRouting:
    r"""Expert-choice routing: each expert's sparse soft top-`capacity` over the group's tokens.

    The gates of expert e are the soft top-`capacity` mask of the column `scores[..., :, e]`
    (so every expert processes about `capacity` tokens: perfect load balance by construction;
    a token may be picked by several experts or by none). The combine weight of (t, e) is the
    router probability `softmax(scores)[t, e]` times the gate (Zhou et al., 2022, without
    renormalization).

    Args:
        scores: router logits `[..., T, E]` (leading axes: independent groups).
        capacity: tokens per expert per group, `1 <= capacity <= T` (static).
        slots: static buffer size per expert (default `capacity`); nonzero gates beyond it
            (a fractional one at the threshold) are dropped and reported.
        regularization: `"l2"` (default), `"p=3/2"`, `"p=4/3"` or `"kl"`.
        temperature: strength in the units of the scores (default 1.0), a number or an array
            of the group shape plus E (per expert).
        max_iter: maximum passes of the threshold search.

    Returns:
        An [ExpertChoiceRouting][softops.routing.ExpertChoiceRouting].

    Raises:
        ValueError: `scores` of fewer than 2 axes, `capacity` or `slots` out of range, a bad
            `regularization` or `temperature`.
        TypeError: non-floating `scores`, non-int `capacity` or `slots`.

    Examples:
        >>> import jax.numpy as jnp
        >>> scores = jnp.array([[2.0, 0.0], [0.0, 3.0], [1.0, 2.5]])
        >>> out = expert_choice(scores, 1, temperature=0.1)
        >>> out.gates.tolist(), out.token_index[..., 0].tolist()
        ([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [0, 1])
    """
    scores, n_tokens, n_experts = _scores(scores)
    capacity = _count(capacity, "capacity", 1, n_tokens)
    slots = capacity if slots is None else _count(slots, "slots", 1, n_tokens)
    # The group is the unit: a non-finite score or a bad temperature makes the group's gates
    # and combine weights NaN, with zero derivatives (its inputs replaced before any kernel).
    safe, good = _finite_rows(scores, (-2, -1))
    gates = _gates(safe, capacity, scores.ndim - 2, regularization, temperature, max_iter)
    return _expert_tail(scores, safe, good, gates, slots=slots)


def load_balancing_loss(scores: ArrayLike, dispatch: ArrayLike) -> jax.Array:
    r"""Switch Transformer's auxiliary load-balancing loss, per group.

    $E \sum_e f_e P_e$ with $f_e$ the fraction of the group's assignments that go to expert e
    (from `dispatch`) and $P_e$ the mean router probability of e; 1 when both are uniform.
    Pass a 0/1 dispatch mask (e.g. `routing.gates > 0`, or a hard top-k's) for Fedus et al.'s
    loss, whose gradient flows through $P$ only; passing the gates themselves makes $f$
    differentiable too.

    Args:
        scores: router logits `[..., T, E]`.
        dispatch: `[..., T, E]` (or broadcastable to it), non-negative, boolean or floating.

    Returns:
        The loss per group, `[...]` (average it over groups for a scalar).

    Examples:
        >>> import jax.numpy as jnp
        >>> float(load_balancing_loss(jnp.zeros((4, 2)), jnp.eye(2)[jnp.array([0, 1, 0, 1])]))
        1.0
    """
    scores, _, n_experts = _scores(scores)
    dtype = _checks.compute_dtype(scores.dtype)
    given: jax.Array = _checks.array(dispatch, "dispatch")
    given = _checks.real(given.astype(dtype) if given.dtype == jnp.bool_ else given,
                         "dispatch", dtype)  # fmt: skip
    try:
        given = jnp.broadcast_to(given, scores.shape)
    except ValueError:
        raise ValueError(
            f"`dispatch` must broadcast to the shape of `scores` {scores.shape}, got shape "
            f"{given.shape}"
        ) from None
    return _load_balancing(scores, given)


def router_z_loss(scores: ArrayLike) -> jax.Array:
    r"""ST-MoE's router z-loss per group: the mean over tokens of $\mathrm{logsumexp}(s_t)^2$.

    Keeps the router logits small (Zoph et al., 2022).

    Args:
        scores: router logits `[..., T, E]`.

    Returns:
        `[...]`, one value per group.

    Examples:
        >>> import jax.numpy as jnp
        >>> round(float(router_z_loss(jnp.zeros((3, 4)))), 4)
        1.9218
    """
    scores, _, _ = _scores(scores)
    return _z_loss(scores)


@functools.partial(jax.jit, static_argnames=("capacity", "slots"))
def _token_tail(scores, gates, *, capacity: int, slots: int) -> TokenChoiceRouting:
    """token_choice after validation and the gates (jitted: no eager host scalars)."""
    n_tokens, n_experts = scores.shape[-2:]
    dtype = _checks.compute_dtype(scores.dtype)
    # A token with a non-finite score or a bad temperature (NaN gates): NaN combine weights,
    # zero derivatives; the group's importance is NaN.
    safe, good = _finite_rows(scores, -1)
    good = good & ~jnp.isnan(gates).any(axis=-1, keepdims=True)
    probs = jax.nn.softmax(jnp.where(good, safe, 0).astype(dtype), axis=-1)
    index, chosen = _top_slots(lax.stop_gradient(gates), slots)
    nonzero = chosen > 0
    # one_hot[t, j, e]: slot j of token t goes to expert e. Priority: slot, then token.
    experts = lax.broadcasted_iota(jnp.int32, (1,) * index.ndim + (n_experts,), index.ndim)
    one_hot = ((index[..., None] == experts) & nonzero[..., None]).astype(jnp.int32)
    i32 = jnp.int32
    before = jnp.cumsum(one_hot, axis=-3, dtype=i32) - one_hot  # same slot, earlier tokens
    totals = one_hot.sum(axis=-3, dtype=i32)  # [..., S, E]
    earlier = jnp.cumsum(totals, axis=-2, dtype=i32) - totals  # earlier slots, all tokens
    position = ((before + earlier[..., None, :, :]) * one_hot).sum(axis=-1, dtype=i32)
    kept = nonzero & (position < capacity)
    position = jnp.where(kept, position, capacity).astype(jnp.int32)
    kept_te = (one_hot * kept[..., None].astype(i32)).sum(axis=-2, dtype=i32) > 0  # [..., T, E]
    weight = probs * jnp.where(good, gates, 0).astype(dtype)
    total = weight.sum(axis=-1, keepdims=True)
    combine = weight / jnp.where(total > 0, total, 1)
    combine = jnp.where(good, jnp.where(kept_te, combine, 0), jnp.nan)
    dropped = (gates > 0).sum(axis=(-2, -1), dtype=i32) - kept.sum(axis=(-2, -1), dtype=i32)
    load = kept_te.sum(axis=-2, dtype=i32) / n_tokens
    importance = jnp.where(good.all(axis=-2), probs.mean(axis=-2), jnp.nan)
    return TokenChoiceRouting(
        gates, combine.astype(scores.dtype), index.astype(i32), position, kept, dropped,
        load.astype(dtype), importance,
    )  # fmt: skip


@functools.partial(jax.jit, static_argnames=("slots",))
def _expert_tail(scores, safe, good, gates, *, slots: int) -> ExpertChoiceRouting:
    """expert_choice after validation and the gates (jitted: no eager host scalars)."""
    n_tokens = scores.shape[-2]
    good = good & ~jnp.isnan(gates).any(axis=(-2, -1), keepdims=True)
    gates = jnp.where(good, gates, 0)
    dtype = _checks.compute_dtype(scores.dtype)
    probs = jax.nn.softmax(jnp.where(good, safe, 0).astype(dtype), axis=-1)
    index, chosen = _top_slots(jnp.swapaxes(lax.stop_gradient(gates), -1, -2), slots)
    kept = chosen > 0  # [..., E, S]
    tokens = lax.broadcasted_iota(jnp.int32, (1,) * index.ndim + (n_tokens,), index.ndim)
    in_slot = (index[..., None] == tokens) & kept[..., None]  # [..., E, S, T]
    kept_te = jnp.swapaxes(in_slot.any(axis=-2), -1, -2)  # [..., T, E]
    combine = jnp.where(good, jnp.where(kept_te, probs * gates.astype(dtype), 0), jnp.nan)
    i32 = jnp.int32
    dropped = (gates > 0).sum(axis=(-2, -1), dtype=i32) - kept.sum(axis=(-2, -1), dtype=i32)
    load = kept_te.sum(axis=-2, dtype=i32) / n_tokens
    return ExpertChoiceRouting(
        jnp.where(good, gates, jnp.nan).astype(gates.dtype), combine.astype(scores.dtype),
        index.astype(i32), kept, dropped, load.astype(dtype),
        jnp.where(good[..., 0, :], probs.mean(axis=-2), jnp.nan),
    )  # fmt: skip


@jax.jit
def _load_balancing(scores, given):
    """load_balancing_loss after validation (jitted: no eager host scalars)."""
    n_experts = scores.shape[-1]
    # A group with a non-finite score or dispatch entry: NaN loss, zero derivatives.
    safe, good = _finite_rows(scores, (-2, -1))
    given, good_d = _finite_rows(given, (-2, -1))
    good = good & good_d
    probs = jax.nn.softmax(safe.astype(given.dtype), axis=-1).mean(axis=-2)
    counts = jnp.where(good, given, 0).sum(axis=-2)
    total = counts.sum(axis=-1, keepdims=True)
    frac = counts / jnp.where(total > 0, total, 1)
    return jnp.where(good[..., 0, 0], n_experts * (frac * probs).sum(axis=-1), jnp.nan)


@jax.jit
def _z_loss(scores):
    """router_z_loss after validation (jitted: no eager host scalars)."""
    dtype = _checks.compute_dtype(scores.dtype)
    safe, good = _finite_rows(scores, (-2, -1))  # a bad group: NaN, zero derivatives
    loss = (jax.nn.logsumexp(safe.astype(dtype), axis=-1) ** 2).mean(axis=-1)
    return jnp.where(good[..., 0, 0], loss, jnp.nan)
