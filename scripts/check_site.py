r"""Checks a built documentation site: no raw reST markup, no unrendered math, no network loads.

    mkdocs build --strict --site-dir SITE && python scripts/check_site.py SITE

Fails (exit 1, one line per problem) when an HTML page of SITE

- shows reST markup literally (``:math:`…```, ``:func:`…```, ``.. math::``, …) or an unresolved
  cross-reference (``[name][softops.…]``);
- shows math that the Markdown did not turn into a MathJax span (``$…$``, ``\(…\)``, TeX
  commands such as ``\frac`` in the text), or has math without the MathJax shipped in SITE;
- loads anything from the network: a ``<script>``, ``<link>``, ``<img>``, ``<iframe>``,
  ``<source>`` or ``<object>`` whose address is ``http(s)://`` or ``//``, or a stylesheet with
  such a ``url(…)`` or ``@import``.

Links (``<a href>``) to other sites are fine: following them is the reader's choice.
"""

from __future__ import annotations

import argparse
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

REST = re.compile(
    r":(?:math|func|class|mod|meth|attr|obj|data|exc|ref|doc|py:\w+):(?!\w)"
    r"|\.\. (?:math|code-block|note|warning|seealso|autofunction)::"
)
XREF = re.compile(r"\]\[softops[\w.]*\]")
# Math left in the text: $…$ around TeX, \( \) or \[ \] delimiters, or a TeX command.
MATH = re.compile(
    r"\$[^$\s][^$]*?[\\^_{}][^$]*?\$|\\\(|\\\)|\\\[|\\\]"
    r"|\\(?:frac|mathrm|mathbb|mathcal|operatorname|varepsilon|sigma|sum|langle|rangle|tfrac"
    r"|arg|min|max|log|exp|cdot|dots|le|ge|in|odot|qquad|quad|begin|end|left|right)\b"
)
EXTERNAL = re.compile(r"^\s*(?:https?:)?//", re.IGNORECASE)
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])\s*((?:https?:)?//[^'")\s]+)""", re.I)
LOADING = {
    "script": ("src",),
    "link": ("href",),
    "img": ("src", "srcset"),
    "iframe": ("src",),
    "source": ("src", "srcset"),
    "object": ("data",),
    "video": ("src", "poster"),
    "audio": ("src",),
    "embed": ("src",),
}
# Text inside these is not prose (code, scripts, math already handed to MathJax).
SKIP = {"code", "pre", "script", "style", "textarea"}
MATHJAX = "javascripts/mathjax/tex-chtml.js"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.loads: list[str] = []
        self.scripts: list[str] = []
        self.math = 0
        self._skip: list[str] = []  # open tags whose text is not prose
        self._math_depth: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        attrs = dict(attrs)
        for name in LOADING.get(tag, ()):
            value = attrs.get(name)
            if value and any(EXTERNAL.match(v.split()[0]) for v in value.split(",") if v.strip()):
                if not (tag == "link" and attrs.get("rel") in ("canonical", "alternate")):
                    self.loads.append(f"<{tag} {name}={value!r}>")
        if tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
        classes = (attrs.get("class") or "").split()
        if "arithmatex" in classes:
            self.math += 1
            self._math_depth.append(tag)
        elif self._math_depth and tag == self._math_depth[0]:
            self._math_depth.append(tag)
        if tag in SKIP:
            self._skip.append(tag)

    def handle_endtag(self, tag) -> None:
        if self._skip and self._skip[-1] == tag:
            self._skip.pop()
        if self._math_depth and tag == self._math_depth[-1]:
            self._math_depth.pop()

    def handle_data(self, data) -> None:
        if not self._skip and not self._math_depth:
            self.text.append(data)


def _excerpt(text: str, m: re.Match) -> str:
    return " ".join(text[max(0, m.start() - 40) : m.end() + 40].split())


def page_problems(html: str, name: str, site: Path | None = None, page: Path | None = None):
    """The problems of one HTML page (``site``/``page`` locate the MathJax it loads)."""
    parser = _Page()
    parser.feed(html)
    text = " ".join(parser.text)
    out = [f"{name}: loads from the network: {load}" for load in parser.loads]
    for pattern, what in ((REST, "raw reST markup"), (XREF, "unresolved cross-reference")):
        out += [f"{name}: {what}: …{_excerpt(text, m)}…" for m in pattern.finditer(text)]
    out += [f"{name}: unrendered math: …{_excerpt(text, m)}…" for m in MATH.finditer(text)]
    if parser.math:
        local = [s for s in parser.scripts if s.split("?")[0].endswith(MATHJAX)]
        if not local:
            out.append(f"{name}: has math but does not load the site's own {MATHJAX}")
        elif site is not None and page is not None:
            for src in local:
                if not (page.parent / src.split("?")[0]).resolve().is_file():
                    out.append(f"{name}: loads {src}, which is not in the site")
    return out


def css_problems(css: str, name: str) -> list[str]:
    """Stylesheet rules that fetch from the network."""
    return [f"{name}: loads from the network: {m.group(1)}" for m in CSS_URL.finditer(css)]


def site_problems(site: Path) -> list[str]:
    """Every problem of the built site ``site``."""
    pages = sorted(site.rglob("*.html"))
    if not pages:
        return [f"{site}: no HTML page (build the site first)"]
    out: list[str] = []
    for page in pages:
        name = page.relative_to(site).as_posix()
        out += page_problems(page.read_text(encoding="utf-8"), name, site, page)
    for css in sorted(site.rglob("*.css")):
        out += css_problems(css.read_text(encoding="utf-8"), css.relative_to(site).as_posix())
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: ``check_site.py SITE``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the directory mkdocs built")
    args = parser.parse_args(argv)
    problems = site_problems(args.site)
    for p in problems:
        print(p)
    pages = len(list(args.site.rglob("*.html")))
    if problems:
        print(f"{len(problems)} problem(s) in {args.site}")
        return 1
    print(f"{pages} pages: no raw markup, no unrendered math, nothing loaded from the network")
    return 0


if __name__ == "__main__":
    sys.exit(main())
