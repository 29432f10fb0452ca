"""Docstring examples run as doctests, and the documentation site builds in strict mode."""

import doctest
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import softops
import softops.losses
import softops.ltr
import softops.routing

ROOT = Path(__file__).resolve().parent.parent
# Every public object, wherever it is defined (what users read on the API pages), once.
PUBLIC = {name: getattr(softops, name) for name in softops.__all__}
PUBLIC |= {
    f"losses.{name}": obj
    for name in softops.losses.__all__
    if not any((obj := getattr(softops.losses, name)) is seen for seen in PUBLIC.values())
}
PUBLIC |= {f"ltr.{name}": getattr(softops.ltr, name) for name in softops.ltr.__all__}
PUBLIC |= {f"routing.{name}": getattr(softops.routing, name) for name in softops.routing.__all__}


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_doctests(name):
    obj = PUBLIC[name]
    tests = [t for t in doctest.DocTestFinder().find(obj, name) if t.examples]
    if inspect.isfunction(obj):
        assert tests, f"{name} has no example in its docstring"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    # conftest enables x64 and strict promotion; docstrings show the library defaults.
    with (
        jax.enable_x64(False),
        jax.numpy_dtype_promotion("standard"),
        jax.numpy_rank_promotion("allow"),
    ):
        for test in tests:
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0


PAGES = sorted(p for p in (ROOT / "docs").glob("*.md") if "```pycon" in p.read_text())
PYCON = re.compile(r"```pycon\n(.*?)```", re.DOTALL)


@pytest.mark.slow  # about a minute of compiles in all
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_pages_examples(page):
    """The ```pycon examples of each documentation page run and print what the page shows."""
    source = "\n".join(PYCON.findall(page.read_text()))
    test = doctest.DocTestParser().get_doctest(source, {}, page.name, str(page), 0)
    assert test.examples
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    with (
        np.printoptions(),  # the pages set a short print precision
        jax.enable_x64(False),
        jax.numpy_dtype_promotion("standard"),
        jax.numpy_rank_promotion("allow"),
    ):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


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


def test_docstrings_are_markdown_not_rest():
    # The API pages render docstrings as Markdown (mkdocstrings): reST roles and directives
    # would print literally. Every module of the package, private ones included (they move).
    pattern = re.compile(r":(math|func|class|mod|meth|attr):`|^\s*\.\. math::", re.M)
    found = [
        f"{path.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}"
        for path in sorted((ROOT / "softops").rglob("*.py"))
        for text in [path.read_text()]
        for m in pattern.finditer(text)
    ]
    assert not found, found
