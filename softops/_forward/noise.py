"""Cheap counter-based random tangents for forward gradients (private).

Every element is a pure function of ``(seed pair, element index)``: a 32-bit integer hash, written
in ``jnp.uint32`` operations that XLA fuses into one elementwise loop. No generator state, no
sequential dependency, so the cost is that of writing the tangent (XLA's threefry costs several
forward passes of an MLP for the same number of values on CPU).

The hash: ``x = (i XOR s0) * 0x9E3779B9 + s1`` followed by the "lowbias32" integer finalizer
(xorshift-multiply, constants by C. Wellons' hash-prospector search). It is a bijection of the
32-bit index for each seed pair, so a stream never repeats within 2**32 elements. It is not a
cryptographic generator; its moments and correlations are checked by the tests.

``at_indices`` draws the noise of given element indices (the per-example activity tangents index
their elements by the global example index); ``sample`` draws it for the indices ``0, 1, ...`` of a
shape. Seed pairs come from a PRNG key (``key_seeds``), by the same hash.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import jax
import jax.numpy as jnp
from jax import lax

#: The laws of the i.i.d. noise, each with mean 0 and variance 1.
IidDistribution = Literal["rademacher", "normal"]
IID_DISTRIBUTIONS: tuple[str, ...] = get_args(IidDistribution)
#: Their kurtosis E[v^4] (the excess second moment of a forward gradient depends on it).
KURTOSIS: dict[str, int] = {"rademacher": 1, "normal": 3}

_GOLDEN = 0x9E3779B9
_M1 = 0x7FEB352D
_M2 = 0x846CA68B
_SIGN_BIT = 0x80000000
_ONE_F32 = 0x3F800000  # bit pattern of float32 1.0
# Largest number of elements a single stream may index (a uint32 counter).
MAX_STREAM = 2**32


def hash_u32(idx: jax.Array, s0: jax.Array, s1: jax.Array) -> jax.Array:
    """The keyed 32-bit hash of ``idx`` (uint32) under the seed pair ``(s0, s1)`` (uint32)."""
    x = (idx ^ s0) * jnp.uint32(_GOLDEN) + s1
    x = x ^ (x >> 16)
    x = x * jnp.uint32(_M1)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(_M2)
    return x ^ (x >> 16)


def _hash_pair(idx: jax.Array, s0: jax.Array, s1: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Two independent hashes of ``idx``: under ``(s0, s1)`` and under ``(s1, s0 ^ golden)``."""
    return hash_u32(idx, s0, s1), hash_u32(idx, s1, s0 ^ jnp.uint32(_GOLDEN))


def _signs(bits: jax.Array) -> jax.Array:
    """±1.0 (float32) from the sign bit of ``bits``, bit-cast onto 1.0f."""
    one = jnp.uint32(_ONE_F32)
    return lax.bitcast_convert_type((bits & jnp.uint32(_SIGN_BIT)) | one, jnp.float32)


def _grid(bits: jax.Array, nbits: int) -> jax.Array:
    """Midpoints of a uniform grid of 2**nbits cells in (0, 1), float32, from the low bits."""
    return (bits.astype(jnp.float32) + 0.5) * jnp.float32(2.0**-nbits)


def _cos_quarter(x: jax.Array) -> jax.Array:
    """cos(x) for x in [0, pi/2], Taylor series to x**14 (truncation error < 1e-8)."""
    x2 = x * x
    c = jnp.float32(1.0 / math.factorial(14))
    for k in (12, 10, 8, 6, 4, 2, 0):
        c = c * (-x2) + jnp.float32(1.0 / math.factorial(k))
    return c


def rademacher(idx: jax.Array, seeds: jax.Array) -> jax.Array:
    """±1 (float32) with probability 1/2 each: the sign bit of the hash."""
    return _signs(hash_u32(idx, seeds[0], seeds[1]))


def normal(idx: jax.Array, seeds: jax.Array) -> jax.Array:
    """Standard normal (float32) by Box–Muller, ``sqrt(-2 log u1) * cos(2 pi u2)``.

    ``cos(2 pi u2)`` for uniform ``u2`` has the law of ``s * cos(pi/2 * u)`` with a random sign
    ``s`` and uniform ``u``, so the cosine is only needed on [0, pi/2], where a polynomial replaces
    XLA's slow CPU ``cos``. ``u1`` lives on a grid of 2**24 midpoints (so |z| <= 5.9; the law is the
    normal up to that discretization, float32 rounding and the < 1e-8 series error); ``u`` on
    2**23. Under ``jit`` XLA may round ``log``/``sqrt`` differently than eagerly (~1e-7 relative).
    """
    h1, h2 = _hash_pair(idx, seeds[0], seeds[1])
    u1 = _grid(h1 >> 8, 24)
    u = _grid((h2 >> 8) & jnp.uint32(0x7FFFFF), 23)
    r = jnp.sqrt(jnp.float32(-2.0) * jnp.log(u1))
    return r * _signs(h2) * _cos_quarter(jnp.float32(math.pi / 2) * u)


def at_indices(idx: jax.Array, seeds: jax.Array, law: IidDistribution) -> jax.Array:
    """float32 noise of the ``law`` at the uint32 element indices ``idx`` of the stream ``seeds``.

    One implementation serves both kinds of tangents: ``sample`` (parameter tangents, indices
    ``0, 1, ...`` of a shape) and ``example_tangents`` (activity tangents, global example indices).
    """
    return rademacher(idx, seeds) if law == "rademacher" else normal(idx, seeds)


def _stream_index(shape: tuple[int, ...]) -> jax.Array:
    """The element indices ``0, 1, ...`` of ``shape`` (row-major), uint32."""
    n = math.prod(shape)
    if n > MAX_STREAM:
        raise ValueError(
            f"a parameter leaf times `num_tangents` must have at most 2**32 elements, got {n}"
        )
    return lax.iota(jnp.uint32, n).reshape(shape)


def sample(
    seeds: jax.Array, shape: tuple[int, ...], dtype: jnp.dtype, law: IidDistribution
) -> jax.Array:
    """Noise of the ``law`` for the elements of ``shape`` (float32, then cast to ``dtype``)."""
    return at_indices(_stream_index(shape), seeds, law).astype(dtype)


def key_seeds(key: jax.Array) -> jax.Array:
    """A ``uint32[2]`` seed pair from a PRNG key (typed or raw), by the integer hash (no threefry).

    Distinct keys give distinct seed pairs with overwhelming probability; streams derived with
    ``derive_seeds`` from one pair are independent hash streams.
    """
    if jnp.issubdtype(jnp.result_type(key), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    data = jnp.ravel(jnp.asarray(key)).astype(jnp.uint32)
    s0, s1 = jnp.uint32(0x243F6A88), jnp.uint32(0x85A308D3)  # digits of pi
    for i in range(data.shape[0]):
        s0, s1 = _hash_pair(data[i], s0, s1)
    return jnp.stack([s0, s1])


def derive_seeds(seeds: jax.Array, count: int) -> jax.Array:
    """``count`` seed pairs ``uint32[count, 2]`` derived from one pair."""
    idx = lax.iota(jnp.uint32, 2 * count)
    return hash_u32(idx, seeds[0], seeds[1]).reshape(count, 2)
