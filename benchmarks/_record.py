"""What every recorded run states about itself (imported from the scripts' own folder)."""

from __future__ import annotations

import datetime
import os
import platform

import jax

import softops


def run_meta(**extra) -> dict:
    """Date, versions and machine of this run, then ``extra``."""
    return dict(
        date=datetime.date.today().isoformat(),
        jax=jax.__version__,
        softops=softops.__version__,
        python=platform.python_version(),
        machine=f"{platform.machine()}, {os.cpu_count()} cores",
        **extra,
    )
