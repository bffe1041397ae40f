"""The main job's orchestration: the dataset step builds every config and prints statistics;
the safety steps (abstention, input gate, model card) run between evaluation and export."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.paths import DUMMY_DATA
from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.data import pipeline as data
from tumorlib_cli import main_job

DUMMY = DUMMY_DATA


def test_build_step_builds_every_config_and_prints_counts(tmp_path, capsys):
    code = main_job.main(
        ["--manual-dir", str(DUMMY), "--data-dir", str(tmp_path), "--stop-after", "build"]
    )
    assert code == 0
    out = capsys.readouterr().out
    version = str(data.get_builder("clean", tmp_path).info.version)
    for config in data.CONFIGS:
        assert f"brain_mri/{config}: per-split, per-class counts" in out
        assert (tmp_path / "brain_mri" / config / version / "dataset_info.json").exists()
    assert "TCGA-LGG patients per split" in out
    assert all(name in out for name in CLASS_NAMES)
    assert "validation" in out  # only the clean config has one


def test_reusing_a_missing_run_fails_clearly(tmp_path, capsys):
    code = main_job.main(
        ["--manual-dir", str(DUMMY), "--data-dir", str(tmp_path), "--run",
         str(tmp_path / "no-such-run"), "--stop-after", "evaluate"]
    )  # fmt: skip
    assert code == 1
    assert "no-such-run" in capsys.readouterr().err


def _record_steps(monkeypatch, fail: str | None = None) -> list[str]:
    """Replace every step's function with a recorder; ``fail`` raises an expected error."""
    from serving.export import exporter as export
    from tumorlib.evaluation import evaluate, model_card
    from tumorlib.safety import abstention_report, input_gate
    from tumorlib.studies import pseudo_study_report

    calls: list[str] = []

    def recorder(name):
        def step(*args, **kwargs):
            words = [str(a) for a in args if a is not None]
            words += [f"--{k.rstrip('_').replace('_', '-')} {v}" for k, v in kwargs.items()]
            calls.append(f"{name} {' '.join(words)}")
            if name == fail:
                raise ValueError(f"{name} could not finish")
            if name == "abstention":
                stats = {"threshold": 0.5, "coverage": 0.9, "accepted_accuracy": 0.99}
                return {"chosen_on_validation": stats, "test": stats}
            if name == "model_card":
                return Path("card.md"), Path("card.html")
            if name == "export":
                return Path(kwargs["model_base_path"]) / "1"
            return {}

        return step

    monkeypatch.setattr(main_job, "build_dataset", lambda *a: calls.append("build"))
    for module, function, name in (
        (evaluate, "evaluate", "evaluate"),
        (abstention_report, "run_abstention", "abstention"),
        (pseudo_study_report, "evaluate_run", "study_rule"),
        (input_gate, "run_gate", "input_gate"),
        (model_card, "write_card", "model_card"),
        (export, "export_run", "export"),
    ):
        monkeypatch.setattr(module, function, recorder(name))
    monkeypatch.setattr(pseudo_study_report, "summary_lines", lambda report: [])
    return calls


def test_safety_steps_run_on_the_run_between_evaluate_and_export(tmp_path, monkeypatch):
    calls = _record_steps(monkeypatch)
    run, models = str(tmp_path / "run"), str(tmp_path / "models")
    argv = ["--data-dir", str(tmp_path / "d"), "--run", run, "--model-base-path", models]
    assert main_job.main([*argv, "--stop-after", "export"]) == 0
    names = [c.split()[0] for c in calls]
    evaluations = ["evaluate"] * len(data.CONFIGS)
    assert names == ["build", *evaluations, "abstention", "study_rule", "input_gate",
                     "model_card", "export"]  # fmt: skip
    data_dir = f"--data-dir {tmp_path / 'd'}"
    studies = Path(run) / "safety" / "pseudo_studies"
    safety = calls[1 + len(evaluations) : 5 + len(evaluations)]
    assert safety == [f"abstention {run} {data_dir}", f"study_rule {run} {studies}",
                      f"input_gate {run} {data_dir}", f"model_card {run} {data_dir}"]  # fmt: skip
    assert calls[-1] == f"export {run} --model-base-path {models}"

    calls.clear()
    assert main_job.main([*argv, "--stop-after", "safety"]) == 0
    assert calls[-1].startswith("model_card")


def test_skip_safety_exports_without_the_safety_steps(tmp_path, monkeypatch, capsys):
    calls = _record_steps(monkeypatch)
    argv = ["--data-dir", str(tmp_path), "--run", str(tmp_path / "run"), "--skip-safety",
            "--stop-after", "export"]  # fmt: skip
    assert main_job.main(argv) == 0
    evaluations = ["evaluate"] * len(data.CONFIGS)
    assert [c.split()[0] for c in calls] == ["build", *evaluations, "export"]
    assert "safety steps skipped" in capsys.readouterr().out


def test_a_failing_safety_step_stops_the_job_before_the_export(tmp_path, monkeypatch, capsys):
    calls = _record_steps(monkeypatch, fail="input_gate")
    argv = ["--data-dir", str(tmp_path), "--run", str(tmp_path / "run"), "--stop-after", "export"]
    assert main_job.main(argv) == 1
    assert [c.split()[0] for c in calls][-1] == "input_gate"
    assert "input gate failed" in capsys.readouterr().err


