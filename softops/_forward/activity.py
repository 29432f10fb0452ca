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
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax

from softops import _checks
from softops._forward.tangents import (
    check_num_tangents,
    derive_seeds,
    example_tangents,
    float0_zeros,
    is_float,
    key_seeds,
    nan_flags,
)
from softops._forward.tap import TapInfo, as_layer, layer_grads
from softops._sharding import explicit_spec, to_varying

Estimator = Literal["per_example", "batch"]
ESTIMATORS = ("per_example", "batch")
ACTIVITY_DISTRIBUTIONS = ("rademacher", "normal")


def _check_options(num_tangents, distribution, num_groups, estimator, axis_name) -> int:
    k = check_num_tangents(num_tangents)
    _checks.choice(distribution, ACTIVITY_DISTRIBUTIONS, "distribution")
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


def activity_value_and_grad(
    block: Callable,
    head: Callable,
    loss: Callable,
    *,
    num_tangents: int = 1,
    distribution: Literal["rademacher", "normal"] = "rademacher",
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

    def value_and_grad(key, params, x, *targets):
        return estimate(key_seeds(key), params, x, *targets)

    return value_and_grad


def make_block_estimator(
    block, head, loss, *, num_tangents, distribution, num_groups, estimator, axis_name
) -> Callable:
    """`activity_value_and_grad`, taking a ``uint32[2]`` seed pair instead of a key."""
    if not callable(block) or not callable(head) or not callable(loss):
        raise TypeError("`block`, `head` and `loss` must be callables")
    k = _check_options(num_tangents, distribution, num_groups, estimator, axis_name)
    groups = int(num_groups)
    per_example = estimator == "per_example"

    def value_and_grad(seeds, params, x, *targets):
        leaves, treedef = jax.tree_util.tree_flatten(params)
        params = jax.tree_util.tree_unflatten(treedef, leaves)
        position = {id(leaf): i for i, leaf in enumerate(leaves)}

        # 1. The tapped activities' shapes (trace only).
        avals: list = []

        def shape_tap(layer, *args, norm=None, activation=None):
            fn, lp, a = as_layer(layer, args)
            s = fn(lp, a)
            s = s if norm is None else norm(s)
            avals.append(jax.typeof(s))
            out = s if activation is None else activation(s)
            if activation is not None and jnp.shape(out) != jnp.shape(s):
                raise ValueError(
                    "a tap's `activation` must be elementwise (keep the shape), got shape "
                    f"{jnp.shape(s)} -> {jnp.shape(out)}"
                )
            return out

        h_aval = jax.eval_shape(lambda p, a: block(p, a, shape_tap), params, x)
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

        # 2. Per-example tangents, indexed by the global example index.
        seeds = derive_seeds(seeds, len(avals))
        flags = nan_flags(x, batch)
        offset, total = 0, None
        if axis_name is not None:
            size = lax.axis_size(axis_name)
            offset, total = lax.axis_index(axis_name) * batch, batch * size
        tangents, probes = [], []
        for i, aval in enumerate(avals):
            spec = explicit_spec(aval)
            tangents.append(
                example_tangents(
                    seeds[i],
                    aval,
                    k,
                    distribution,
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

        # 3. One jvp of the block with the activities perturbed.
        infos: list[TapInfo] = []

        def run(probes):
            records = []

            def tap(layer, *args, norm=None, activation=None):
                i = len(records)
                if i >= len(probes):
                    raise ValueError("`block` called `tap` more often than when first traced")
                fn, lp, a = as_layer(layer, args)
                lp_leaves, lp_def = jax.tree_util.tree_flatten(lp)
                positions = tuple(position.get(id(leaf), -1) for leaf in lp_leaves)
                if -1 in positions:
                    raise TypeError(
                        "the parameters of a tapped layer must be leaves of the block's "
                        "`params`, passed unchanged (indexing a sub-tree is fine; computing "
                        f"new arrays is not): leaf {positions.index(-1)} of tap {i} is not"
                    )
                z = fn(lp, a)
                s = (z if norm is None else norm(z)) + probes[i]
                records.append((a, z, s))
                if len(infos) == i:
                    infos.append(TapInfo(fn, lp_def, positions, norm, activation))
                return s if activation is None else activation(s)

            h = block(params, x, tap)
            return h, records

        def directional(*tans):
            return jax.jvp(run, (probes,), (list(tans),), has_aux=True)

        if k == 1:
            h, h_dot, records = directional(*(t[0] for t in tangents))
            h_dot = h_dot[None]
        else:
            h, h_dot, records = jax.vmap(directional, out_axes=(None, 0, None))(*tangents)

        # 4. The local loss, exactly differentiated through the head and loss only.
        fids = [i for i, leaf in enumerate(leaves) if is_float(leaf)]
        vleaves = list(leaves)
        for i, v in zip(fids, to_varying([leaves[i] for i in fids], axis_name)):
            vleaves[i] = v

        def head_loss(float_leaves, h):
            new = list(vleaves)
            for i, v in zip(fids, float_leaves):
                new[i] = v
            return loss(head(jax.tree_util.tree_unflatten(treedef, new), h), *targets)

        ell, pullback = jax.vjp(head_loss, [vleaves[i] for i in fids], h)
        if jnp.shape(ell) != (batch,) or not jnp.issubdtype(jnp.result_type(ell), jnp.floating):
            raise ValueError(
                f"`loss` must return one real loss per example, shape ({batch},), got shape "
                f"{jnp.shape(ell)} and dtype {jnp.result_type(ell)}"
            )
        head_grads, g_h = pullback(jnp.full_like(ell, 1.0 / batch))
        # g_h[n] = grad of l_n / B w.r.t. h_n;
        # coef[k, n, g] = g_h[n, group g] . h_dot[k, n, group g]
        gh = _group_split(g_h, groups)
        hd = _group_split(h_dot, groups).astype(gh.dtype)
        coef = jnp.sum(
            gh[None] * hd, axis=tuple(range(2, hd.ndim - 2)) + (hd.ndim - 1,)
        )  # [K, B, G]
        if not per_example:
            coef = jnp.sum(coef, axis=1)  # [K, G]: the directional derivative of L
            if axis_name is not None:
                coef = lax.psum(coef, axis_name)

        # 5. Activity estimates and the layers' exact transposes.
        grads: list = [None] * len(leaves)
        for i, g in zip(fids, head_grads):
            grads[i] = g
        for info, (a, z, s), u in zip(infos, records, tangents):
            est = _combine(coef, u, groups, per_example)
            if info.activation is not None:  # units whose true gradient is 0 get exactly 0
                slope = jax.jvp(info.activation, (s,), (jnp.ones_like(s),))[1]
                est = jnp.where(slope == 0, jnp.zeros_like(est), est)
            if info.norm is not None:
                _, norm_vjp = jax.vjp(info.norm, z)
                (est,) = norm_vjp(est.astype(jnp.result_type(s)))
            for i, g in layer_grads(info, vleaves, a, est.astype(jnp.result_type(z))).items():
                grads[i] = g if grads[i] is None else grads[i] + g.astype(grads[i].dtype)
        out = [
            float0_zeros(leaf)
            if not is_float(leaf)
            else jnp.zeros_like(leaf)
            if grads[i] is None
            else grads[i].astype(jnp.result_type(leaf))
            for i, leaf in enumerate(leaves)
        ]
        value = jnp.mean(ell)
        if axis_name is not None:
            value = lax.pmean(value, axis_name)
            floats = lax.pmean([out[i] for i in fids], axis_name)
            for i, g in zip(fids, floats):
                out[i] = g
        return (value, h), jax.tree_util.tree_unflatten(treedef, out)

    return value_and_grad
