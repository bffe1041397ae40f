"""A short real training run on a tiny dataset, its evaluation, and the commands' bad inputs.

The tests that need the trained fixture run (about a minute on two cores) are marked ``slow``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

from tests.fixtures.training import build_learnable_dataset, calibrated_backbone_file
from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.contracts.cli import EXIT_FAILURE
from tumorlib.contracts.runs import load_run
from tumorlib.data import pipeline as data
from tumorlib.evaluation import evaluate
from tumorlib.model.calibration import apply_temperature_np, expected_calibration_error
from tumorlib.model.loading import load_run_model
from tumorlib.training import train
from tumorlib.training.train_config import TrainConfig, load_hparams

SIZE = 32


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    data_dir = build_learnable_dataset(tmp, configs=("clean", "original", "multi_sequence"))
    images = np.concatenate(
        [x for x, _ in data.load_pipeline("train", data_dir_=data_dir, image_size=SIZE,
                                          training=False).as_numpy_iterator()]
    )  # fmt: skip
    weights = calibrated_backbone_file(tmp / "backbone.weights.h5", SIZE, images)
    return {"tmp": tmp, "data_dir": data_dir, "weights": weights}


@pytest.fixture(scope="module")
def run_dir(setup):
    argv = [
        "--data-dir", str(setup["data_dir"]), "--weights", str(setup["weights"]),
        "--image-size", str(SIZE), "--alpha", "0.35", "--runs-dir", str(setup["tmp"] / "runs"),
        "--run-name", "tiny",
        "--head-epochs", "6", "--head-learning-rate", "0.01", "--fine-tune-epochs", "2",
        "--fine-tune-layers", "40", "--batch-size", "16", "--verbose", "0",
        "--feature-cache-dir", str(setup["tmp"] / "features"),
    ]  # fmt: skip
    assert train.main(argv) == 0
    return setup["tmp"] / "runs" / "tiny"


@pytest.mark.slow
def test_training_improves_loss_and_writes_run_folder(run_dir):
    for name in ("config.json", "model.keras", "calibration.json", "history.csv"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "checkpoints").glob("*_best.keras"))
    assert list((run_dir / "logs").rglob("events.out.tfevents*"))  # TensorBoard

    history = pd.read_csv(run_dir / "history.csv")
    assert set(history["phase"]) == {"head", "fine_tune"}
    head = history[history["phase"] == "head"]
    assert head["loss"].min() < head["loss"].iloc[0] - 0.05

    config = json.loads((run_dir / "config.json").read_text())
    assert config["status"] == "finished" and config["image_size"] == SIZE
    assert config["weights"].startswith("file ")
    version = str(data.builder_class().VERSION)
    assert config["dataset"] == {**config["dataset"], "name": "brain_mri",
                                 "config": "multi_sequence", "version": version}  # fmt: skip
    # the default recipe draws its epochs: archive patients in, their share as asked
    sampling = config["sampling"]
    assert sampling["patients"] > 0 and sampling["archive_share"] == 0.3
    assert sampling["expected_archive_draws"] / sampling["epoch_size"] == pytest.approx(0.3, 0.02)
    assert config["layers_phase1"]["backbone_trainable"] == 0
    assert 0 < config["layers_phase2"]["backbone_trainable"] < config["layers_phase2"][
        "backbone_frozen"] + config["layers_phase2"]["backbone_trainable"]  # fmt: skip
    assert config["peak_memory_mb"] > 0 and config["timings"]["total_s"] > 0
    assert set(config["class_weights"]) == set(CLASS_NAMES)

    calibration = json.loads((run_dir / "calibration.json").read_text())
    assert 0.05 <= calibration["temperature"] <= 20
    assert calibration["nll_after"] <= calibration["nll_before"] + 1e-6
    run = load_run(run_dir)
    assert run.temperature == pytest.approx(calibration["temperature"])
    probs = load_run_model(run).predict(np.zeros((2, SIZE, SIZE, 3), "float32"), verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_evaluation_matches_sklearn_and_writes_every_plot(run_dir, setup):
    metrics = evaluate.evaluate(run_dir, "clean", "test", setup["data_dir"])
    out = run_dir / "eval" / "clean-test"
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]
    single_source = {k: v for k, v in evaluate.PLOT_FILES.items() if k != "by_source"}
    for name in single_source.values():
        path = out / name
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert "accuracy" in (out / "summary.md").read_text()
    assert "by_source" not in metrics and not (out / evaluate.PLOT_FILES["by_source"]).exists()

    # Independent recomputation from the saved model and the raw pipeline.
    run = load_run(run_dir)
    batches = list(data.load_pipeline("test", data_dir_=setup["data_dir"], image_size=SIZE)
                   .as_numpy_iterator())  # fmt: skip
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches]).argmax(1)
    probs = load_run_model(run).predict(x, verbose=0)
    pred = probs.argmax(1)
    assert metrics["num_examples"] == len(y)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert metrics["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert metrics["weighted_f1"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert metrics["confusion_matrix"] == confusion_matrix(y, pred).tolist()
    aucs = roc_auc_score(np.eye(4)[y], probs, average=None)
    for i, name in enumerate(CLASS_NAMES):
        assert metrics["roc_auc"][name] == pytest.approx(aucs[i], abs=1e-6)
        row = metrics["per_class"][name]
        assert row["support"] == int((y == i).sum())
        tp = int(((pred == i) & (y == i)).sum())
        assert row["recall"] == pytest.approx(tp / max(1, (y == i).sum()))
    assert metrics["ece_before"] == pytest.approx(expected_calibration_error(probs, y), abs=1e-6)
    scaled = apply_temperature_np(probs, run.temperature)
    assert metrics["ece_after"] == pytest.approx(expected_calibration_error(scaled, y), abs=1e-6)


@pytest.mark.slow
def test_evaluation_of_several_sources_reports_each_apart(run_dir, setup):
    metrics = evaluate.evaluate(run_dir, "multi_sequence", "test", setup["data_dir"])
    by = metrics["by_source"]
    assert {"sartaj", "tcga_lgg/flair", "tcga_lgg/t1_precontrast"} <= set(by)
    assert sum(m["n"] for m in by.values()) == metrics["num_examples"]
    out = run_dir / "eval" / "multi_sequence-test"
    assert (out / evaluate.PLOT_FILES["by_source"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| tcga_lgg/flair |" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_original_test_reports_overlap_with_training(run_dir, setup):
    metrics = evaluate.evaluate(run_dir, "original", "test", setup["data_dir"])
    test = evaluate.split_arrays("test", "original", setup["data_dir"])
    seen_files = set()
    for split in ("train", "validation"):
        seen_files |= set(evaluate.split_arrays(split, "clean", setup["data_dir"])["file_name"])
    # The fixture has no planted duplicates: every group is a single image, so "seen by the
    # model" is exactly "the same file is in clean train/validation".
    expected_seen = sum(f in seen_files for f in test["file_name"])
    assert metrics["num_duplicates_of_training"] == 0
    assert metrics["accuracy_non_duplicates"] == pytest.approx(metrics["accuracy"])
    assert metrics["num_seen_in_model_training"] == expected_seen
    assert metrics["num_unseen_by_model"] == len(test["label"]) - expected_seen
    assert "unseen" in (run_dir / "eval" / "original-test" / "summary.md").read_text()


# ------------------------------------------------------------------------------ bad inputs
@pytest.mark.slow
@pytest.mark.parametrize(
    "argv, message",
    [
        (["{missing}"], "does not exist"),
        (["{run}", "--split", "holdout"], "unknown split 'holdout'"),
        (["{run}", "--config", "dirty"], "unknown config 'dirty'"),
        (["{run}", "--config", "original", "--split", "validation"], "unknown split"),
    ],
)
def test_evaluate_bad_inputs_exit_1_with_one_line(argv, message, run_dir, setup, tmp_path, capsys):
    argv = [a.format(missing=tmp_path / "nope", run=run_dir) for a in argv]
    assert evaluate.main([*argv, "--data-dir", str(setup["data_dir"])]) == EXIT_FAILURE
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


@pytest.mark.slow
def test_a_run_can_start_from_another_runs_weights(run_dir, setup, tmp_path, capsys):
    """--init-from: the new run's model starts as the old one (no epochs: stays it)."""
    argv = [
        "--data-dir", str(setup["data_dir"]), "--weights", str(setup["weights"]),
        "--image-size", str(SIZE), "--alpha", "0.35", "--runs-dir", str(tmp_path),
        "--run-name", "warm",
        "--head-epochs", "0", "--fine-tune-epochs", "0", "--batch-size", "16", "--verbose", "0",
        "--init-from", str(run_dir), "--acquisition-augment", "0.5",
    ]  # fmt: skip
    assert train.main(argv) == 0
    config = json.loads((tmp_path / "warm" / "config.json").read_text())
    assert config["init_from"] == str(run_dir) and config["acquisition_augment"] == 0.5
    images = np.random.default_rng(0).uniform(-1, 1, (3, SIZE, SIZE, 3)).astype("float32")
    before = load_run_model(load_run(run_dir)).predict(images, verbose=0)
    after = load_run_model(load_run(tmp_path / "warm")).predict(images, verbose=0)
    np.testing.assert_allclose(after, before, atol=1e-6)
    other = [*argv[: argv.index("--image-size")], "--image-size", str(SIZE * 2),
             *argv[argv.index("--image-size") + 2 :]]  # fmt: skip
    other[other.index("warm")] = "warm-other-size"
    assert train.main(other) == EXIT_FAILURE
    assert f"takes {SIZE} px images" in capsys.readouterr().err


