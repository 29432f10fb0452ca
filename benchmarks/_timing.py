"""Timing shared by the benchmarks (imported from the scripts' own folder)."""

from __future__ import annotations

import time

import jax
import numpy as np


def medians(fns: dict, args, repeats: int, warmup: int = 1) -> dict:
    """Median seconds of each jitted callable on ``args``, timed interleaved after a warm-up."""
    for f in fns.values():
        for _ in range(warmup):
            jax.block_until_ready(f(*args))
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}
