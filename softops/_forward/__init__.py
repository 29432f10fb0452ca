"""The forward-gradient family (private): tangents, activity perturbation and local losses.

``noise`` (counter-based random tangents), ``tangents`` (sampling and the K-tangent JVP), ``tap``
(activity taps), ``activity`` (activity-perturbed estimators), ``local`` (local losses),
``transforms`` (the optax transforms). Imports only the shared floor.
"""
