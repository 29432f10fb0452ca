"""Load an example as the tests do: with ``examples/`` on ``sys.path``, as when run as a script.

The examples share ``examples/_report.py`` (``from _report import write_outputs``), which a script
finds beside itself; a module loaded from its file path needs the folder on ``sys.path``.
``EXAMPLES`` lists the examples themselves: ``_*.py`` are their shared helpers, not examples.
"""

import importlib.util
import pathlib
import sys
from types import ModuleType

FOLDER = pathlib.Path(__file__).resolve().parents[1] / "examples"
EXAMPLES = sorted(p for p in FOLDER.glob("*.py") if not p.name.startswith("_"))


def load_example(name: str) -> ModuleType:
    """The module of ``examples/{name}.py``, executed with ``examples/`` on ``sys.path``."""
    if str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))
    spec = importlib.util.spec_from_file_location(name, FOLDER / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
