r"""Activity-perturbed forward gradients for one block with a local head (private).

Public names are re-exported by [`softops.forward_grad`][softops.forward_grad].

A block maps its input ``x`` to an output ``h`` through layers that are linear in their parameters
(dense, convolution, einsum, each with its bias), marked by ``tap``. Instead of perturbing the
weights $W$ of a layer $z = W a$, we perturb its output activity, per example
$n$: $z_n \to z_n + u_n$ with i.i.d. zero-mean unit-variance $u_n$. One
``jax.jvp`` of the block gives the output tangent $\dot h_n$, and the local loss
$\ell_n = \mathrm{loss}(\mathrm{head}(h_n), y_n)$ the directional derivatives
$d_n = \nabla_{h_n}\ell_n \cdot \dot h_n = \nabla_{z_n}\ell_n \cdot u_n$. Then

$$
\hat g_{z_n} = \frac1B d_n u_n, \qquad \mathbb{E}[\hat g_{z_n}] = \nabla_{z_n} L,
\qquad \hat g_W = \sum_n \hat g_{z_n} a_n^\top
$$

for $L = \frac1B\sum_n \ell_n$: the weight estimate is the exact transpose of the linear map
$W \mapsto z(W; a)$ (``jax.linear_transpose``) applied to the activity estimate, unbiased,
with a variance that grows with the number of units of the block, not with its weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from softops._forward.block import Estimator, make_block_estimator
from softops._forward.noise import IidDistribution, key_seeds


def activity_value_and_grad(
    block: Callable,
    head: Callable,
    loss: Callable,
    *,
    num_tangents: int = 1,
    distribution: IidDistribution = "rademacher",
    num_groups: int = 1,
    estimator: Estimator = "per_example",
    axis_name: str | None = None,
) -> Callable:
    r"""Activity-perturbed forward gradient of one block trained on its local head and loss.

    Returns ``g(key, params, x, *targets) -> ((value, h), grads)``: ``value`` is the local loss
    $L = \frac1B\sum_n \ell_n$, ``h`` the block's output (the next block's input) and
    ``grads`` an unbiased estimate of $\nabla L$ with the structure of ``params``, where

    $$
    h = \mathrm{block}(\theta, x), \qquad
    \ell_n = \mathrm{loss}(\mathrm{head}(\theta, h), y)_n .
    $$

    Inside ``block(params, x, tap)``, every layer that should learn is called through ``tap``:
    ``tap(fn, layer_params, a, *, norm=None, activation=None)``, with ``fn(layer_params, a)``
    linear in ``layer_params`` (a sub-tree of ``params``, passed unchanged), or
    ``tap(nnx_module, a, ...)``. It returns ``activation(s + u)`` for $z =
    \mathrm{fn}(\theta_l, a)$, $s = \mathrm{norm}(z)$ and a random per-example tangent
    $u$ (zero in the primal): ``norm`` is a parameter-free map before the perturbation (the
    paper's layer normalization), ``activation`` an elementwise function after it (the paper's
    ReLU). One ``jax.jvp`` of the block (``num_tangents`` tangents batched with ``vmap``, the
    primal computed once) gives $\dot h$, and the per-example directional derivative
    $d_n = \nabla_{h_n}\ell_n\cdot\dot h_n = \nabla_{s_n}\ell_n \cdot u_n$ yields

    $$
    \hat g_{s_n} = \frac{1}{BK}\sum_{k} d_{kn} u_{kn}, \qquad
    \hat g_{z} = J_{\mathrm{norm}}^\top \hat g_s, \qquad
    \hat g_{W} = \Big(\frac{\partial z}{\partial W}\Big)^{\!\top} \hat g_z
    $$

    (the last two exact: the local vector-Jacobian product of ``norm`` and the transpose of the
    layer's linear map, e.g. $\sum_n a_n \hat g_{z_n}^\top$ for a dense layer); units where
    the activation's derivative is 0 (inactive ReLUs) get $\hat g_s = 0$, their true
    gradient. With ``num_groups`` $G > 1$ the last axis of every tapped activity and of
    ``h`` is split in $G$ contiguous groups and group $g$ of an activity uses only
    $d_{kng} = \nabla_{h_{ng}}\ell_n\cdot\dot h_{ng}$: the paper's local losses per group.
    That is unbiased for $\nabla L$ when activity group $g$ reaches ``h`` only through
    group $g$ of ``h`` (a tapped layer whose output is ``h`` through an elementwise
    activation; grouped or depthwise layers), with a variance that scales with the units per
    group instead of per block.

    The head and loss get their exact gradient (reverse mode through ``head`` and ``loss`` only,
    typically one small linear layer; never through the block), so head parameters learn as with
    backprop. Memory does not grow with the depth of a chain of blocks (see
    [`local_value_and_grad`][softops.forward_grad.local_value_and_grad]).

    Requirements: the block processes the examples independently (no batch statistics inside it,
    such as batch normalization in training mode; ``estimator="batch"`` lifts this, the head and
    loss may couple examples); every tapped activity and ``h`` have the batch as leading axis;
    parameters used neither through ``tap`` nor by ``head`` get a zero gradient. Layer functions
    must not close over values computed inside the block.

    Data parallelism: under ``jit`` with a batch sharded over devices it runs as is (the tangent
    of each example depends on its global index, not on the device). Inside ``shard_map`` or
    ``pmap`` pass ``axis_name`` and the same (replicated) key: the value and gradients are averaged
    over the axis (like the gradients of data-parallel backprop) and equal the single-device ones.

    Args:
        block: ``block(params, x, tap) -> h``, ``h`` an array with the batch as leading axis.
        head: ``head(params, h) -> outputs`` (e.g. logits), the local head; it may use any
            leaves of ``params`` (its own), differentiated exactly.
        loss: ``loss(outputs, *targets) -> [B]`` per-example losses.
        num_tangents: the number ``K`` of tangents averaged.
        distribution: ``"rademacher"`` (default, lowest variance) or ``"normal"``.
        num_groups: the number ``G`` of groups of the local loss (1: one loss per example).
        estimator: ``"per_example"`` (default: $d_n$ of each example's own loss) or
            ``"batch"`` (the directional derivative of $L$, one scalar per tangent and
            group, as weight perturbation uses; higher variance).
        axis_name: the mapped axis to average over inside ``shard_map``/``pmap``, or ``None``.

    Returns:
        A function of ``(key, params, x, *targets)``.

    Raises:
        ValueError: for an unknown ``distribution`` or ``estimator``, ``num_tangents < 1``,
            ``num_groups < 1``, a block that never calls ``tap``, a tapped activity or ``h``
            whose leading axis is not the batch or whose last axis is not divisible by
            ``num_groups``, a loss that is not one value per example, or a tapped layer that is
            not linear in its parameters.
        TypeError: for bad argument types, or layer parameters that are not leaves of ``params``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from softops.forward_grad import activity_value_and_grad
        >>> dense = lambda p, x: x @ p["w"] + p["b"]
        >>> def block(params, x, tap):
        ...     return tap(dense, params["hidden"], x, activation=jax.nn.relu)
        >>> def head(params, h):
        ...     return dense(params["head"], h)
        >>> def loss(logits, y):  # one value per example
        ...     return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1)[:, 0]
        >>> k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
        >>> params = {"hidden": {"w": jax.random.normal(k1, (4, 8)), "b": jnp.zeros(8)},
        ...           "head": {"w": jax.random.normal(k2, (8, 3)), "b": jnp.zeros(3)}}
        >>> x, y = jax.random.normal(k3, (16, 4)), jnp.arange(16) % 3
        >>> fvg = activity_value_and_grad(block, head, loss, num_tangents=4, num_groups=2)
        >>> (value, h), grads = jax.jit(fvg)(jax.random.key(1), params, x, y)
        >>> h.shape, grads["hidden"]["w"].shape
        ((16, 8), (4, 8))

    Reference:
        Ren, Kornblith, Liao, Hinton, Scaling Forward Gradient with Local Losses, ICLR 2023,
        arXiv:2210.03310.
    """
    estimate = make_block_estimator(
        block,
        head,
        loss,
        num_tangents=num_tangents,
        distribution=distribution,
        num_groups=num_groups,
        estimator=estimator,
        axis_name=axis_name,
    )

    def block_value_and_grad(
        key: jax.Array, params: Any, x: Any, *targets: Any
    ) -> tuple[tuple[jax.Array, jax.Array], Any]:
        return estimate(key_seeds(key), params, x, *targets)

    return block_value_and_grad
