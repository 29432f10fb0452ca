"""Sharding helpers for the activity estimators (private)."""

from __future__ import annotations

from jax import lax


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
