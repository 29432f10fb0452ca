"""What the examples write with ``--out DIR``: shared by the example scripts (not an example)."""

from __future__ import annotations

import json
import pathlib


def write_outputs(out: str | None, res: dict, text: str) -> None:
    """With ``--out DIR``: the results (``results.json``) and the report (``report.txt``) in DIR."""
    if out is None:
        return
    path = pathlib.Path(out)
    path.mkdir(parents=True, exist_ok=True)
    (path / "results.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    (path / "report.txt").write_text(text)
