r"""Top-k classification losses (private; see [`softops.losses`][softops.losses])."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softops import _checks, _sharding
from softops.losses import _common
from softops.projection import REGULARIZATIONS, Regularization, soft_rank
from softops.topk_ot import soft_topk_mask


def soft_topk_rank_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    k: int = 1,
    regularization_strength: ArrayLike = 0.1,
    regularization: Regularization = "l2",
    squash: bool = True,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Top-k classification loss: hinge on the soft descending rank of the true class.

    Following Blondel et al. (2020, Section 6, CIFAR experiments), the logits are squashed into
    [0, 1] by the logistic function (``squash=True``) so that ε has a fixed scale, ranked in
    descending order (rank 1 = largest), and

    $$
    \ell(\theta, y) = \max\bigl(r_y(\sigma(\theta)) - k,\ 0\bigr),
    \qquad r = \mathrm{soft\_rank}_\varepsilon(\sigma(\theta), \text{descending}).
    $$

    As ε → 0 it is ``max(rank_y - k, 0)`` with the hard rank: zero exactly when the true class is
    in the top k (ties share their average rank). Under ``"l2"`` soft ranks lie in [1, n], so the
    loss is at most n - k; as ε → ∞ every rank tends to (n + 1)/2.

    Args:
        logits: ``[..., n_classes]`` floating array.
        labels: integer ``[...]`` (the batch shape) in ``[0, n_classes)``, on a class with
            ``where=True``: a known label elsewhere raises ``ValueError``, a traced one gives a
            NaN loss for that example.
        k: the ``k`` of top-k, ``1 <= k <= n_classes``.
        regularization_strength: ε > 0, a number or an array of the batch shape.
        regularization: ``"l2"``, ``"kl"``, ``"p=3/2"`` or ``"p=4/3"``.
        squash: apply the logistic function to the logits first.
        where: optional boolean ``[..., n_classes]``: the candidate classes (the label must be one).

    Returns:
        The losses, shape ``[...]``. An example with a non-finite logit among its candidate
        classes (or a traced strength that is not positive and finite) has a NaN loss and an
        exact 0 derivative (masked with ``jnp.where``, the other examples train).

    Raises:
        TypeError: for non-floating logits, non-integer labels, a non-int ``k`` or non-bool
            ``squash``.
        ValueError: for a bad ``k``, labels shape, known label, strength or ``regularization``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops.losses import soft_topk_rank_loss
        >>> logits = jnp.array([[2.0, 0.0, -2.0], [2.0, 0.0, -2.0]])
        >>> soft_topk_rank_loss(logits, jnp.array([0, 2]), k=1, regularization_strength=1e-3)
        Array([0., 2.], dtype=float32)
    """
    _checks.choice(regularization, REGULARIZATIONS, "regularization")
    squash = _checks.boolean(squash, "squash")
    x = _common.items(logits, "logits")
    k = _checks.k_value(k, x.shape[-1], (), minimum=1)
    labels_in, labels = labels, _common.labels(labels, x.shape[:-1])
    valid = _checks.where(where, x.shape)
    _common.known_labels(labels_in, where, x.shape[-1])
    eps = _common.strength(regularization_strength, x)
    out = _rank_loss(x, labels, eps, valid, k=k, regularization=regularization, squash=squash)
    return out.astype(x.dtype)


@functools.partial(jax.jit, static_argnames=("k", "regularization", "squash"))
def _rank_loss(x, labels, eps, valid, *, k, regularization, squash):
    def body(x, labels, eps, valid):
        # A bad example (a non-finite valid logit, a strength that is not positive and finite, a
        # label outside the candidate classes) is NaN with an exact 0 derivative: its inputs are
        # replaced before the soft rank (masked-out logits always: a NaN there takes no part).
        taking_part = jnp.ones(x.shape, bool) if valid is None else valid
        good = _checks.finite_rows(x, valid)
        good = good & (eps > 0) & jnp.isfinite(eps) & _common.label_ok(labels, valid, x.shape[-1])
        x = jnp.where(taking_part & good[..., None], x, 0)
        eps = jnp.where(good, eps, 1)
        z = jax.nn.sigmoid(x) if squash else x
        r = soft_rank(
            z,
            descending=True,
            regularization=regularization,
            regularization_strength=eps,
            where=valid,
        )
        return jnp.where(good, jax.nn.relu(_common.take_label(r, labels) - k), jnp.nan)

    return _sharding.on_batch_shards(body, x, labels, eps, valid, name="logits")


