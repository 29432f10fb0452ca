"""Running every op where its batch lives, on any mesh, with no data movement (private).

Every op treats its leading axes as a batch of independent rows, so a batch-sharded input can be
processed shard by shard. Three pieces make that happen for every kind of mesh axis:

- **Explicit axes** (the default of ``jax.make_mesh``): the input's type carries its sharding, so
  `on_batch_shards` wraps the op in ``jax.shard_map`` over the mesh axes of the batch
  dimensions (the item axis must not be sharded: that raises a ``ValueError``).
- **Auto axes** (and ``jax.jit(..., in_shardings=...)``): XLA's partitioner decides. The
  differentiable parts of every op use only gathers and scatters with batching dimensions
  (`take_last`, `scatter_last`), which it partitions along the batch; solver loops,
  which it cannot partition, go through `batch_local`, a ``custom_partitioning`` that runs
  the loop on each shard (an item axis sharded there is gathered, with a ``UserWarning``: the
  partitioner chose it after tracing, where a ``ValueError`` would surface as an XLA error).
- **Inside ``jax.shard_map``** everything is local already.

``batch_local`` also folds ``vmap`` into the batch (``custom_vmap``): a loop under ``vmap`` would
otherwise select over its whole batched carry at every step.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def take_last(x: jax.Array, idx: jax.Array) -> jax.Array:
    """``x[..., idx]`` row by row (a gather with batching dimensions)."""
    return jnp.take_along_axis(x, idx, axis=-1)


def scatter_last(
    shape, dtype, idx: jax.Array, updates: jax.Array, *, op: str = "set", fill=0
) -> jax.Array:
    """``out[..., idx[..., j]] = updates[..., j]`` with ``op`` "set", "add" or "max".

    ``out`` has ``shape`` and starts filled with ``fill``; indices out of range are dropped. The
    scatter has batching dimensions, so XLA partitions it along the batch.
    """
    nb = len(shape) - 1
    dims = lax.ScatterDimensionNumbers(
        update_window_dims=(),
        inserted_window_dims=(nb,),
        scatter_dims_to_operand_dims=(nb,),
        operand_batching_dims=tuple(range(nb)),
        scatter_indices_batching_dims=tuple(range(nb)),
    )
    operand = jnp.full(shape, fill, dtype)
    scatter = {"set": lax.scatter, "add": lax.scatter_add, "max": lax.scatter_max}[op]
    mode = lax.GatherScatterMode.FILL_OR_DROP
    return scatter(operand, idx[..., None], updates.astype(dtype), dims, mode=mode)


_COUNT_BLOCK = 32


def count_last(flags: jax.Array) -> jax.Array:
    """The inclusive count of true entries along the last axis, int32 (``cumsum``, exact).

    XLA:CPU computes a ``cumsum`` as a reduce-window, 25 times the cost of an elementwise pass
    (2.5 ms for ``[256, 1000]``). Here each block of 32 items is counted by one matmul with a
    triangular 0/1 matrix and the blocks' totals recursively (0.5 ms): sums of integers below
    2**24, exact in float32 in any order (``HIGHEST``: no reduced-precision passes).
    """
    n = flags.shape[-1]
    if not isinstance(n, int) or n >= 2**24:  # symbolic or huge rows
        return jnp.cumsum(flags, axis=-1, dtype=jnp.int32)
    return _count(flags.astype(jnp.float32)).astype(jnp.int32)


def run_bounds(starts: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Runs of rows ``[..., n]`` that begin where ``starts`` is true (``starts[..., 0]`` true).

    Per item ``(ids, first, end)``: its run's id (0, 1, ... along the row), the position of the
    run's first item and one past its last (int32). Counts, scatters and gathers only (a cummax
    would be a reduce-window on CPU).
    """
    n = starts.shape[-1]
    ids = count_last(starts) - 1
    iota = lax.broadcasted_iota(jnp.int32, starts.shape, starts.ndim - 1)
    # first[j]: the first item of run j; n past the last run, so first[j + 1] ends run j
    first = scatter_last(starts.shape, jnp.int32, jnp.where(starts, ids, n), iota, fill=n)
    following = jnp.concatenate([first[..., 1:], jnp.full_like(first[..., :1], n)], axis=-1)
    return ids, take_last(first, ids), take_last(following, ids)


