"""The argument layer every public function uses (private).

Each rule raises a ``ValueError`` or ``TypeError`` that names the argument and the value it
received, at trace time: shapes, dtypes, options and Python numbers are static under ``jit``.
Values that are traced cannot be checked; the ops define what they do with them (NaN).

Per-row arguments are broadcast to the batch shape (`per_row`); the jitted side of each op
then moves the item axis last (``softops._sharding.run_items``) and its kernels see ``[..., n]``
arrays with any leading axes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar, overload

import jax
import jax.numpy as jnp
import numpy as np

_Option = TypeVar("_Option", bound=str)  # one option of a `Literal` set


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def array(value: Any, name: str) -> jax.Array:
    """A JAX array from an array-like of a numeric dtype (not a list, None, string or object)."""
    if isinstance(value, (list, tuple)):
        raise TypeError(
            f"`{name}` must be an array, got a Python {type(value).__name__} "
            f"({name}={_describe(value)}); wrap it with jnp.asarray(...)"
        )
    if (
        value is None
        or isinstance(value, (str, bytes))
        or not hasattr(value, "dtype")
        and not (isinstance(value, numbers.Number))
    ):
        raise TypeError(f"`{name}` must be an array, got {name}={_describe(value)}")
    dtype = np.dtype(value.dtype) if hasattr(value, "dtype") else None
    if dtype is not None and dtype.kind not in "biuf" and dtype != jnp.bfloat16:
        raise TypeError(f"`{name}` must have a numeric dtype, got dtype {dtype}")
    if isinstance(value, jax.Array):  # a device array or a tracer
        return value
    # A host value (Python number, NumPy array): an explicit transfer, with jnp.asarray's dtype
    # rules, so that eager calls run under jax.transfer_guard("disallow").
    return jax.device_put(value)


def floating(value: Any, name: str) -> jax.Array:
    """A floating-point array; integer and boolean inputs raise (cast them first)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a floating-point array, got {name}={value!r}")
    x = array(value, name)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"`{name}` must have a floating-point dtype, got dtype {x.dtype} "
            f"(cast it first, e.g. {name}.astype(jnp.float32))"
        )
    return x


def real(value: Any, name: str, dtype) -> jax.Array:
    """An integer or floating array (targets, labels' relevance), cast to ``dtype``."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a real-valued array, got {name}={value!r}")
    x = array(value, name)
    if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
        raise TypeError(f"`{name}` must have an integer or floating dtype, got dtype {x.dtype}")
    return x.astype(dtype)


def compute_dtype(dtype) -> jnp.dtype:
    """The dtype to compute in: float32 for half-precision inputs, else the input's dtype."""
    dtype = jnp.dtype(dtype)
    return jnp.dtype(jnp.float32) if dtype.itemsize < 4 else dtype


def ranks_fit(dtype, n: int, name: str) -> None:
    """Raises if ranks up to ``n`` overflow ``dtype`` (float16: largest finite value 65504)."""
    top = float(jnp.finfo(dtype).max)
    if n > top:
        raise ValueError(
            f"`{name}` has {n} items along the axis, but ranks up to {n} overflow its dtype "
            f"{jnp.dtype(dtype).name} (largest finite value {top:g}); cast `{name}` to float32"
        )


def choice(value: Any, allowed: Sequence[_Option], name: str) -> _Option:
    """``value`` if it is one of the strings ``allowed`` (``typing.get_args`` of a ``Literal``)."""
    if not isinstance(value, str) or value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"`{name}` must be one of {options}, got {name}={value!r}")
    return allowed[allowed.index(value)]  # the option itself, typed as one of the set


def boolean(value: Any, name: str) -> bool:
    """A Python (or NumPy) bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool, got {name}={_describe(value)}")
    return bool(value)


def integer(value: Any, name: str, *, minimum: int | None = None) -> int:
    """A Python (or NumPy) int, at least ``minimum``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int, got {name}={_describe(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {name}={value!r}")
    return int(value)


@overload
def tolerance(value: Any, name: str = ..., *, allow_none: Literal[False]) -> float: ...
@overload
def tolerance(value: Any, name: str = ..., *, allow_none: bool = ...) -> float | None: ...
def tolerance(value: Any, name: str = "tol", *, allow_none: bool = True) -> float | None:
    """A non-negative finite Python number (or None when allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a non-negative number, got {name}={_describe(value)}")
    if not (math.isfinite(float(value)) and float(value) >= 0):
        raise ValueError(f"`{name}` must be a non-negative finite number, got {name}={value!r}")
    return float(value)


def axis(value: Any, ndim: int, name: str = "axis") -> int:
    """``value`` as an index in ``[0, ndim)``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int, got {name}={_describe(value)}")
    if ndim == 0:
        raise ValueError(f"the input must have at least one axis to use `{name}`, got a scalar")
    if not -ndim <= value < ndim:
        raise ValueError(
            f"`{name}` must satisfy {-ndim} <= {name} < {ndim} for an input of rank {ndim}, "
            f"got {name}={value}"
        )
    return int(value) % ndim


def batch_shape(shape: tuple[int, ...], ax: int) -> tuple[int, ...]:
    """The shape without the item axis."""
    return tuple(shape[:ax]) + tuple(shape[ax + 1 :])


def concrete(value) -> np.ndarray | None:
    """The value as a NumPy array if it is known at trace time, else None."""
    if isinstance(value, jax.core.Tracer):
        return None
    try:
        return np.asarray(value)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return None


def per_row(
    value: Any, name: str, batch_shape: tuple[int, ...], dtype, *, positive: bool = True
) -> jax.Array:
    """A per-row parameter (a strength, a fraction), returned with the batch shape.

    A number or an array broadcastable to the batch shape. Known values must be finite (and
    positive); traced ones are not checked (the ops give NaN for rows where they are not).
    """
    kind = "a positive number" if positive else "a number"
    if value is None or isinstance(value, (bool, np.bool_, str)):
        raise TypeError(f"`{name}` must be {kind} or a float array, got {name}={value!r}")
    arr = array(value, name)
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"`{name}` must be real, got dtype {arr.dtype}")
    known = concrete(value)
    if known is not None and known.size:
        ok = np.isfinite(known) & ((known > 0) if positive else True)
        if not np.all(ok):
            bad = known[~ok].ravel()[0].item()
            rule = "positive and finite" if positive else "finite"
            raise ValueError(f"`{name}` must be {rule}, got {name}={bad!r}")
    try:
        return jnp.broadcast_to(arr.astype(dtype), batch_shape)
    except ValueError:
        raise ValueError(
            f"`{name}` must be a scalar or broadcast to the batch shape {batch_shape} (the "
            f"input's shape without its item axis), got shape {arr.shape}"
        ) from None


def where(value: Any, shape: tuple[int, ...], name: str = "where") -> jax.Array | None:
    """An optional boolean mask of exactly ``shape``."""
    if value is None:
        return None
    mask = array(value, name)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"`{name}` must be a boolean array, got dtype {mask.dtype}")
    if mask.shape != tuple(shape):
        raise ValueError(f"`{name}` must have the shape {tuple(shape)}, got shape {mask.shape}")
    return mask


