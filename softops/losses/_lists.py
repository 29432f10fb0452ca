r"""Learning-to-rank losses on soft ranks: NDCG, MRR, precision@k, rank-linear, LambdaLoss weights.

Private; see `softops.losses`. Every function ranks each list once
([`softops.ltr.rank_fn`][softops.ltr.rank_fn]'s ranks: descending, exact, O(n log n)) and
evaluates its metric at the soft ranks in closed form, O(n) per list; packed lists
(``segments=``) add one sort by (list, gain) for the ideal DCG.
"""

from __future__ import annotations

import functools
from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from softops import _checks, _segments, _sharding, _sort
from softops.ltr import list_ranks, row_ok
from softops.projection import REGULARIZATIONS

Gain = Literal["exp2", "linear"]
GAINS: tuple[Gain, ...] = get_args(Gain)
NO_RELEVANCE = object()  # `Lists` of scores alone (sampling)


class Lists:
    """The validated inputs of a list loss, in the compute dtype (items last)."""

    def __init__(
        self, scores, relevance, where, segments, strength, regularization, name, signed=False
    ):
        _checks.choice(regularization, REGULARIZATIONS, "regularization")
        x = _checks.floating(scores, "scores")
        if x.ndim == 0:
            raise ValueError("`scores` must have at least one axis (the items), got a scalar")
        self.dtype = _checks.compute_dtype(x.dtype)
        self.out_dtype = x.dtype
        self.x = x.astype(self.dtype)
        self.rel = None
        if relevance is not NO_RELEVANCE:
            rel = lax.stop_gradient(_checks.real(relevance, name, self.dtype))
            _checks.same_shape(x, rel, ("scores", name))
            known = _checks.concrete(relevance)
            if not signed and known is not None and known.size and np.any(known < 0):
                bad = known[known < 0].ravel()[0].item()
                raise ValueError(f"`{name}` must be non-negative, got {name}={bad!r}")
            self.rel = rel
        self.valid = _checks.where(where, x.shape)
        self.ids = _checks.segments(segments, x.shape)
        self.eps = _checks.per_row(strength, "regularization_strength", x.shape[:-1], self.dtype)


def cutoff_k(k, n, *, required=False):
    """The cutoff ``k`` checked against the list length ``n`` (None unless ``required``)."""
    if k is None and not required:
        return None
    return _checks.k_value(k, n, (), minimum=1)


def ranks_of(x, valid, ids, eps, *, relative, regularization):
    """Soft descending ranks of every list (1 at masked items: finite, no gradient), and slots."""
    r, slots = list_ranks_of(x, valid, ids, eps, relative=relative, regularization=regularization)
    return (r if valid is None else jnp.where(valid, r, 1)), slots


def list_ranks_of(x, valid, ids, eps, *, relative, regularization):
    """`softops.ltr.list_ranks` of the lists (0 at masked items), and their slots."""
    slots = _segments.slots_of(ids, x.shape)
    xv = x if valid is None else jnp.where(valid, x, 0)
    r = list_ranks(
        xv,
        valid,
        slots,
        eps,
        relative=relative,
        regularization=regularization,
        method="auto",
        segments=ids,
    )
    return r, slots


def cutoff_at(r, k):
    r"""$c_k(r) = \mathrm{clip}(k + 1 - r, 0, 1)$: $[r \le k]$ at integer ranks (1 for None)."""
    return jnp.ones_like(r) if k is None else jnp.clip(k + 1 - r, 0, 1)


def gains(rel, valid, slots, gain):
    """Gains of the valid items, ``exp2`` relative to each list's top grade (no overflow)."""
    in_row = jnp.ones(rel.shape, bool) if valid is None else valid
    if gain == "exp2":
        top = slots.at(slots.max(jnp.where(in_row, rel, -jnp.inf)))
        top = jnp.where(jnp.isfinite(top) | jnp.isnan(top), top, 0)
        g = jnp.exp2(rel - top) - jnp.exp2(-top)  # (2^rel - 1) / 2^top
    else:
        g = rel
    return jnp.where(in_row, g, 0)  # (a traced negative relevance: a bad row, see run_metric)