def _count(v: jax.Array) -> jax.Array:
    n, b = v.shape[-1], _COUNT_BLOCK
    m = -(-n // b)
    pad = [(0, 0)] * (v.ndim - 1) + [(0, m * b - n)]
    blocks = jnp.pad(v, pad).reshape(*v.shape[:-1], m, b)
    upper = jnp.triu(jnp.ones((b, b), v.dtype))  # upper[j, i]: item j counts towards i
    local = jnp.matmul(blocks, upper, precision=lax.Precision.HIGHEST)
    if m > 1:
        totals = local[..., -1]
        local = local + (_count(totals) - totals)[..., None]  # the blocks before each
    return local.reshape(*v.shape[:-1], m * b)[..., :n]


def _spec_of(arg) -> tuple:
    """The partition spec of a ``custom_partitioning`` argument, one entry per dimension.

    A sharding the partitioner could not name (e.g. replicated without a mesh) counts as None.
    """
    spec = tuple(getattr(arg.sharding, "spec", None) or ())
    return spec + (None,) * (len(arg.shape) - len(spec))


def _item_message(name: str, dims, spec, mesh) -> str:
    return (
        f"softops ops run row by row: the item axis of `{name}` must not be sharded, but its "
        f"dimension(s) {dims} are sharded as {spec} over mesh axes {dict(mesh.shape)}. Shard "
        "the batch (leading) axes instead, e.g. jax.sharding.reshard(x, P(<batch axes>, None))."
    )


def _item_error(name: str, dims, spec, mesh) -> ValueError:
    return ValueError(_item_message(name, dims, spec, mesh))


def batch_local(item_ndims: Sequence[int], out_item_ndims: Sequence[int], name: str):
    """Decorator: runs ``fn(*arrays, **static)`` shard by shard along the leading batch axes.

    Every array argument and result has the same leading batch axes followed by
    ``item_ndims[i]`` (``out_item_ndims[i]``) item axes; static keyword arguments must be
    hashable. The function must accept any number of leading batch axes.
    """

    def decorate(fn: Callable) -> Callable:
        @functools.cache
        def build(static: tuple):
            kwargs = dict(static)

            def local(*arrays):
                # Inside shard_map, loops need every input to vary over the same manual axes.
                return fn(*like_vma(arrays, *arrays), **kwargs)

            partitioned = custom_partitioning(local)
            letters = iter(f"i{k}" for k in range(64))
            ins = [" ".join(["..."] + [next(letters) for _ in range(k)]) for k in item_ndims]
            outs = [" ".join(["..."] + [next(letters) for _ in range(k)]) for k in out_item_ndims]
            factors = tuple(f"i{k}" for k in range(sum(item_ndims) + sum(out_item_ndims)))

            def partition(mesh, arg_shapes, result_shape):
                first = arg_shapes[0]
                nb = len(first.shape) - item_ndims[0]
                batch = _spec_of(first)[:nb]
                for arg, k in zip(arg_shapes, item_ndims):
                    spec = _spec_of(arg)
                    if any(s is not None for s in spec[len(spec) - k :] if k):
                        # Auto axes: the partitioner chose this sharding and an error raised
                        # here would reach the user as an XLA INTERNAL error; the item axes are
                        # gathered instead (below: replicated), with a warning.
                        dims = tuple(range(len(arg.shape) - k, len(arg.shape)))
                        warnings.warn(_item_message(name, dims, P(*spec), mesh), stacklevel=2)
                arg_sh = tuple(NamedSharding(mesh, P(*batch, *(None,) * k)) for k in item_ndims)
                res = [NamedSharding(mesh, P(*batch, *(None,) * k)) for k in out_item_ndims]
                out_sh = res[0] if not isinstance(result_shape, (tuple, list)) else tuple(res)
                return mesh, local, out_sh, arg_sh

            partitioned.def_partition(
                partition=partition,
                sharding_rule=", ".join(ins) + " -> " + ", ".join(outs),
                need_replication_factors=factors,
            )

            return _fold_vmap(partitioned), _fold_vmap(local)

        @functools.wraps(fn)
        def wrapper(*arrays, **static):
            partitioned, local = build(tuple(sorted(static.items())))
            return local(*arrays) if _all_manual() else partitioned(*arrays)

        return wrapper

    return decorate


def _fold_vmap(f: Callable) -> Callable:
    """``f`` (batch-polymorphic over leading axes) with vmapped axes folded into its batch."""

    @jax.custom_batching.custom_vmap
    def run(*arrays):
        return f(*arrays)

    @run.def_vmap
    def _run_vmap(axis_size, in_batched, *arrays):
        arrays = [
            x if batched else jnp.broadcast_to(x, (axis_size, *x.shape))
            for x, batched in zip(arrays, in_batched)
        ]
        out = run(*arrays)
        return out, jax.tree.map(lambda _: True, out)

    return run


def _all_manual() -> bool:
    """Whether tracing happens inside ``shard_map`` over every axis of the current mesh."""
    mesh = jax.sharding.get_abstract_mesh()
    types = getattr(mesh, "axis_types", ())
    return bool(types) and all(t == jax.sharding.AxisType.Manual for t in types)


def on_batch_shards(
    fn: Callable, x: jax.Array, *args, name: str = "x", item_ndim: int = 1
) -> jax.Array:
    """``fn(x, *args)``, inside ``jax.shard_map`` when ``x`` is sharded over Explicit axes.

    ``x`` has its item axes last (``item_ndim`` of them); each of ``args`` is None or has
    ``x``'s batch axes (and any trailing axes); outputs have the batch axes first.
    """
    sharding = jax.typeof(x).sharding
    spec = tuple(getattr(sharding, "spec", ()) or ())
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or not spec or all(s is None for s in spec):
        return fn(x, *args)
    nb = x.ndim - item_ndim
    spec = spec + (None,) * (x.ndim - len(spec))
    if any(s is not None for s in spec[nb:]):
        raise _item_error(name, tuple(range(nb, x.ndim)), P(*spec), mesh)
    batch = P(*spec[:nb])  # a prefix: trailing axes of every argument and result replicated
    axes: set[str] = set()
    for s in spec[:nb]:
        if s is not None:
            axes.update((s,) if isinstance(s, str) else s)
    mapped = jax.shard_map(
        fn,
        mesh=mesh,
        in_specs=(batch, *(None if a is None else batch for a in args)),
        out_specs=batch,
        axis_names=frozenset(axes),
    )
    # Per-row arguments (strengths, k, masks) may be replicated: slicing them is local.
    args = tuple(None if a is None else _reshard(a, spec[:nb], mesh) for a in args)
    return mapped(x, *args)


def _reshard(a: jax.Array, batch: tuple, mesh) -> jax.Array:
    want = P(*batch, *(None,) * (a.ndim - len(batch)))
    have = getattr(jax.typeof(a).sharding, "spec", None)
    if have is not None and tuple(have) + (None,) * (a.ndim - len(have)) == tuple(want):
        return a
    # A NamedSharding, not a bare spec: the input may be sharded outside any mesh context.
    return jax.sharding.reshard(a, NamedSharding(mesh, want))


def _varying(x) -> frozenset:
    """The manual mesh axes ``x`` varies over (empty outside ``shard_map``)."""
    manual = getattr(jax.typeof(x), "manual_axis_type", None)
    return frozenset(getattr(manual, "varying", ()) or ())


def like_vma(tree, *refs):
    """Casts the arrays of ``tree`` to vary over the manual mesh axes any of ``refs`` varies over.

    Inside ``jax.shard_map`` a loop carry made from constants (``jnp.zeros``, iota) is invariant
    while the loop body makes it vary with the data; ``while_loop`` requires equal types.
    """
    axes = frozenset().union(*(_varying(r) for r in jax.tree.leaves(refs)))
    if not axes:
        return tree

    def cast(x):
        x = jnp.asarray(x)
        missing = tuple(sorted(axes - _varying(x)))
        return lax.pcast(x, missing, to="varying") if missing else x

    return jax.tree.map(cast, tree)


def run_items(
    kernel: Callable,
    axis: int,
    items: Sequence[jax.Array],
    rows: Sequence[jax.Array | None] = (),
    where: jax.Array | None = None,
    *,
    out_dtype=None,
    with_rows: bool = False,
    name: str = "x",
):
    """Runs ``kernel(*items, *rows, where)`` with the item axis moved last, per batch shard.

    ``items`` share the first one's shape (the item axis at ``axis``); ``rows`` have its batch
    shape (or are None); ``where`` is None or a mask of the items' shape. Floating arrays are cast
    to the compute dtype (float32 for half precision). The kernel's outputs ``[..., m]`` get
    their last axis put back at ``axis``, in ``out_dtype`` (default: the first item's dtype).
    With ``with_rows`` the kernel returns ``(item_outputs, row_outputs)`` and the row outputs
    (batch axes first, e.g. per-row diagnostics) are returned as they are.
    """
    first = items[0]
    dtype = jnp.float32 if jnp.dtype(first.dtype).itemsize < 4 else first.dtype

    def last(a):
        a = jnp.moveaxis(a, axis, -1)
        return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a

    args = [last(a) for a in items]
    args += [None if a is None else a.astype(dtype) for a in rows]
    args.append(None if where is None else jnp.moveaxis(where, axis, -1))
    out = on_batch_shards(kernel, *args, name=name)
    out_dtype = first.dtype if out_dtype is None else out_dtype
    item_out, row_out = out if with_rows else (out, None)
    item_out = jax.tree.map(lambda o: jnp.moveaxis(o, -1, axis).astype(out_dtype), item_out)
    return (item_out, row_out) if with_rows else item_out


# ----------------------------------------------------------------- forward-gradient estimators
def explicit_spec(aval):
    """The sharding spec of an abstract value when its mesh has Explicit axes, else None."""
    sharding = getattr(aval, "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or not getattr(mesh, "_any_axis_explicit", False):
        return None
    return sharding.spec


def to_varying(leaves: list, axis_name) -> list:
    """Leaves typed as varying over ``axis_name`` (inside ``shard_map``).

    Transposing a map of them then gives each device's own gradient, not the implicit ``psum``
    that JAX inserts for invariant (replicated) inputs; the gradients are averaged explicitly.
    """
    if axis_name is None:
        return leaves
    out = []
    for leaf in leaves:
        try:
            out.append(lax.pcast(leaf, axis_name, to="varying"))
        except ValueError:  # already varying
            out.append(leaf)
    return out
