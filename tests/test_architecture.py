"""The floor plan: three private families on a shared floor, and the faces above them.

Each family subpackage (``softops._isotonic``, ``softops._ot``, ``softops._forward``) imports only
itself and the shared floor (the private top-level modules ``softops._*.py``); the shared floor
imports no family and no face. A new module lands in one family or on the floor.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "softops"
FAMILIES = ("_isotonic", "_ot", "_forward")
FLOOR = sorted(p.stem for p in PACKAGE.glob("_*.py") if p.stem not in ("__init__", "__main__"))


def _imported(path: Path) -> set[str]:
    """Every ``softops.*`` module a file imports (``from softops import x`` counts as softops.x)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("softops"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("softops"):
            base = node.module or ""
            if base != "softops":
                names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def _part(module: str) -> str | None:
    """The family or floor module a dotted name belongs to, else None (a face, losses, showcase)."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    if parts[1] in FAMILIES:
        return parts[1]
    if parts[1] in FLOOR:
        return "floor"
    return None


def test_the_floor_plan_is_what_the_docs_say():
    private_dirs = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name[0] == "_"}
    assert private_dirs - {"__pycache__"} == set(FAMILIES)
    assert "_checks" in FLOOR and "_sharding" in FLOOR and "_sort" in FLOOR


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_imports_only_itself_and_the_floor(family):
    for path in sorted((PACKAGE / family).glob("*.py")):
        for module in _imported(path):
            part = _part(module)
            assert part in (family, "floor"), f"{path.name} in {family} imports {module}"


def test_the_floor_imports_no_family_and_no_face():
    for stem in FLOOR:
        for module in _imported(PACKAGE / f"{stem}.py"):
            assert _part(module) == "floor", f"{stem}.py imports {module}"


def _modules() -> set[str]:
    """Every module and package name under softops (dotted)."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        names.add(".".join(parts))
    return names


def test_no_module_reads_a_private_name_of_another():
    # `from softops.x import _name` and `mod._name` with `mod` a softops module: a private name is
    # private to its module (private modules are fine: `from softops import _checks`).
    modules = _modules()
    short = {m.rsplit(".", 1)[-1] for m in modules}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("softops"):
                for a in node.names:
                    private = a.name.startswith("_") and not a.name.startswith("__")
                    if private and f"{node.module}.{a.name}" not in modules:
                        found.append(f"{path.name}: from {node.module} import {a.name}")
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                private = node.attr.startswith("_") and not node.attr.startswith("__")
                if private and node.value.id in short and node.value.id not in ("jax", "np", "jnp"):
                    found.append(f"{path.name}: {node.value.id}.{node.attr}")
    assert not found, "\n".join(found)
