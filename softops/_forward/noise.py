"""Cheap counter-based random tangents for forward gradients (private).

Every element is a pure function of ``(leaf seed, element index)``: a 32-bit integer hash, written
in ``jnp.uint32`` operations that XLA fuses into one elementwise loop. No generator state, no
sequential dependency, so the cost is that of writing the tangent (XLA's threefry costs several
forward passes of an MLP for the same number of values on CPU).

The hash: ``x = (i XOR s0) * 0x9E3779B9 + s1`` followed by the "lowbias32" integer finalizer
(xorshift-multiply, constants by C. Wellons' hash-prospector search). It is a bijection of the
32-bit index for each seed pair, so a stream never repeats within 2**32 elements. It is not a
cryptographic generator; its moments and correlations are checked by the tests.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

_GOLDEN = 0x9E3779B9
_M1 = 0x7FEB352D
_M2 = 0x846CA68B
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


def _index(shape: tuple[int, ...]) -> jax.Array:
    n = math.prod(shape)
    if n > MAX_STREAM:
        raise ValueError(
            f"a parameter leaf times `num_tangents` must have at most 2**32 elements, got {n}"
        )
    return lax.iota(jnp.uint32, n).reshape(shape)


def _grid(bits: jax.Array, nbits: int) -> jax.Array:
    """Midpoints of a uniform grid of 2**nbits cells in (0, 1), float32, from the low bits."""
    return (bits.astype(jnp.float32) + 0.5) * jnp.float32(2.0**-nbits)


def rademacher(seeds: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """±1 with probability 1/2 each: the sign bit of the hash, bit-cast onto 1.0f."""
    h = hash_u32(_index(shape), seeds[0], seeds[1])
    one = jnp.uint32(0x3F800000)  # bit pattern of float32 1.0
    v = lax.bitcast_convert_type((h & jnp.uint32(0x80000000)) | one, jnp.float32)
    return v.astype(dtype)


def _cos_quarter(x: jax.Array) -> jax.Array:
    """cos(x) for x in [0, pi/2], Taylor series to x**14 (truncation error < 1e-8)."""
    x2 = x * x
    c = jnp.float32(1.0 / math.factorial(14))
    for k in (12, 10, 8, 6, 4, 2, 0):
        c = c * (-x2) + jnp.float32(1.0 / math.factorial(k))
    return c


def normal(seeds: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """Standard normal by Box–Muller, ``sqrt(-2 log u1) * cos(2 pi u2)``, computed in float32.

    ``cos(2 pi u2)`` for uniform ``u2`` has the law of ``s * cos(pi/2 * u)`` with a random sign
    ``s`` and uniform ``u``, so the cosine is only needed on [0, pi/2], where a polynomial replaces
    XLA's slow CPU ``cos``. ``u1`` lives on a grid of 2**24 midpoints (so |z| <= 5.9; the law is the
    normal up to that discretization, float32 rounding and the < 1e-8 series error); ``u`` on
    2**23. Under ``jit`` XLA may round ``log``/``sqrt`` differently than eagerly (~1e-7 relative).
    """
    idx = _index(shape)
    h1 = hash_u32(idx, seeds[0], seeds[1])
    h2 = hash_u32(idx, seeds[1], seeds[0] ^ jnp.uint32(_GOLDEN))
    u1 = _grid(h1 >> 8, 24)
    u = _grid((h2 >> 8) & jnp.uint32(0x7FFFFF), 23)
    sign = lax.bitcast_convert_type(
        (h2 & jnp.uint32(0x80000000)) | jnp.uint32(0x3F800000), jnp.float32
    )
    r = jnp.sqrt(jnp.float32(-2.0) * jnp.log(u1))
    return (r * sign * _cos_quarter(jnp.float32(math.pi / 2) * u)).astype(dtype)
