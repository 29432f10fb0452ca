"""Docstring examples run as doctests, and the documentation site builds in strict mode."""

import doctest
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = [
    "softops.isotonic",
    "softops.projection",
    "softops.topk_ot",
    "softops._ot.permutation",
    "softops._isotonic.quantize",
    "softops.forward_grad",
    "softops.losses._ranking",
    "softops.losses._classification",
    "softops.losses._order_statistics",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(name)
    # conftest enables x64 and strict promotion; docstrings show the library defaults.
    with (
        jax.enable_x64(False),
        jax.numpy_dtype_promotion("standard"),
        jax.numpy_rank_promotion("allow"),
    ):
        result = doctest.testmod(
            module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
        )
    assert result.failed == 0
    has_examples = any(t.examples for t in doctest.DocTestFinder().find(module))
    if has_examples:
        assert result.attempted > 0


@pytest.mark.slow  # .ci/run also builds the site in its own step
def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    exe = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    proc = subprocess.run(
        [exe, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
