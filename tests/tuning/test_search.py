"""Tests of the head hyperparameter search (``tuning``): real KerasTuner on tiny inputs.

Most tests search on small generated features (a few hundred numbers per class, separable but
noisy) so a trial takes well under a second; the end-to-end tests run ``python -m tuning.search``
on the builder's dummy dataset with an untrained (``weights=None``) 32-pixel backbone, and the
distributed one starts a chief and two workers as local processes on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.paths import REPO_ROOT
from tumorlib.data.pipeline import builder_class
from tumorlib.training.train_config import HPARAM_KEYS, load_hparams
from tuning import results, search
from tuning.cli_args import DEFAULT_MAX_TRIALS, parse_args
from tuning.hypermodel import (
    DROPOUT_RANGE,
    HEAD_UNITS_CHOICES,
    LABEL_SMOOTHING_RANGE,
    LEARNING_RATE_RANGE,
    HeadHyperModel,
)

REPO = REPO_ROOT
DUMMY_DATA = REPO / "datasets" / "brain_mri" / "dummy_data"
NUM_CLASSES = 4


def generated_features(seed: int = 0, dim: int = 16, per_class: int = 12) -> search.FeatureData:
    """Class-dependent Gaussian blobs: learnable, so accuracy differs between trials."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.5, size=(NUM_CLASSES, dim))

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(NUM_CLASSES), n)
        x = centres[labels] + rng.normal(0.0, 1.0, size=(labels.size, dim))
        return x.astype("float32"), np.eye(NUM_CLASSES, dtype="float32")[labels]

    x_train, y_train = split(per_class)
    x_val, y_val = split(per_class // 2)
    return search.FeatureData(x_train, y_train, x_val, y_val, dataset_version="test")


def tiny_args(directory: Path, *extra: str) -> list[str]:
    return [
        "--directory",
        str(directory),
        "--project-name",
        "tiny",
        "--max-epochs",
        "2",
        "--batch-size",
        "16",
        "--verbose",
        "0",
        *extra,
    ]


def trial_files(project: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in sorted(project.glob("trial_*/trial.json"))}


def completed_scores(project: Path) -> dict[str, float]:
    """Scores read straight from KerasTuner's trial files (independent of tuning.search)."""
    out = {}
    for text in trial_files(project).values():
        trial = json.loads(text)
        if trial["status"] == "COMPLETED":
            out[trial["trial_id"]] = trial["score"]
    return out


# ------------------------------------------------------------------------------ search space
def test_hypermodel_builds_the_project_head_with_the_hyperparameters():
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.Fixed("head_units", 64)
    hp.Fixed("dropout", 0.3)
    hp.Fixed("learning_rate", 2e-3)
    hp.Fixed("label_smoothing", 0.1)
    model = HeadHyperModel(16).build(hp)
    dense = [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert [d.units for d in dense] == [64, NUM_CLASSES]
    dropout = [layer for layer in model.layers if layer.__class__.__name__ == "Dropout"]
    assert dropout and dropout[0].rate == pytest.approx(0.3)
    assert float(model.optimizer.learning_rate) == pytest.approx(2e-3)
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.1)
    probs = model.predict(np.zeros((3, 16), "float32"), verbose=0)
    assert probs.shape == (3, NUM_CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_head_without_hidden_layer():
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.Fixed("head_units", 0)
    model = HeadHyperModel(8).build(hp)
    dense = [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert [d.units for d in dense] == [NUM_CLASSES]


# ----------------------------------------------------------------------------------- search
@pytest.mark.parametrize("tuner", ["random", "bayesian", "hyperband"])
def test_tiny_search_writes_oracle_and_best_hparams(tmp_path, capsys, tuner):
    args = parse_args(tiny_args(tmp_path, "--tuner", tuner, "--max-trials", "2"))
    summary = search.run_search(args, generated_features())
    project = tmp_path / "tiny"

    assert (project / "oracle.json").is_file()
    scores = completed_scores(project)
    assert len(scores) == 2  # the cap holds for hyperband too
    best_id = max(scores, key=scores.get)
    assert summary["best_trial"] == best_id
    assert summary["best_score"] == pytest.approx(scores[best_id])
    assert summary["trials_completed"] == 2

    hparams = json.loads((project / results.BEST_HPARAMS_FILE).read_text())
    assert set(hparams) == set(HPARAM_KEYS)
    best_trial = json.loads(trial_files(project)[f"trial_{best_id}"])
    values = best_trial["hyperparameters"]["values"]
    for key in HPARAM_KEYS:
        assert hparams[key] == pytest.approx(values[key])
    assert hparams["head_units"] in HEAD_UNITS_CHOICES
    assert DROPOUT_RANGE[0] <= hparams["dropout"] <= DROPOUT_RANGE[1]
    assert LEARNING_RATE_RANGE[0] <= hparams["learning_rate"] <= LEARNING_RATE_RANGE[1]
    assert LABEL_SMOOTHING_RANGE[0] <= hparams["label_smoothing"] <= LABEL_SMOOTHING_RANGE[1]

    stored = json.loads((project / results.SUMMARY_FILE).read_text())
    assert stored["objective"] == "val_accuracy"
    assert stored["scored_on"].endswith("validation split")
    assert (project / results.PLOT_FILE).stat().st_size > 1000
    out = capsys.readouterr().out
    assert "Best trials" in out and "rank" in out and best_id in out


def test_val_loss_objective_picks_the_lowest_loss(tmp_path):
    args = parse_args(
        tiny_args(tmp_path, "--tuner", "random", "--max-trials", "2", "--objective", "val_loss")
    )
    summary = search.run_search(args, generated_features())
    scores = completed_scores(tmp_path / "tiny")
    assert summary["best_score"] == pytest.approx(min(scores.values()))


def test_resume_does_not_redo_finished_trials(tmp_path, monkeypatch):
    fits = []
    original_fit = HeadHyperModel.fit

    def counting_fit(self, hp, model, *args, **kwargs):
        fits.append(dict(hp.values))
        return original_fit(self, hp, model, *args, **kwargs)

    monkeypatch.setattr(HeadHyperModel, "fit", counting_fit)
    data = generated_features()
    base = tiny_args(tmp_path, "--tuner", "random", "--seed", "3")
    project = tmp_path / "tiny"

    search.run_search(parse_args([*base, "--max-trials", "2"]), data)
    assert len(fits) == 2
    first = trial_files(project)

    # Same command again: nothing left to do, nothing rerun.
    search.run_search(parse_args([*base, "--max-trials", "2"]), data)
    assert len(fits) == 2

    # More trials asked for: only the new one runs; the finished ones are untouched.
    search.run_search(parse_args([*base, "--max-trials", "3"]), data)
    assert len(fits) == 3
    after = trial_files(project)
    assert len(after) == 3
    for name, text in first.items():
        assert after[name] == text

    # --overwrite starts afresh.
    search.run_search(parse_args([*base, "--max-trials", "1", "--overwrite"]), data)
    assert len(fits) == 4
    assert len(trial_files(project)) == 1


def test_resume_with_other_settings_is_refused(tmp_path):
    data = generated_features()
    search.run_search(
        parse_args(tiny_args(tmp_path, "--tuner", "random", "--max-trials", "1")), data
    )
    other = parse_args(tiny_args(tmp_path, "--tuner", "bayesian", "--max-trials", "1"))
    with pytest.raises(search.SearchSettingsMismatchError, match="tuner: was 'random'"):
        search.run_search(other, data)
    wider = generated_features(dim=24)
    same = parse_args(tiny_args(tmp_path, "--tuner", "random", "--max-trials", "2"))
    with pytest.raises(search.SearchSettingsMismatchError, match="--overwrite"):
        search.run_search(same, wider)


# ------------------------------------------------------------------------------------ flags
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tuner", "grid"], "invalid choice: 'grid'"),
        (["--max-trials", "0"], "expected a number >= 1"),
        (["--max-trials", "many"], "expected a whole number"),
        (["--max-epochs", "-2"], "expected a number >= 1"),
        (["--max-epochs", "1"], "--max-epochs must be >= 2 for hyperband"),
        (["--factor", "1"], "--factor must be >= 2"),
        (["--image-size", "16"], "at least 32 px"),
        (["--alpha", "0.4"], "alpha must be one of"),
        (["--weights", "/no/such/weights.h5"], "no file at"),
        (["--objective", "test_accuracy"], "invalid choice: 'test_accuracy'"),
        (["--project-name", "a/b"], "plain folder name"),
        (["--data-dir", "/no/such/dir"], "is not a folder"),
        (["--seed", "-1"], "expected a number >= 0"),
        (["--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_invalid_flags_give_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage: python -m tuning.search" in err
    assert message in err


def test_defaults():
    args = parse_args([])
    assert args.tuner == "hyperband" and args.max_trials is None
    assert args.objective == "val_accuracy"
    assert args.directory == Path("runs/tuning")
    assert args.weights == "imagenet" and args.image_size == 224 and args.alpha == 0.35
    assert parse_args(["--tuner", "random"]).max_trials == DEFAULT_MAX_TRIALS
    assert parse_args(["--weights", "none"]).weights is None


# --------------------------------------------------------------------------- into training
def test_best_hparams_round_trip_into_training(tmp_path):
    from tumorlib.model import classifier as tmodel

    args = parse_args(tiny_args(tmp_path, "--tuner", "random", "--max-trials", "2"))
    search.run_search(args, generated_features())
    path = tmp_path / "tiny" / results.BEST_HPARAMS_FILE
    hparams = json.loads(path.read_text())

    train = pytest.importorskip(
        "tumorlib.training.train", reason="tumorlib.training.train not available"
    )
    loaded = load_hparams(path)
    for key in HPARAM_KEYS:
        assert loaded[key] == pytest.approx(hparams[key])
    # The command line of training takes the file as it is.
    config = train.config_from_args(["--hparams", str(path)])
    assert config.dropout == pytest.approx(hparams["dropout"])
    assert config.head_units == hparams["head_units"]
    assert config.label_smoothing == pytest.approx(hparams["label_smoothing"])
    assert config.head_learning_rate == pytest.approx(hparams["learning_rate"])

    built = tmodel.build_model(
        image_size=32,
        weights=None,
        dropout=loaded["dropout"],
        head_units=loaded["head_units"],
    )
    head = built.get_layer("head")
    units = [layer.units for layer in head.layers if hasattr(layer, "units")]
    expected = [hparams["head_units"], NUM_CLASSES] if hparams["head_units"] else [NUM_CLASSES]
    assert units == expected


# ----------------------------------------------------------------------- on a real dataset
@pytest.fixture(scope="module")
def fixture_dataset(tmp_path_factory) -> Path:
    """The builder's dummy SARTAJ images built as ``brain_mri/clean`` (train 8, validation 4)."""
    from tumorlib.data import pipeline as data

    data_dir = tmp_path_factory.mktemp("tfds")
    data.build("clean", DUMMY_DATA, data_dir)
    return data_dir


def cli_args(data_dir: Path, cache_dir: Path, directory: Path) -> list[str]:
    return [
        "--data-dir",
        str(data_dir),
        "--cache-dir",
        str(cache_dir),
        "--image-size",
        "32",
        "--weights",
        "none",
        "--directory",
        str(directory),
        "--project-name",
        "cli",
        "--max-epochs",
        "2",
        "--verbose",
        "0",
    ]


def test_cli_on_fixture_dataset(fixture_dataset, tmp_path, capsys):
    output = tmp_path / "best.json"
    argv = cli_args(fixture_dataset, tmp_path / "cache", tmp_path / "tuning")
    code = search.main([*argv, "--tuner", "random", "--max-trials", "2", "--output", str(output)])
    assert code == 0
    hparams = json.loads(output.read_text())
    assert set(hparams) == set(HPARAM_KEYS)
    summary = json.loads((tmp_path / "tuning" / "cli" / results.SUMMARY_FILE).read_text())
    assert summary["settings"]["feature_dim"] == 1280
    assert summary["settings"]["weights"] == "none"
    assert summary["settings"]["dataset_version"] == str(builder_class().VERSION)
    assert summary["trials_completed"] == 2
    assert "Best trials" in capsys.readouterr().out


def test_cli_on_unbuilt_dataset_is_a_clear_error(tmp_path, capsys):
    argv = cli_args(tmp_path, tmp_path / "cache", tmp_path / "tuning")
    assert search.main([*argv, "--tuner", "random", "--max-trials", "1"]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "not built" in err


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_distributed_chief_and_two_workers(fixture_dataset, tmp_path):
    """KerasTuner's chief/worker mode through its KERASTUNER_* variables, all on 127.0.0.1."""
    from tumorlib.training.features import cached_features

    cache = tmp_path / "cache"
    for split in ("train", "validation"):  # fill the cache once, so workers only read it
        cached_features(
            split, "clean", image_size=32, alpha=0.35, weights=None,
            data_dir_=fixture_dataset, cache_dir=cache,
        )  # fmt: skip
    argv = cli_args(fixture_dataset, cache, tmp_path / "tuning")
    argv += ["--tuner", "random", "--max-trials", "4"]
    port = str(free_port())
    processes = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = dict(
            os.environ,
            KERASTUNER_TUNER_ID=tuner_id,
            KERASTUNER_ORACLE_IP="127.0.0.1",
            KERASTUNER_ORACLE_PORT=port,
            TF_CPP_MIN_LOG_LEVEL="3",
        )
        processes[tuner_id] = subprocess.Popen(
            [sys.executable, "-m", "tuning.search", *argv],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    outputs = {}
    try:
        for tuner_id, process in processes.items():
            outputs[tuner_id], _ = process.communicate(timeout=150)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    for tuner_id, process in processes.items():
        assert process.returncode == 0, f"{tuner_id} failed:\n{outputs[tuner_id][-3000:]}"

    project = tmp_path / "tuning" / "cli"
    assert len(completed_scores(project)) == 4
    # Each worker saved its own state after finishing at least one trial.
    assert (project / "tuner0.json").is_file() and (project / "tuner1.json").is_file()
    for worker in ("tuner0", "tuner1"):
        assert "the chief writes the results" in outputs[worker]
    assert "Best trials" in outputs["chief"]
    hparams = json.loads((project / results.BEST_HPARAMS_FILE).read_text())
    assert set(hparams) == set(HPARAM_KEYS)
