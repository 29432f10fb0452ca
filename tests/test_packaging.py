"""The package metadata matches what CI tests: version floors, Python versions, the license."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CI = (ROOT / ".ci" / "run").read_text()


def _floors() -> dict[str, str]:
    out = {}
    for dep in PROJECT["dependencies"]:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", dep)
        assert m, f"core dependency without a plain >= floor: {dep!r}"
        out[m.group(1)] = m.group(2)
    return out


def test_ci_floors_pin_the_declared_floors():
    pins = {}
    for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[name] = version
    floors = _floors()
    assert set(pins) == set(floors) == {"jax", "jaxlib", "numpy", "optax"}
    for name, floor in floors.items():
        # numpy>=2.0 is tested as 2.0.0: compare release tuples padded with zeros.
        want = tuple(int(p) for p in floor.split(".")) + (0,) * 3
        got = tuple(int(p) for p in pins[name].split(".")) + (0,) * 3
        assert got[:3] == want[:3], f"{name}: pyproject floor {floor}, CI pins {pins[name]}"


def test_python_versions_match_the_tested_range():
    assert PROJECT["requires-python"] == ">=3.11"
    classified = sorted(
        c.rsplit(" ", 1)[1]
        for c in PROJECT["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert classified == ["3.11", "3.12", "3.13"]
    # CI runs the oldest (with the floors) and the newest classified Python.
    assert "oldest_python=3.11" in CI and "newest_python=3.13" in CI


def test_license_ships():
    assert PROJECT["license"] == "Apache-2.0"
    assert PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
