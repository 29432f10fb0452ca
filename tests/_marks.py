"""Test parametrization helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest


def slow_where(values: Iterable, pred: Callable) -> list:
    """``values`` for ``pytest.mark.parametrize``, those where ``pred`` holds in the slow pass."""
    return [pytest.param(v, marks=pytest.mark.slow) if pred(v) else v for v in values]
