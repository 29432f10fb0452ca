"""Recorded results: the JSON files that the README's and the docs' tables are generated from.

The showcase and the benchmarks write one file each (``--json PATH``); committed under
``benchmarks/results/``, ``scripts/update_tables.py`` pastes their tables into the Markdown files
between ``<!-- table:FILE.TABLE -->`` and ``<!-- /table:FILE.TABLE -->``, and their values between
``<!-- value:FILE.KEY -->`` and ``<!-- /value -->`` (``FILE`` is the JSON file's stem).

Format (``"format": 1``):

    {
      "format": 1,
      "name": "bench_forward_grad",                  # what produced it
      "command": "python benchmarks/bench_forward_grad.py --json ...",
      "date": "2026-11-24T05:12:00+00:00",          # UTC, when the run finished
      "seconds": 123.4,                              # wall-clock time of the run
      "environment": {"softops": "0.1.0.dev0", "jax": "0.10.2", "jaxlib": "0.10.2",
                      "python": "3.11.7", "backend": "cpu", "device": "CPU (..., 2 cores)",
                      "device_count": 1, "machine": "Linux-...-x86_64", "git": "8a2a79b"},
      "tables": {"cost": {"columns": ["model", "Rf"], "align": ["l", "r"],
                          "rows": [["MLP", "2.57"]], "note": "optional caption"}},
      "values": {"total_seconds": "39 s"},          # display strings for prose
      "data": {...}                                  # raw numbers, free form
    }

Cells and values are display strings, formatted by the program that measured them.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FORMAT = 1


def device_description() -> str:
    """``"CPU (<model>, <n> cores)"`` or ``"GPU (<device kind>)"``: what the numbers ran on."""
    import jax

    dev = jax.devices()[0]
    if dev.platform != "cpu":
        return f"{dev.platform.upper()} ({dev.device_kind})"
    model = platform.processor() or "unknown model"
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU ({model}, {cores} cores)"


def _git_commit() -> str | None:
    """The commit of the source checkout softops runs from; ``None`` for an installed wheel."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parents[2],  # the checkout, if softops runs from one
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment() -> dict[str, Any]:
    """Versions, backend and machine of this run."""
    import jax
    import jaxlib

    import softops

    return {
        "softops": softops.__version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "device": device_description(),
        "device_count": jax.device_count(),
        "machine": platform.platform(),
        "git": _git_commit(),
    }


def header_line() -> str:
    """``softops <version>, JAX <version>, <device>``: the first line of every report."""
    env = environment()
    return f"softops {env['softops']}, JAX {env['jax']}, {env['device']}"


def table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    align: Sequence[str] | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """A table entry: ``columns``, ``rows`` of display strings, ``align`` ("l"/"r") per column."""
    rows = [[str(c) for c in row] for row in rows]
    for row in rows:
        if len(row) != len(columns):
            raise ValueError(f"a row has {len(row)} cells for {len(columns)} columns: {row}")
    out: dict[str, Any] = {"columns": list(columns), "rows": rows}
    out["align"] = list(align) if align is not None else ["l"] + ["r"] * (len(columns) - 1)
    if note:
        out["note"] = note
    return out


def markdown(entry: dict[str, Any]) -> str:
    """The Markdown of a table entry (header, alignment row, rows)."""
    cols = entry["columns"]
    align = entry.get("align") or ["l"] * len(cols)
    lines = [
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in entry["rows"]]
    return "\n".join(lines)


def _jsonable(obj: Any) -> Any:
    """Non-finite floats become ``None`` (JSON has no inf or NaN); tuples become lists."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # NumPy / JAX scalars
        return _jsonable(obj.item())
    return obj


def write(
    path: str | os.PathLike,
    name: str,
    *,
    tables: dict[str, dict[str, Any]],
    values: dict[str, str] | None = None,
    data: Any = None,
    seconds: float | None = None,
    command: str | None = None,
) -> Path:
    """Writes a results file (the format above); returns its path."""
    record = {
        "format": FORMAT,
        "name": name,
        "command": command or " ".join(["python", *sys.argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seconds": seconds,
        "environment": environment(),
        "tables": tables,
        "values": values or {},
        "data": data,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(record), indent=1, allow_nan=False) + "\n")
    return path


def read(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a results file, checking its format."""
    record = json.loads(Path(path).read_text())
    if record.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown results format {record.get('format')!r}")
    return record
