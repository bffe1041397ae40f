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
    monkeypatch.setattr(main_job, "buildable_configs", lambda manual_dir: data.CONFIGS)
    monkeypatch.setattr(main_job, "served_checks", recorder("served_checks"))
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
                     "export", "served_checks", "model_card"]  # fmt: skip
    data_dir = f"--data-dir {tmp_path / 'd'}"
    studies = Path(run) / "safety" / "pseudo_studies"
    safety = calls[1 + len(evaluations) : 4 + len(evaluations)]
    assert safety == [f"abstention {run} {data_dir}", f"study_rule {run} {studies}",
                      f"input_gate {run} {data_dir}"]  # fmt: skip
    # the card comes last: it reports what the served model said on the other data
    assert calls[-3:] == [f"export {run} --model-base-path {models}",
                          f"served_checks {run} {models} {tmp_path / 'd'}",
                          f"model_card {run} {data_dir}"]  # fmt: skip

    calls.clear()
    assert main_job.main([*argv, "--stop-after", "safety"]) == 0
    assert calls[-1].startswith("input_gate")


def test_skip_safety_exports_without_the_safety_steps(tmp_path, monkeypatch, capsys):
    calls = _record_steps(monkeypatch)
    argv = ["--data-dir", str(tmp_path), "--run", str(tmp_path / "run"), "--skip-safety",
            "--stop-after", "export"]  # fmt: skip
    assert main_job.main(argv) == 0
    evaluations = ["evaluate"] * len(data.CONFIGS)
    steps = ["build", *evaluations, "export", "served_checks", "model_card"]
    assert [c.split()[0] for c in calls] == steps
    assert "safety steps skipped" in capsys.readouterr().out


def test_a_failing_safety_step_stops_the_job_before_the_export(tmp_path, monkeypatch, capsys):
    calls = _record_steps(monkeypatch, fail="input_gate")
    argv = ["--data-dir", str(tmp_path), "--run", str(tmp_path / "run"), "--stop-after", "export"]
    assert main_job.main(argv) == 1
    assert [c.split()[0] for c in calls][-1] == "input_gate"
    assert "input gate failed" in capsys.readouterr().err


def _train_config(monkeypatch, tmp_path, extra: list[str]):
    """The TrainConfig the train step would use (training replaced by a recorder)."""
    from tumorlib.training import train

    seen = []

    def fake_train(config):
        seen.append(config)
        return tmp_path / config.run_name

    monkeypatch.setattr(main_job, "build_dataset", lambda *a: None)
    monkeypatch.setattr(main_job, "buildable_configs", lambda manual_dir: data.CONFIGS)
    monkeypatch.setattr(train, "train", fake_train)
    argv = ["--data-dir", str(tmp_path), "--stop-after", "train", *extra]
    assert main_job.main(argv) == 0
    (config,) = seen
    return config


def test_default_recipe_trains_one_model_on_both_sources(tmp_path, monkeypatch):
    config = _train_config(monkeypatch, tmp_path, ["--run-name", "ship"])
    assert config.run_name == "ship" and config.dataset_config == "multi_sequence"
    assert (config.alpha, config.image_size) == (1.0, 224)
    extra = ["--sartaj-only", "--alpha", "0.35", "--image-size", "256", "--seed", "7"]
    sartaj = _train_config(monkeypatch, tmp_path, extra)
    assert sartaj.dataset_config == "clean"
    assert (sartaj.alpha, sartaj.image_size, sartaj.seed) == (0.35, 256, 7)


def test_without_the_archive_the_job_asks_for_it_or_sartaj_only(tmp_path, monkeypatch, capsys):
    from tumorlib.training import train

    built = []
    monkeypatch.setattr(main_job, "build_dataset", lambda *a: built.append(a[2]))
    monkeypatch.setattr(train, "train", lambda config: tmp_path / "r")
    manual = tmp_path / "manual"
    manual.mkdir()
    argv = ["--manual-dir", str(manual), "--data-dir", str(tmp_path), "--stop-after", "train"]
    assert main_job.main(argv) == 1
    err = capsys.readouterr().err
    assert "extra_sequences_mri.zip" in err and "--sartaj-only" in err and built == []
    assert main_job.main([*argv, "--sartaj-only"]) == 0
    assert built == [("clean", "original")]


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
    # the served model was checked on the test split per source, and the card says so
    check = json.loads((run / "safety" / "source_checks" / "test" / "source_check.json")
                       .read_text())  # fmt: skip
    assert check["source"] == "multi_sequence/test" and check["all"]["n"] > 0
    assert {"sartaj", "tcga_lgg/flair", "tcga_lgg/t1_precontrast"} == set(check["by_collection"])
    assert "## The served model on other data" in (run / "model_card.md").read_text()
    meta = json.loads((models / "1" / "assets" / "metadata.json").read_text())
    assert meta["abstention"]["threshold"] > 0 and meta["input_gate"]["layers"]
    outputs = tf.saved_model.load(str(models / "1")).signatures["serving_default"]
    assert {"abstain", "in_distribution", "gate_score"} <= set(outputs.structured_outputs)
