"""Smoke test of the `python -m softops` showcase at its quick size (examples skipped)."""

from softops import _showcase


def test_showcase_quick(tmp_path):
    _showcase.main(["--quick", "--skip-examples", "--out", str(tmp_path)])
    report = (tmp_path / "README.md").read_text()
    assert "Soft rank against the paper's baselines" in report
    assert (tmp_path / "soft_sort_rank_vs_strength.png").stat().st_size > 1000
    assert (tmp_path / "soft_rank_scaling.png").stat().st_size > 1000
    # Each size row reports the three methods.
    assert report.count("| 1,000 |") == 1
