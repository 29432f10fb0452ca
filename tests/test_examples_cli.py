"""Every example takes ``--out DIR``, refuses abbreviated options, and is listed in the README."""

import json
import pathlib

import pytest

from tests._examples import EXAMPLES, load_example

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_takes_out(path, capsys):
    with pytest.raises(SystemExit) as exit_:
        load_example(path.stem).main(["--help"])
    assert exit_.value.code == 0
    assert "--out" in capsys.readouterr().out


def test_abbreviated_options_are_refused(capsys):
    # `--out DIR` used to reach `--outliers` through argparse's prefix matching.
    module = load_example("robust_regression")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--outl", "0.3"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --outl" in capsys.readouterr().err


def test_write_outputs_writes_only_into_out(tmp_path):
    module = load_example("robust_regression")
    module.write_outputs(None, {"a": 1.0}, "report\n")  # no --out: nothing written
    assert not any(tmp_path.iterdir())
    out = tmp_path / "new" / "dir"
    module.write_outputs(str(out), {"a": 1.0, "n": 3}, "report\n")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "report.txt",
        "results.json",
    ]
    assert json.loads((out / "results.json").read_text()) == {"a": 1.0, "n": 3}
    assert (out / "report.txt").read_text() == "report\n"


def test_readme_lists_every_example():
    readme = (ROOT / "README.md").read_text()
    missing = [p.name for p in EXAMPLES if p.name not in readme]
    assert not missing, f"README.md does not list {missing}"
