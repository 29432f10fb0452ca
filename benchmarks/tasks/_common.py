"""What the task scripts share: the recorded-run file."""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _record import run_meta  # noqa: E402


def write_json(path: str, args, body: dict, *, skip=("json", "mnist"), **meta) -> None:
    """Writes ``{"meta": ..., **body}`` to ``path``.

    The meta: the versions, the machine, ``meta`` and the command-line ``args`` (an
    ``argparse.Namespace``) less ``skip`` (paths of this machine).
    """
    meta = run_meta(**meta, args={k: v for k, v in vars(args).items() if k not in skip})
    with open(path, "w") as f:
        json.dump(dict(meta=meta, **body), f, indent=1)