def soft_topk_mask_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    k: int = 1,
    epsilon: float | ArrayLike | None = None,
    temperature: float | ArrayLike | None = None,
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Top-k classification loss from the optimal-transport soft top-k mask.

    With $A = \mathrm{soft\_topk\_mask}(\theta, k)$
    ([`softops.soft_topk_mask`][softops.topk_ot.soft_topk_mask], entries in [0, 1] summing to k),
    the loss is the negative log mass on the true class,

    $$
    \ell(\theta, y) = -\log \max(A_y, \text{tiny}),
    $$

    with ``tiny`` the dtype's smallest normal number (the clip only acts where ``A_y`` underflows).
    We chose $-\log A_y$ over $1 - A_y$: since $A_y = \sigma((\theta_y -
    \tau)/T)$, it is the softplus $\log(1 + e^{-(\theta_y - \tau)/T})$, whose gradient does
    not vanish when the true class is far outside the top k. As ε → 0 it is 0 when the true class
    is strictly in the top k and grows without bound otherwise.

    Args:
        logits: ``[..., n_classes]`` floating array.
        labels: integer ``[...]`` in ``[0, n_classes)``, on a class with ``where=True``: a
            known label elsewhere raises ``ValueError``, a traced one gives a NaN loss for that
            example.
        k: the ``k`` of top-k, ``1 <= k <= n_classes``.
        epsilon: the mask's regularization (default 0.1), relative to the normalized cost.
        temperature: alternative to ``epsilon`` in the units of the logits; mutually exclusive.
        where: optional boolean ``[..., n_classes]`` of candidate classes.

    Returns:
        The losses, shape ``[...]``. An example with a non-finite logit among its candidate
        classes (or a traced strength that is not positive and finite) has a NaN loss and an
        exact 0 derivative (masked with ``jnp.where``, the other examples train).

    Raises:
        TypeError: for non-floating logits, non-integer labels or a non-int ``k``.
        ValueError: for a bad ``k``, labels shape, known label or strength.

    Examples:
        >>> import jax.numpy as jnp
        >>> from softops.losses import soft_topk_mask_loss
        >>> logits = jnp.array([3.0, 1.0, -1.0, -3.0])
        >>> soft_topk_mask_loss(logits, jnp.array(0), k=2, temperature=0.1) < 1e-6
        Array(True, dtype=bool)
    """
    x = _common.items(logits, "logits")
    k = _checks.k_value(k, x.shape[-1], (), minimum=1)
    labels_in, labels = labels, _common.labels(labels, x.shape[:-1])
    valid = _checks.where(where, x.shape)
    _common.known_labels(labels_in, where, x.shape[-1])
    if epsilon is not None and temperature is not None:  # the mask's own check, up front
        soft_topk_mask(x, k, epsilon=epsilon, temperature=temperature)
    kind, value = ("temperature", temperature) if temperature is not None else ("epsilon", epsilon)
    strength = None if value is None else _common.strength(value, x, kind)
    return _mask_loss(x, labels, strength, valid, k=k, kind=kind)


@functools.partial(jax.jit, static_argnames=("k", "kind"))
def _mask_loss(x, labels, strength, valid, *, k, kind):
    def body(x, labels, strength, valid):
        mask = soft_topk_mask(
            x, k, where=valid, **({kind: strength} if strength is not None else {})
        )
        # NaN for a bad row (the mask's own policy) or a label outside the candidate classes,
        # with an exact 0 derivative in both modes (no -log(NaN) tangent).
        a = _common.take_label(mask, labels)
        ok = ~jnp.isnan(a) & _common.label_ok(labels, valid, x.shape[-1])
        tiny = jnp.finfo(mask.dtype).tiny
        return jnp.where(ok, -jnp.log(jnp.maximum(jnp.where(ok, a, 1), tiny)), jnp.nan)

    return _sharding.on_batch_shards(body, x, labels, strength, valid, name="logits")