def _train_calls(monkeypatch, tmp_path, extra: list[str]):
    """The TrainConfigs the train step would use and the ensemble call it would make
    (training and ensembling replaced by recorders)."""
    from tumorlib.training import ensemble_run as ensemble
    from tumorlib.training import train

    seen, combined = [], []

    def fake_train(config):
        seen.append(config)
        return tmp_path / config.run_name

    def fake_ensemble(members, **kwargs):
        combined.append((members, kwargs))
        return tmp_path / kwargs["run_name"]

    monkeypatch.setattr(main_job, "build_dataset", lambda *a: None)
    monkeypatch.setattr(train, "train", fake_train)
    monkeypatch.setattr(ensemble, "make_ensemble_run", fake_ensemble)
    argv = ["--data-dir", str(tmp_path), "--stop-after", "train", *extra]
    assert main_job.main(argv) == 0
    return seen, combined


def _train_config(monkeypatch, tmp_path, extra: list[str]):
    seen, _ = _train_calls(monkeypatch, tmp_path, [*extra, "--member-sizes", "224"])
    return seen[0]


def test_default_recipe_trains_a_member_per_size_and_ensembles_them(tmp_path, monkeypatch):
    seen, combined = _train_calls(monkeypatch, tmp_path, ["--run-name", "ship"])
    assert [c.image_size for c in seen] == [320, 320, 384, 384]
    assert list(main_job.DEFAULT_MEMBER_SIZES) == [320, 384]
    assert [c.run_name for c in seen] == [
        "ship-320px", "ship-320px-acquisition", "ship-384px", "ship-384px-acquisition"
    ]  # fmt: skip
    assert len({c.seed for c in seen}) == 1 and len({c.head_units for c in seen}) == 1
    # Each member's second stage starts from its first and adds acquisition changes.
    first, second = seen[0], seen[1]
    assert first.acquisition_augment == 0.0 and first.init_from is None
    assert second.init_from == str(tmp_path / "ship-320px") and second.head_epochs == 0
    assert second.acquisition_augment == main_job.ACQUISITION_STAGE["acquisition_augment"] > 0
    ((members, kwargs),) = combined
    assert members == [tmp_path / "ship-320px-acquisition", tmp_path / "ship-384px-acquisition"]
    assert kwargs["run_name"] == "ship" and kwargs["tta"] is True

    seen, combined = _train_calls(monkeypatch, tmp_path, ["--member-sizes", "224"])
    assert [c.image_size for c in seen] == [224, 224] and combined == []
    assert seen[1].init_from == str(tmp_path / seen[0].run_name)

    seen, combined = _train_calls(
        monkeypatch, tmp_path, ["--member-sizes", "224", "--no-acquisition-stage"]
    )
    assert [c.acquisition_augment for c in seen] == [0.0] and combined == []


def test_member_sizes_must_be_sizes(tmp_path, capsys):
    for bad in ("abc", "16", ""):
        with pytest.raises(SystemExit):
            main_job.main(["--data-dir", str(tmp_path), "--member-sizes", bad])
        assert "--member-sizes" in capsys.readouterr().err


def test_training_uses_the_shipped_search_result_unless_told_none(tmp_path, monkeypatch):
    import json

    from tumorlib.training.train_config import TrainConfig

    shipped = json.loads(main_job.DEFAULT_HPARAMS.read_text())
    tuned = _train_config(monkeypatch, tmp_path, [])
    assert tuned.head_units == shipped["head_units"]
    assert tuned.head_learning_rate == pytest.approx(shipped["learning_rate"])
    untuned = _train_config(monkeypatch, tmp_path, ["--hparams", "none"])
    assert untuned.head_units == TrainConfig().head_units != shipped["head_units"]


@pytest.mark.slow
def test_main_job_exports_a_model_that_carries_abstention_and_the_gate(tmp_path):
    """Real steps on the dummy dataset and an untrained 32-px MobileNetV2 run."""
    import json

    import tensorflow as tf

    from tumorlib.contracts.runs import CALIBRATION_FILE, CONFIG_FILE, MODEL_FILE, write_json
    from tumorlib.model.classifier import build_model

    run = tmp_path / "run"
    run.mkdir()
    build_model(image_size=32, weights=None).save(run / MODEL_FILE)
    write_json(run / CONFIG_FILE, {"image_size": 32, "alpha": 0.35, "weights": "none"})
    write_json(run / CALIBRATION_FILE, {"temperature": 1.3})
    models = tmp_path / "models"
    code = main_job.main(
        ["--manual-dir", str(DUMMY), "--data-dir", str(tmp_path / "tfds"), "--run", str(run),
         "--model-base-path", str(models), "--stop-after", "export"]
    )  # fmt: skip
    assert code == 0
    for name in ("abstention.json", "input_gate.npz", "input_gate.json", "model_card.md"):
        assert (run / name).is_file(), name
    meta = json.loads((models / "1" / "assets" / "metadata.json").read_text())
    assert meta["abstention"]["threshold"] > 0 and meta["input_gate"]["layers"]
    outputs = tf.saved_model.load(str(models / "1")).signatures["serving_default"]
    assert {"abstain", "in_distribution", "gate_score"} <= set(outputs.structured_outputs)
