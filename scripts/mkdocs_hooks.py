"""MkDocs hook: ships MathJax with the built site, so the math renders offline.

MathJax comes from the ``django-static-mathjax`` wheel (the ``docs`` extra): a plain copy of
MathJax's distribution files with no dependencies (Django is only needed to serve it through
Django, which the docs do not do). The hook adds the files the pages load to the site under
``javascripts/mathjax/``: the TeX-to-CommonHTML bundle, its web fonts, the TeX extensions MathJax
may autoload, and the menu and accessibility components it loads on demand. No page fetches
anything from the network (``scripts/check_site.py`` checks the built HTML).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mkdocs.structure.files import File, Files

DEST = "javascripts/mathjax"
# Paths under MathJax's es5/ directory that the site serves.
PARTS = ("tex-chtml.js", "output/chtml/fonts/woff-v2", "input/tex/extensions", "ui", "a11y")


def mathjax_root() -> Path:
    """The es5/ directory of the installed MathJax copy."""
    spec = importlib.util.find_spec("mathjax")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        root = Path(loc) / "static" / "mathjax" / "es5"
        if (root / "tex-chtml.js").is_file():
            return root
    raise SystemExit(
        "MathJax not found: install the docs extra (pip install -e '.[docs]'), which brings "
        "django-static-mathjax, a packaged copy of MathJax 3"
    )


def on_files(files: Files, config) -> Files:
    """Adds MathJax's files to the site."""
    root = mathjax_root()
    license_file = root.parent / "LICENSE"
    sources = [license_file] if license_file.is_file() else []
    for part in PARTS:
        path = root / part
        sources += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for src in sources:
        rel = src.relative_to(root if src != license_file else root.parent).as_posix()
        files.append(File.generated(config, f"{DEST}/{rel}", abs_src_path=str(src)))
    return files
