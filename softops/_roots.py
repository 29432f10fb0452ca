r"""Closed-form roots shared by the p-norm operators (private floor module).

The p = 4/3 regularizer of Sander et al. (2023) leads, in the top-k mask (``softops._ot``) and in
the isotonic blocks of soft sort and rank (``softops._isotonic``), to a cubic that is monotone in
its unknown: centred on the mean of its terms it is the depressed cubic $t^3 + p t + q = 0$
with $p \ge 0$, which has one real root.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def depressed_cubic(p: jax.Array, q: jax.Array) -> jax.Array:
    """The real root of ``t^3 + p t + q = 0`` for ``p >= 0``.

    The hyperbolic form of Cardano's formula, ``t = -2 sqrt(p/3) sinh(asinh(z) / 3)`` with
    ``z = (3 q / 2 p) sqrt(3 / p)``: no cancellation for any sign of ``q``. Where ``p`` is
    negligible (``|z| > 1e12``: ``p / t^2 < 2e-8``) or ``p sqrt(p)`` underflows, ``-cbrt(q)``.
    """
    sp = jnp.sqrt(p / 3)
    den = p * sp
    z = 1.5 * q / jnp.where(den > 0, den, 1)
    hyperbolic = (den > 0) & (jnp.abs(z) < 1e12)
    zh = jnp.where(hyperbolic, z, 0)
    return jnp.where(hyperbolic, -2 * sp * jnp.sinh(jnp.arcsinh(zh) / 3), -jnp.cbrt(q))
