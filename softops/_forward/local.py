r"""Local losses: a chain of blocks, each trained on its own head and loss (private).

Public names are re-exported by [`softops.forward_grad`][softops.forward_grad].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from softops._forward.block import Estimator, check_options, make_block_estimator
from softops._forward.noise import IidDistribution, derive_seeds, key_seeds


def local_value_and_grad(
    blocks: Sequence[Callable],
    heads: Sequence[Callable],
    loss: Callable,
    *,
    num_tangents: int = 1,
    distribution: IidDistribution = "rademacher",
    num_groups: int | Sequence[int] = 1,
    estimator: Estimator = "per_example",
    axis_name: str | None = None,
) -> Callable:
    r"""Activity-perturbed forward gradients of a chain of blocks, each with its local loss.

    Returns ``g(key, params, x, *targets) -> (values, grads)`` for ``params`` a list (or tuple) of
    per-block parameters: with $h_0 = x$ and

    $$
    h_b = \mathrm{block}_b(\theta_b, \mathrm{sg}(h_{b-1})), \qquad
    L_b = \frac1B \sum_n \mathrm{loss}(\mathrm{head}_b(\theta_b, h_b), y)_n,
    $$

    ($\mathrm{sg}$: stop-gradient) ``values[b]`` is $L_b$ and ``grads[b]`` an unbiased
    estimate of $\nabla_{\theta_b} L_b$ from
    [`activity_value_and_grad`][softops.forward_grad.activity_value_and_grad] (one ``jax.jvp`` per
    block, independent tangents per block). Together they are the gradient of $\sum_b L_b$ with the
    gradient stopped between blocks: each block learns greedily from its own head, so the noise of
    each estimate grows with the units of one block (one group of it with ``num_groups``), not with
    the depth. The last head is the model's output layer. Feed ``grads`` to any optax optimizer
    (``optimizer.update(grads, state, params)`` on the list).

    No block is ever differentiated in reverse mode, so the temporary memory does not grow with
    the number of blocks (only each head and loss, one small layer, is).

    With a Flax nnx model split in blocks (each an ``nnx.Module`` whose ``__call__(x, tap)`` calls
    ``tap(self.linear, x)`` and with a ``head`` sub-module): ``graphdefs, params = zip(*(
    nnx.split(b) for b in model.blocks))``, ``blocks = [lambda p, x, tap, g=g: nnx.merge(g, p)(x,
    tap) for g in graphdefs]`` and ``heads = [lambda p, h, g=g: nnx.merge(g, p).head(h) ...]``.
    Flax linen: ``lambda p, x, tap: tap(lambda q, a: dense.apply(q, a), p["dense"], x)``.

    Args:
        blocks: ``block_b(params_b, x, tap) -> h_b`` (see
            [`activity_value_and_grad`][softops.forward_grad.activity_value_and_grad]).
        heads: ``head_b(params_b, h_b) -> outputs``, one per block.
        loss: ``loss(outputs, *targets) -> [B]`` per-example losses, shared by the blocks.
        num_tangents: the number ``K`` of tangents per block.
        distribution: ``"rademacher"`` or ``"normal"``.
        num_groups: groups of the local loss, one int for all blocks or one per block.
        estimator: ``"per_example"`` or ``"batch"`` (see
            [`activity_value_and_grad`][softops.forward_grad.activity_value_and_grad]).
        axis_name: the mapped axis to average over inside ``shard_map``/``pmap``, or ``None``.

    Returns:
        A function of ``(key, params, x, *targets)`` returning ``(values, grads)``: a tuple of the
        blocks' scalar losses and a list (tuple if ``params`` is one) of their gradient estimates.

    Raises:
        ValueError: if ``blocks`` and ``heads`` (or ``num_groups``, or ``params``) differ in
            length, or as [`activity_value_and_grad`][softops.forward_grad.activity_value_and_grad]
            does.
        TypeError: as [`activity_value_and_grad`][softops.forward_grad.activity_value_and_grad]
            does.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from softops.forward_grad import local_value_and_grad
        >>> dense = lambda p, x: x @ p["w"] + p["b"]
        >>> def layer(n_in, n_out, key):
        ...     w = jax.random.normal(key, (n_in, n_out)) / n_in**0.5
        ...     return {"w": w, "b": jnp.zeros(n_out)}
        >>> block = lambda p, x, tap: tap(dense, p["layer"], x, activation=jax.nn.relu)
        >>> head = lambda p, h: dense(p["head"], h)
        >>> def loss(logits, y):
        ...     return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)[:, 0]
        >>> ks = jax.random.split(jax.random.key(0), 5)
        >>> params = [{"layer": layer(4, 16, ks[0]), "head": layer(16, 3, ks[1])},
        ...           {"layer": layer(16, 16, ks[2]), "head": layer(16, 3, ks[3])}]
        >>> x, y = jax.random.normal(ks[4], (32, 4)), jnp.arange(32) % 3
        >>> fvg = local_value_and_grad([block, block], [head, head], loss, num_groups=4)
        >>> values, grads = jax.jit(fvg)(jax.random.key(1), params, x, y)
        >>> len(values), grads[1]["layer"]["w"].shape
        (2, (16, 16))

    Reference:
        Ren, Kornblith, Liao, Hinton, Scaling Forward Gradient with Local Losses, ICLR 2023,
        arXiv:2210.03310.
    """
    blocks, heads = tuple(blocks), tuple(heads)
    if not blocks or len(blocks) != len(heads):
        raise ValueError(
            "`blocks` and `heads` must be non-empty and of equal length, got "
            f"{len(blocks)} blocks and {len(heads)} heads"
        )
    if isinstance(num_groups, (int, np.integer)) and not isinstance(num_groups, bool):
        groups = (int(num_groups),) * len(blocks)
    elif isinstance(num_groups, Sequence) and len(num_groups) == len(blocks):
        groups = tuple(num_groups)
    else:
        raise ValueError(
            f"`num_groups` must be an int or one int per block ({len(blocks)}), got "
            f"num_groups={num_groups!r}"
        )
    for g in groups:
        check_options(num_tangents, distribution, g, estimator, axis_name)
    estimators = [
        make_block_estimator(
            b,
            h,
            loss,
            num_tangents=num_tangents,
            distribution=distribution,
            num_groups=g,
            estimator=estimator,
            axis_name=axis_name,
        )
        for b, h, g in zip(blocks, heads, groups)
    ]

    def chain_value_and_grad(
        key: jax.Array, params: Any, x: Any, *targets: Any
    ) -> tuple[tuple[jax.Array, ...], list[Any] | tuple[Any, ...]]:
        if not isinstance(params, (list, tuple)) or len(params) != len(estimators):
            raise ValueError(
                f"`params` must be a list or tuple of {len(estimators)} per-block parameter "
                f"trees, got {type(params).__name__} of length {len(params)}"
            )
        block_seeds = derive_seeds(key_seeds(key), len(estimators))
        values, grads = [], []
        for estimate, p, s in zip(estimators, params, block_seeds):
            (value, x), g = estimate(s, p, x, *targets)  # h of this block is the next one's x
            values.append(value)
            grads.append(g)
        return tuple(values), (tuple(grads) if isinstance(params, tuple) else grads)

    return chain_value_and_grad