@pytest.mark.slow
def test_train_rejects_a_wrong_shaped_weights_file(setup, tmp_path, capsys):
    argv = ["--data-dir", str(setup["data_dir"]), "--weights", str(setup["weights"]),
            "--image-size", str(SIZE), "--alpha", "0.5", "--runs-dir", str(tmp_path)]  # fmt: skip
    assert train.main(argv) == EXIT_FAILURE
    assert "does not fit MobileNetV2" in capsys.readouterr().err


def test_train_on_unbuilt_dataset_is_a_clear_error(tmp_path, capsys):
    argv = ["--data-dir", str(tmp_path), "--weights", "none", "--runs-dir", str(tmp_path)]
    assert train.main(argv) == EXIT_FAILURE
    assert "not built" in capsys.readouterr().err


def test_hparams_and_config_file_precedence(tmp_path):
    hparams = tmp_path / "best.json"
    hparams.write_text(json.dumps({"dropout": 0.4, "head_units": 64, "learning_rate": 0.002,
                                   "label_smoothing": 0.05, "fine_tune_layers": 50}))  # fmt: skip
    config_file = tmp_path / "train.yaml"
    config_file.write_text("head-epochs: 7\ndropout: 0.1\nweights: none\n")
    config = train.config_from_args(
        ["--config", str(config_file), "--hparams", str(hparams), "--head-units", "8"]
    )
    assert config.head_epochs == 7  # from the config file
    assert config.dropout == 0.4  # hparams override the config file
    assert config.head_learning_rate == 0.002 and config.fine_tune_layers == 50
    assert config.head_units == 8  # explicit flags override everything
    assert config.weights is None
    assert train.config_from_args([]) == TrainConfig()


