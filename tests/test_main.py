"""The main job's orchestration: the dataset step builds both configs and prints statistics."""

from __future__ import annotations

from pathlib import Path

from tumorlib import main as main_job
from tumorlib.classes import CLASS_NAMES

DUMMY = Path(__file__).resolve().parents[1] / "datasets" / "brain_mri" / "dummy_data"


def test_build_step_builds_both_configs_and_prints_counts(tmp_path, capsys):
    code = main_job.main(
        ["--manual-dir", str(DUMMY), "--data-dir", str(tmp_path), "--stop-after", "build"]
    )
    assert code == 0
    out = capsys.readouterr().out
    for config in ("clean", "original"):
        assert f"brain_mri/{config}: per-split, per-class counts" in out
        assert (tmp_path / "brain_mri" / config / "1.0.0" / "dataset_info.json").exists()
    assert all(name in out for name in CLASS_NAMES)
    assert "validation" in out  # only the clean config has one


def test_reusing_a_missing_run_fails_clearly(tmp_path, capsys):
    code = main_job.main(
        ["--manual-dir", str(DUMMY), "--data-dir", str(tmp_path), "--run",
         str(tmp_path / "no-such-run"), "--stop-after", "evaluate"]
    )  # fmt: skip
    assert code == 1
    assert "no-such-run" in capsys.readouterr().err