def ideal_dcg(g, valid, ids, slots, k):
    """Per slot: the DCG of each list in its ideal order (gains sorted), cut at ``k``."""
    g = lax.stop_gradient(g)
    last = None if valid is None else ~valid
    if ids is None:
        perm = _sort.argsort(g, descending=True, last=last)
        pos = lax.broadcasted_iota(jnp.int32, g.shape, g.ndim - 1)
        sorted_slots = slots
    else:
        perm = _sort.argsort_segments(g, slots.ids, descending=True, last=last)
        ids_sorted = take(slots.ids, perm)
        pos = _segments.positions(ids_sorted)
        sorted_slots = _segments.Slots(ids_sorted, slots.n)
    disc = 1 / jnp.log2(2 + pos.astype(g.dtype))
    if k is not None:
        disc = jnp.where(pos < k, disc, 0)
    return sorted_slots.sum(take(g, perm) * disc)


def take(x, idx):
    """``x[..., idx]`` row by row."""
    return jnp.take_along_axis(x, idx, axis=-1)


def _dcg_terms(x, rel, eps, valid, ids, *, k, relative, regularization, gain):
    """Per-item DCG terms at the soft ranks, per-slot ideal DCG, slots."""
    r, slots = ranks_of(x, valid, ids, eps, relative=relative, regularization=regularization)
    g = gains(rel, valid, slots, gain)
    terms = g * cutoff_at(r, k) / jnp.log2(1 + r)
    return terms, ideal_dcg(g, valid, ids, slots, k), slots


def ratio(num, den):
    """``num / den`` where ``den > 0``, else 0 (NaN stays NaN), with finite gradients."""
    ok = den > 0
    out = jnp.where(ok, num / jnp.where(ok, den, 1), 0)
    return jnp.where(jnp.isnan(num) | jnp.isnan(den), jnp.nan, out)


# ---------------------------------------------------------------------------- jitted bodies
_STATIC = ("k", "relative", "regularization", "gain", "metric")


@functools.partial(jax.jit, static_argnames=_STATIC)
def run_metric(x, rel, eps, valid, ids, *, k, relative, regularization, gain, metric):
    """One value per row: the mean of ``metric`` over the row's lists."""

    def body(x, rel, eps, valid, ids):
        # the bad-row policy: a row with a non-finite valid score or relevance, a traced negative
        # relevance (known ones raise; weights may be negative) or a bad strength is NaN (0 at
        # masked items) with exactly 0 derivative (its inputs replaced before the ranks)
        good = row_ok(x, valid, eps, rel, signed=metric == "rank_linear")
        x, rel = _checks.clean_rows(good, x), _checks.clean_rows(good, rel)
        eps = jnp.where(good, eps, 1)
        out = _metric_body(x, rel, eps, valid, ids)
        out = _checks.nan_rows(out, good)
        return out if valid is None or metric != "lambda" else jnp.where(valid, out, 0)

    def _metric_body(x, rel, eps, valid, ids):
        opts = dict(relative=relative, regularization=regularization)
        if metric == "ndcg":
            terms, idcg, slots = _dcg_terms(x, rel, eps, valid, ids, k=k, gain=gain, **opts)
            per_slot = ratio(slots.sum(terms), idcg)
        elif metric == "lambda":
            terms, idcg, slots = _dcg_terms(x, rel, eps, valid, ids, k=k, gain=gain, **opts)
            out = ratio(terms, slots.at(idcg))
            return out if valid is None else jnp.where(valid, out, 0)
        else:
            r, slots = ranks_of(x, valid, ids, eps, **opts)
            inside = jnp.ones(x.shape, bool) if valid is None else valid
            if metric == "mrr":
                hit = inside & (rel > 0)
                per_slot = slots.max(jnp.where(hit, cutoff_at(r, k) / r, 0))
                per_slot = jnp.maximum(per_slot, 0)
            elif metric == "precision":
                hit = (inside & (rel > 0)).astype(x.dtype)
                size = slots.sum(inside.astype(x.dtype))
                per_slot = ratio(slots.sum(hit * cutoff_at(r, k)), jnp.minimum(size, k))
            else:  # rank_linear: sum of weight * rank
                per_slot = slots.sum(jnp.where(inside, rel * r, 0))
        present = _segments.present(slots, valid, x.shape)
        return _segments.row_mean(per_slot, present)

    return _sharding.on_batch_shards(body, x, rel, eps, valid, ids, name="scores")
