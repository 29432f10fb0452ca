"""Argument handling and the jitted, per-batch-shard sides of the top-k ops (private).

[`softops.topk_ot`][softops.topk_ot] validates through `mask_op`, `sorted_op` and
`sinkhorn_op`, which check every argument on the shared layer (`softops._checks`)
and run the row kernels of `softops._ot.topk_rows` where the batch lives
(`softops._sharding.run_items`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal, NamedTuple, get_args

import jax
import jax.numpy as jnp
import numpy as np

from softops import _checks, _sharding
from softops._ot import hard_topk, sparse_mask, topk_rows
from softops._ot.sinkhorn import SinkhornOutput, plan_of, sinkhorn_implicit, sinkhorn_unrolled
from softops._straight_through import with_soft_derivative

# The option sets of the top-k ops, each written once: the public signatures use the `Literal`
# types, the validation (`_checks.choice`) their `get_args`.
Differentiation = Literal["implicit", "unrolled"]
Solver = Literal["newton", "sinkhorn"]
MaskRegularization = Literal["kl", "l2", "p=3/2", "p=4/3"]  # "kl" or a sparse_mask.POWERS key
Strength = Literal["epsilon", "temperature"]  # which strength the rows carry
DIFFERENTIATIONS: tuple[Differentiation, ...] = get_args(Differentiation)
SOLVERS: tuple[Solver, ...] = get_args(Solver)
MASK_REGULARIZATIONS: tuple[MaskRegularization, ...] = get_args(MaskRegularization)
DEFAULT_EPSILON = 0.1
DEFAULT_TEMPERATURE = 1.0  # of the sparse masks, in score units


class MaskOptions(NamedTuple):
    """The validated static options of one top-k mask call (hashable: one static jit argument)."""

    axis: int  # the item axis, non-negative
    largest: bool
    kind: Strength
    solver: Solver
    regularization: MaskRegularization
    max_iter: int
    tol: float
    nan_bad: bool  # an unconverged row is NaN (else it keeps its last iterate)
    straight_through: bool


class SortedOptions(NamedTuple):
    """The validated static options of one sorted top-k call (hashable: one static jit argument)."""

    axis: int  # the item axis, non-negative
    k: int
    largest: bool
    kind: Strength
    solve: Callable[..., tuple]  # topk_rows.sorted_by_*: the solver and its differentiation
    max_iter: int
    tol: float
    nan_bad: bool  # an unconverged row is NaN (else it keeps its last iterate)
    straight_through: bool


def _strength(epsilon, temperature, batch, dtype) -> tuple[Strength, jax.Array]:
    """('epsilon' | 'temperature', the value broadcast to the batch shape)."""
    if epsilon is not None and temperature is not None:
        raise ValueError(
            "`epsilon` and `temperature` are mutually exclusive, got "
            f"epsilon={epsilon!r} and temperature={temperature!r}"
        )
    if temperature is not None:
        return "temperature", _checks.per_row(temperature, "temperature", batch, dtype)
    value = DEFAULT_EPSILON if epsilon is None else epsilon
    return "epsilon", _checks.per_row(value, "epsilon", batch, dtype)


def _top_args(x, k, axis, largest, epsilon, temperature, where, tol, max_iter, traced_k):
    """Validation shared by the mask and the sorted operator."""
    largest = _checks.boolean(largest, "largest")
    max_iter = _checks.integer(max_iter, "max_iter", minimum=0)
    tol = _checks.tolerance(tol)
    x = _checks.floating(x, "x")
    ax = _checks.axis(axis, x.ndim)
    batch = _checks.batch_shape(x.shape, ax)
    n = x.shape[ax]
    k = _checks.k_value(k, n, batch, traced=traced_k, axis_=axis)
    kind, strength = _strength(epsilon, temperature, batch, _checks.compute_dtype(x.dtype))
    mask = _checks.where(where, x.shape)
    return x, ax, k, largest, kind, strength, mask, tol, max_iter


# ----------------------------------------------------------------------------- top-k mask


@functools.partial(jax.jit, static_argnames=("options",))
def _mask(x, k, strength, where, *, options: MaskOptions):
    o = options

    def kernel(x, k, strength, valid):
        if o.regularization != "kl":
            mask, thr, it, res, ok = sparse_mask.mask_rows(
                x,
                k,
                strength,
                valid,
                regularization=o.regularization,
                largest=o.largest,
                max_iter=o.max_iter,
                tol=o.tol,
            )
        else:
            mask, thr, it, res, ok = topk_rows.mask_rows(
                x,
                k,
                strength,
                valid,
                kind=o.kind,
                largest=o.largest,
                solver=o.solver,
                max_iter=o.max_iter,
                tol=o.tol,
            )
        if o.nan_bad:
            sparse_masked = o.regularization != "kl" and valid is not None
            bad = ~ok[..., None] & valid if sparse_masked else ~ok[..., None]
            mask = jnp.where(bad, jnp.nan, mask)  # sparse masks: where=False stays 0
        if o.straight_through:
            mask = with_soft_derivative(hard_topk.mask_rows(x, k, valid, o.largest), mask)
        return mask, (thr, it, res, ok)

    mask, (thr, it, res, ok) = _sharding.run_items(
        kernel, o.axis, (x,), (k, strength), where, with_rows=True
    )
    return mask, thr.astype(x.dtype), it, res.astype(x.dtype), ok


def mask_op(
    x,
    k,
    *,
    axis,
    max_iter,
    largest=True,
    epsilon=None,
    temperature=None,
    where=None,
    tol=None,
    solver="newton",
    nan_bad=True,
    straight_through=False,
    regularization="kl",
):
    """(mask, threshold, iterations, residual, converged) of `softops.soft_topk_mask`.

    ``nan_bad``: an unconverged row is NaN (the ops) or keeps its last iterate (the ``*_solve``).
    """
    solver = _checks.choice(solver, SOLVERS, "solver")
    hard = _checks.boolean(straight_through, "straight_through")
    reg = _checks.choice(regularization, MASK_REGULARIZATIONS, "regularization")
    if reg != "kl":
        temperature = _sparse_strength(reg, epsilon, temperature, solver)
    x, ax, k, largest, kind, strength, mask, tol, max_iter = _top_args(
        x, k, axis, largest, epsilon, temperature, where, tol, max_iter, traced_k=True
    )
    dtype = _checks.compute_dtype(x.dtype)
    if tol is None:  # |sum A - k| in mask units: the rounding of an n-term sum
        eps = jnp.finfo(dtype).eps
        tol = float(max(4 * x.shape[ax] * eps, 16 * eps))
    k = jnp.broadcast_to(_checks.array(k, "k").astype(dtype), strength.shape)
    options = MaskOptions(ax, largest, kind, solver, reg, max_iter, tol, bool(nan_bad), hard)
    return _mask(x, k, strength, mask, options=options)


def _sparse_strength(reg, epsilon, temperature, solver):
    """The temperature of a sparse mask: ``epsilon=`` and the Sinkhorn solver are KL-only."""
    if epsilon is not None:
        raise ValueError(
            f"`epsilon` is the entropic (regularization='kl') strength; regularization={reg!r} "
            f"takes `temperature=` (in score units), got epsilon={epsilon!r}"
        )
    if solver != "newton":
        raise ValueError(
            f"`solver` applies to regularization='kl' only, got solver={solver!r} with "
            f"regularization={reg!r}"
        )
    return DEFAULT_TEMPERATURE if temperature is None else temperature


# ----------------------------------------------------------------------------- sorted top-k


@functools.partial(jax.jit, static_argnames=("options",))
def _sorted(x, strength, where, *, options: SortedOptions):
    o = options

    def kernel(x, strength, valid):
        values, assign, it, res, ok = topk_rows.sorted_rows(
            x,
            strength,
            valid,
            kind=o.kind,
            k=o.k,
            largest=o.largest,
            max_iter=o.max_iter,
            tol=o.tol,
            solve=o.solve,
        )
        if o.nan_bad:
            values = jnp.where(ok[..., None], values, jnp.nan)
            assign = jnp.where(ok[..., None, None], assign, jnp.nan)
        if o.straight_through:
            hard_values, hard_assign = hard_topk.sorted_rows(x, o.k, valid, o.largest)
            values = with_soft_derivative(hard_values, values)
            assign = with_soft_derivative(hard_assign, assign)
        return values, (assign, it, res, ok)

    values, (assign, it, res, ok) = _sharding.run_items(
        kernel, o.axis, (x,), (strength,), where, with_rows=True
    )
    return values, assign.astype(x.dtype), it, res.astype(x.dtype), ok


# (solver, differentiation) -> the row solver; Newton is differentiated implicitly only.
_SORTED_SOLVERS = {
    ("newton", "implicit"): topk_rows.sorted_by_newton,
    ("sinkhorn", "implicit"): topk_rows.sorted_by_sinkhorn,
    ("sinkhorn", "unrolled"): topk_rows.sorted_by_unrolled_sinkhorn,
}


def sorted_op(
    x,
    k,
    *,
    axis,
    max_iter,
    largest=True,
    epsilon=None,
    temperature=None,
    where=None,
    tol=None,
    differentiation="implicit",
    solver="newton",
    nan_bad=True,
    straight_through=False,
):
    """(values, assignment, iterations, residual, converged) of `softops.soft_topk`.

    ``nan_bad``: an unconverged row is NaN (the ops) or keeps its last iterate (the ``*_solve``).
    """
    mode = _checks.choice(differentiation, DIFFERENTIATIONS, "differentiation")
    hard = _checks.boolean(straight_through, "straight_through")
    solver = _checks.choice(solver, SOLVERS, "solver")
    if solver == "newton" and mode == "unrolled":
        raise ValueError(
            "`differentiation='unrolled'` needs solver='sinkhorn' (Newton is differentiated "
            "implicitly), got solver='newton'"
        )
    x, ax, k, largest, kind, strength, mask, tol, max_iter = _top_args(
        x, k, axis, largest, epsilon, temperature, where, tol, max_iter, traced_k=False
    )
    if mode == "unrolled" and max_iter < 1:
        raise ValueError(f"`max_iter` must be >= 1 with differentiation='unrolled', got {max_iter}")
    if tol is None:  # Newton's residual carries no n-term rounding (newton_loop._errors)
        eps = float(jnp.finfo(_checks.compute_dtype(x.dtype)).eps)
        tol = eps**0.5 if solver == "newton" else max(eps**0.5, 16 * x.shape[ax] * eps)
    solve = _SORTED_SOLVERS[solver, mode]
    options = SortedOptions(ax, k, largest, kind, solve, max_iter, tol, bool(nan_bad), hard)
    return _sorted(x, strength, mask, options=options)


# ----------------------------------------------------------------------------- sinkhorn


def _marginal(v, size, batch, dtype, name, *, positive: bool):
    if v is None:
        uniform = _checks.array(np.asarray(1 / max(size, 1), dtype), name)  # size 0: empty
        return jnp.broadcast_to(uniform, batch + (size,))
    arr = _checks.floating(v, name).astype(dtype)
    known = _checks.concrete(v)
    if known is not None and known.size:
        bad = (known <= 0) if positive else (known < 0)
        if np.any(bad | ~np.isfinite(known)):
            rule = "positive" if positive else "non-negative"
            raise ValueError(f"`{name}` must be {rule} and finite, got {name}={known.tolist()!r}")
    try:
        return jnp.broadcast_to(arr, batch + (size,))
    except ValueError:
        raise ValueError(
            f"`{name}` must broadcast to {batch + (size,)}, got shape {arr.shape}"
        ) from None


def _same_mass(a, b) -> None:
    """Known marginals must carry the same mass (to the dtype's rounding of their sums)."""
    ka, kb = _checks.concrete(a), _checks.concrete(b)
    if ka is None or kb is None or not ka.size or not kb.size:
        return
    sa, sb = ka.sum(-1), kb.sum(-1)
    slack = 8 * np.finfo(ka.dtype).eps * (ka.shape[-1] + kb.shape[-1]) * np.maximum(sa, sb)
    bad = np.abs(sa - sb) > slack
    if np.any(bad):
        raise ValueError(
            "`a` and `b` must have the same total mass, got sum(a)="
            f"{np.ravel(sa)[np.argmax(np.ravel(bad))].item()!r} and sum(b)="
            f"{np.ravel(sb)[np.argmax(np.ravel(bad))].item()!r}"
        )


@functools.partial(jax.jit, static_argnames=("max_iter", "tol", "mode"))
def _sinkhorn(cost, a, b, eps, *, max_iter, tol, mode):
    solver = sinkhorn_implicit if mode == "implicit" else sinkhorn_unrolled

    def kernel(cost, a, b, eps):
        # A bad row (non-finite or out-of-range input, traced) is solved on clean inputs and
        # returned as NaN with 0 derivative (the NaN policy of `_checks.nan_rows`).
        n, m = cost.shape[-2:]
        good = (
            jnp.all(jnp.isfinite(cost), axis=(-2, -1))
            & jnp.all(jnp.isfinite(a) & (a >= 0), axis=-1)
            & jnp.all(jnp.isfinite(b) & (b > 0), axis=-1)
            & (eps > 0)
            & jnp.isfinite(eps)
        )
        cost = _checks.clean_rows(good, cost)
        a, b = _checks.clean_rows(good, a, 1 / n), _checks.clean_rows(good, b, 1 / m)
        eps = jnp.where(good, eps, 1)
        f, g, it, err = solver(cost, a, b, eps, max_iter, tol)
        plan = plan_of(f, g, cost, eps)
        bad = functools.partial(_checks.nan_rows, good=good)
        return bad(f), bad(g), bad(plan), it, jnp.where(good, err, jnp.nan)

    f, g, plan, it, err = _sharding.on_batch_shards(
        kernel, cost, a, b, eps, name="cost", item_ndim=2
    )
    return SinkhornOutput(f, g, plan, it, err, err <= tol)


def sinkhorn_op(cost, a, b, epsilon, tol, max_iter, differentiation) -> SinkhornOutput:
    """[`softops.sinkhorn`][softops.topk_ot.sinkhorn] after validation."""
    _checks.choice(differentiation, DIFFERENTIATIONS, "differentiation")
    cost = _checks.floating(cost, "cost")
    if cost.ndim < 2:
        raise ValueError(f"`cost` must have shape [..., n, m], got shape {cost.shape}")
    max_iter = _checks.integer(max_iter, "max_iter", minimum=1)
    tol = _checks.tolerance(tol, allow_none=False)
    dtype = _checks.compute_dtype(cost.dtype)
    *batch_list, n, m = cost.shape
    batch = tuple(batch_list)
    a = _marginal(a, n, batch, dtype, "a", positive=False)
    b = _marginal(b, m, batch, dtype, "b", positive=True)
    _same_mass(a, b)
    eps = _checks.per_row(epsilon, "epsilon", batch, dtype)
    if n == 0 or m == 0 or 0 in batch:
        return SinkhornOutput(
            f=jnp.zeros(batch + (n,), dtype),
            g=jnp.zeros(batch + (m,), dtype),
            plan=jnp.zeros(batch + (n, m), dtype),
            iterations=jnp.zeros(batch, jnp.int32),
            residual=jnp.zeros(batch, dtype),
            converged=jnp.ones(batch, bool),
        )
    return _sinkhorn(
        cost.astype(dtype), a, b, eps, max_iter=max_iter, tol=tol, mode=differentiation
    )