def same_shape(a: jax.Array, b: jax.Array, names: tuple[str, str]) -> None:
    """Two arrays of equal shapes."""
    if a.shape != b.shape:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must have the same shape, got "
            f"{names[0]}.shape={a.shape} and {names[1]}.shape={b.shape}"
        )


@overload
def k_value(
    value: Any,
    n: int,
    batch_shape: tuple[int, ...],
    *,
    minimum: int = ...,
    traced: Literal[False] = ...,
    axis_: Any = ...,
) -> int: ...
@overload
def k_value(
    value: Any,
    n: int,
    batch_shape: tuple[int, ...],
    *,
    minimum: int = ...,
    traced: bool,
    axis_: Any = ...,
) -> int | jax.Array: ...
def k_value(
    value: Any,
    n: int,
    batch_shape: tuple[int, ...],
    *,
    minimum: int = 0,
    traced: bool = False,
    axis_: Any = -1,
) -> int | jax.Array:
    """The ``k`` of top-k.

    A Python int in ``[minimum, n]``, or (``traced=True``) an integer or float array
    broadcastable to the batch shape (per row; traced values are not checked).
    """
    rule = f"{minimum} <= k <= n along axis {axis_}"
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`k` must be an int or an array, got k={value!r}")
    if isinstance(value, (int, np.integer)):
        if not minimum <= value <= n:
            raise ValueError(f"`k` must satisfy {rule}, got k={value} for n={n}")
        return int(value)
    if not traced or isinstance(value, numbers.Number):
        raise TypeError(f"`k` must be a Python int, got k={_describe(value)}")
    arr = array(value, "k")
    if not (jnp.issubdtype(arr.dtype, jnp.integer) or jnp.issubdtype(arr.dtype, jnp.floating)):
        raise TypeError(f"`k` must have an integer or floating dtype, got dtype {arr.dtype}")
    known = concrete(value)
    if known is not None and known.size and not np.all((known >= minimum) & (known <= n)):
        bad = known[~((known >= minimum) & (known <= n))].ravel()[0].item()
        raise ValueError(f"`k` must satisfy {rule}, got k={bad!r} for n={n}")
    try:
        return jnp.broadcast_to(arr, batch_shape)
    except ValueError:
        raise ValueError(
            f"`k` must be a scalar or broadcast to the batch shape {batch_shape}, "
            f"got shape {arr.shape}"
        ) from None


def defined(fn: Callable, name: str) -> Callable:
    """A callable argument (schedules, losses)."""
    if not callable(fn):
        raise TypeError(f"`{name}` must be callable, got {name}={_describe(fn)}")
    return fn


# The bad-row policy, in the ops (every family): a row with a non-finite valid entry, or a traced
# parameter out of range, is NaN in value and carries exactly 0 derivative (its inputs are
# replaced before the kernel), so a loss that masks it with `jnp.where` trains on the other rows.
# (A NaN derivative where the row is used and 0 where it is masked cannot be had in reverse mode:
# the cotangent 0 of a masked row times a NaN partial is NaN.)


def finite_rows(x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Rows [...] of ``x`` [..., n] whose valid entries (all without ``valid``) are finite."""
    finite = jnp.isfinite(x) if valid is None else jnp.isfinite(x) | ~valid
    return jnp.all(finite, axis=-1)


def clean_rows(good: jax.Array, x: jax.Array, fill: float = 0.0) -> jax.Array:
    """Rows ``x`` [..., n] where ``good`` [...] holds, ``fill`` elsewhere (no derivative flows)."""
    return jnp.where(good.reshape(good.shape + (1,) * (x.ndim - good.ndim)), x, fill)


def nan_rows(out: jax.Array, good: jax.Array) -> jax.Array:
    """Outputs ``out`` [..., *item] where ``good`` [...] holds, NaN elsewhere."""
    return clean_rows(good, out, jnp.nan)


def segments(value: Any, shape: tuple[int, ...], name: str = "segments") -> jax.Array | None:
    """Optional integer segment ids of exactly ``shape`` (packed lists)."""
    if value is None:
        return None
    ids = array(value, name)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"`{name}` must have an integer dtype, got dtype {ids.dtype}")
    if ids.shape != tuple(shape):
        raise ValueError(f"`{name}` must have the shape {tuple(shape)}, got shape {ids.shape}")
    return ids
