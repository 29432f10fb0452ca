r"""Sampled rankings: Plackett–Luce through Gumbel perturbations (private; see `softops.losses`)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from softops import _checks, _sharding
from softops.losses._lists import NO_RELEVANCE, Lists, list_ranks_of
from softops.projection import Regularization


@functools.partial(jax.jit, static_argnames=("relative", "regularization"))
def _ranks(x, eps, valid, ids, *, relative, regularization):
    def body(x, eps, valid, ids):
        r, _ = list_ranks_of(x, valid, ids, eps, relative=relative, regularization=regularization)
        return r

    return _sharding.on_batch_shards(body, x, eps, valid, ids, name="scores")


def plackett_luce_rank(
    key: jax.Array,
    scores: ArrayLike,
    *,
    num_samples: int | None = None,
    regularization_strength: ArrayLike = 1.0,
    relative: bool = True,
    regularization: Regularization = "l2",
    where: ArrayLike | None = None,
    segments: ArrayLike | None = None,
) -> jax.Array:
    r"""Soft ranks of rankings sampled from the Plackett–Luce model of the scores.

    Plackett–Luce draws a ranking of a list by picking its items one at a time, each with
    probability $e^{s_i} / \sum_{j \text{ left}} e^{s_j}$. Sorting $s + G$ with independent
    standard Gumbel noise $G$ draws exactly that ranking (the Gumbel-max trick, repeated), so the
    descending soft ranks of $s + G$ (per list) are a reparameterized sample: differentiable in
    ``scores`` for a fixed ``key``. Averaging a rank-based objective over samples gives the
    stochastic ranking objectives of Bruch et al. (A Stochastic Treatment of Learning to Rank
    Scoring Functions, WSDM 2020; rax's ``gumbel_t12n``) with O(n log n) ranks. ε → 0 gives the
    hard ranks of the sampled ranking.

    Args:
        key: a ``jax.random`` key. The noise has the shape of the scores the call sees, as in
            ``jax.random``: inside ``jax.shard_map`` every shard given the same key draws the same
            noise for its rows (fold in ``lax.axis_index`` for independent shards).
        scores: ``[..., n]`` floating array, the log-weights of the items.
        num_samples: None for one sample of the shape of ``scores``, or an int: that many
            samples stacked on a new leading axis.
        regularization_strength: ε > 0, a number or an array of the batch shape ``[...]``.
        relative: ε in units of each sampled list's spread (default) or of the scores.
        regularization: the soft ranks', as in `softops.soft_rank` (``"l2"``, ``"kl"``,
            ``"p=3/2"``, ``"p=4/3"``).
        where: optional boolean ``[..., n]`` of the items in the lists (others get rank 0).
        segments: optional integer ``[..., n]`` list ids (packed lists).

    Returns:
        The soft ranks (1 = first), ``[..., n]`` or ``[num_samples, ..., n]``.

    Raises:
        TypeError: for a non-floating ``scores``, a non-int ``num_samples``, a non-boolean
            ``where`` or non-integer ``segments``.
        ValueError: for mismatched shapes, ``num_samples < 1``, a bad strength or
            ``regularization``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from softops.losses import plackett_luce_rank
        >>> r = plackett_luce_rank(jax.random.key(0), jnp.zeros(4), num_samples=2,
        ...                        regularization_strength=1e-3)
        >>> r.shape, sorted(r[0].tolist())
        ((2, 4), [1.0, 2.0, 3.0, 4.0])
    """
    relative = _checks.boolean(relative, "relative")
    a = Lists(
        scores, NO_RELEVANCE, where, segments, regularization_strength, regularization, "scores"
    )
    shape = a.x.shape
    if num_samples is not None:
        num_samples = _checks.integer(num_samples, "num_samples", minimum=1)
        shape = (num_samples, *shape)
    noise = jax.random.gumbel(key, shape, a.dtype)
    x = jnp.broadcast_to(a.x, shape) + noise

    eps, valid, ids = a.eps, a.valid, a.ids
    if num_samples is not None:
        eps = jnp.broadcast_to(eps, shape[:-1])
        valid = None if valid is None else jnp.broadcast_to(valid, shape)
        ids = None if ids is None else jnp.broadcast_to(ids, shape)
    out = _ranks(x, eps, valid, ids, relative=relative, regularization=regularization)
    return out.astype(a.out_dtype)
