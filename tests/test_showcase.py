"""The ``python -m softops`` showcase: files only under --out, labels a reader understands."""

import json
import subprocess
import sys

import numpy as np
import pytest

from softops.showcase import _scaling, main, results


def _run(argv, cwd, monkeypatch):
    monkeypatch.chdir(cwd)
    main.main(["--no-progress", *argv])


def test_without_out_prints_the_report_and_writes_nothing(
    tmp_path, monkeypatch, capsys, float32_default
):
    _run(["--quick", "--skip-training", "--sizes", "64"], tmp_path, monkeypatch)
    report = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []
    assert report.startswith("# softops showcase\n")
    assert "## 2. Soft rank against the paper's baselines" in report
    assert "| 64 |" in report and ".png" not in report  # no plots without a folder
    # The device line names the device (not "cpu (cpu)").
    device = results.device_description()
    assert device.startswith(("CPU (", "GPU (", "TPU (")) and "cpu (cpu)" not in report
    assert f", {device}." in report.splitlines()[2]


@pytest.mark.slow
def test_with_out_writes_the_report_plots_and_results_there(
    tmp_path, monkeypatch, capsys, float32_default
):
    out = tmp_path / "report"
    _run(["--quick", "--skip-training", "--sizes", "64", "--out", str(out)], tmp_path, monkeypatch)
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "README.md",
        "results.json",
        "soft_rank_scaling.png",
        "soft_sort_rank_vs_strength.png",
    ]
    for png in ("soft_rank_scaling.png", "soft_sort_rank_vs_strength.png"):
        assert (out / png).stat().st_size > 1000
        assert f"]({png})" in (out / "README.md").read_text()
    record = results.read(out / "results.json")
    assert record["name"] == "showcase" and record["command"].startswith("python -m softops")
    assert set(record["tables"]) == {"figure2", "scaling"}
    scaling = record["tables"]["scaling"]
    # Human labels, not internal keys, in the header.
    assert scaling["columns"] == ["n", *_scaling.METHODS]
    assert scaling["rows"][0][0] == "64" and all(" ms, " in c for c in scaling["rows"][0][1:])
    assert [r["status"] for r in record["data"]["scaling"]["all-pairs O(n²)"]] == ["ok"]


def test_a_method_over_the_memory_budget_reads_out_of_memory(float32_default):
    f = _scaling.METHODS["all-pairs O(n²)"]
    status, seconds, mem = _scaling.measure(f, 256, budget_bytes=1024, repeats=1)
    # The n x n matrix is counted (XLA:CPU's YNNPACK fusions are off), so it is over 1 KiB.
    assert status == "over budget" and seconds is None and mem >= 256 * 256 * 4
    cell = _scaling._cell(status, seconds, mem, 256, 1024)
    assert cell.startswith("out of memory (n=256: needs ") and cell.endswith(
        " KiB > 1 KiB budget; not run)"
    )
    assert _scaling._cell("oom", None, 0, 100_000, 2**30) == "out of memory (n=100,000)"
    assert _scaling._cell("ok", 1.0734, 40 * 2**30, 10, 2**30) == "1,073 ms, 40 GiB"
    assert _scaling._cell("ok", 1.2345e-4, 3 * 2**20, 10, 2**30) == "0.123 ms, 3.0 MiB"
    assert _scaling._is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory"))
    assert not _scaling._is_out_of_memory(RuntimeError("INVALID_ARGUMENT: shapes"))


def test_results_round_trip_and_reject_nan(tmp_path):
    tab = results.table(["method", "time"], [["a", "1 ms"]])
    path = results.write(
        tmp_path / "r.json", "t", tables={"x": tab}, data={"v": float("nan"), "w": (1, 2)}
    )
    record = results.read(path)
    assert record["tables"]["x"]["align"] == ["l", "r"]
    assert record["data"] == {"v": None, "w": [1, 2]}  # JSON has no NaN; tuples become lists
    assert results.markdown(tab) == "| method | time |\n|---|---:|\n| a | 1 ms |"
    with pytest.raises(ValueError, match="2 columns"):
        results.table(["a", "b"], [["only one"]])
    path.write_text(json.dumps({"format": 99}))
    with pytest.raises(ValueError, match="unknown results format"):
        results.read(path)


def test_help_runs_as_a_module():
    proc = subprocess.run(
        [sys.executable, "-m", "softops", "--help"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "--out DIR" in proc.stdout and "--quick" in proc.stdout


@pytest.mark.slow
def test_quick_run_with_training(tmp_path, monkeypatch, capsys, float32_default):
    out = tmp_path / "report"
    _run(["--quick", "--out", str(out)], tmp_path, monkeypatch)
    report = (out / "README.md").read_text()
    assert "## 3. Differentiable kNN through SOFT top-k" in report
    assert "| FGD, activity-perturbed + local losses |" in report
    assert (out / "forward_grad_digits.png").stat().st_size > 1000
    assert "_" not in "".join(results.read(out / "results.json")["tables"]["knn"]["columns"])
    # section 5: the task suite's headline table, a score for every trained model: accuracies in
    # [0, 1], R² at most 1 (negative before a model learns)
    tasks = results.read(out / "results.json")["tables"]["tasks"]
    assert "## 5. The task suite at quick sizes" in report
    rows = [row for row in tasks["rows"] if "chance" not in row[2]]
    scores = [float(row[-1].split(" ")[0]) for row in rows]
    assert len(rows) == 11 and all(np.isfinite(v) and v <= 1.0 for v in scores), rows
    assert all(0.0 <= float(r[-1].split(" ")[0]) for r in rows if r[1] != "test R²"), rows
