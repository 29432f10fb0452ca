"""The forward-gradient family (private): tangents, activity perturbation and local losses.

``noise`` (the counter-based hash noise and seed pairs), ``leaves`` (a pytree's float leaves),
``tangents`` (parameter and per-example tangents, the K-tangent JVP), ``tap`` (activity taps),
``block`` (one block's activity-perturbed estimator, in named steps), ``activity`` and ``local``
(the public estimators built on it), ``transforms`` (the optax transforms). Imports only the
shared floor.
"""