def test_bad_hparams_and_config_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"dropout": 0.2, "head_units": 0, "learning_rate": 1e-3,
                               "label_smoothing": 0.0, "momentum": 0.9}))  # fmt: skip
    with pytest.raises(ValueError, match="unknown keys: momentum"):
        load_hparams(bad)
    bad.write_text(json.dumps({"dropout": 0.2}))
    with pytest.raises(ValueError, match="lacks"):
        load_hparams(bad)
    with pytest.raises(FileNotFoundError):
        load_hparams(tmp_path / "missing.json")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"epochs": 3}))
    with pytest.raises(ValueError, match="unknown settings: epochs"):
        train.config_from_args(["--config", str(cfg)])
    with pytest.raises(ValueError, match="label_smoothing"):
        train.config_from_args(["--label-smoothing", "1.5"])
    with pytest.raises(ValueError, match="acquisition_augment"):
        train.config_from_args(["--acquisition-augment", "2"])


@pytest.mark.slow
def test_a_cosine_fine_tune_lowers_the_rate_every_epoch(setup, tmp_path):
    argv = [
        "--data-dir", str(setup["data_dir"]), "--weights", str(setup["weights"]),
        "--image-size", str(SIZE), "--alpha", "0.35", "--runs-dir", str(tmp_path),
        "--run-name", "cos", "--head-epochs", "1", "--fine-tune-epochs", "3",
        "--fine-tune-layers", "20", "--fine-tune-patience", "5", "--batch-size", "16",
        "--fine-tune-learning-rate", "0.001", "--fine-tune-schedule", "cosine",
        "--verbose", "0", "--feature-cache-dir", str(setup["tmp"] / "features"),
    ]  # fmt: skip
    assert train.main(argv) == 0
    history = pd.read_csv(tmp_path / "cos" / "history.csv")
    rates = history[history["phase"] == "fine_tune"]["learning_rate"].tolist()
    assert len(rates) == 3 and rates[0] < 0.001 and rates[0] > rates[1] > rates[2] > 0.00003
    config = json.loads((tmp_path / "cos" / "config.json").read_text())
    assert config["fine_tune_schedule"] == "cosine"
