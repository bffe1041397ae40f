"""The ensemble model: its arithmetic, its round trip through a file, and what the other parts
(Grad-CAM, the input gate, the export check, the run folder) see of it."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.fixtures.training import build_learnable_dataset, calibrated_backbone_file
from tumorlib.contracts.cli import EXIT_FAILURE
from tumorlib.contracts.runs import CONFIG_FILE, MODEL_FILE, load_run, write_json
from tumorlib.evaluation import evaluate
from tumorlib.evaluation.predictions import predict_split
from tumorlib.model import ensemble as ensemble_model
from tumorlib.model.classifier import build_model
from tumorlib.model.gradcam import gradcam, has_gradcam_parts
from tumorlib.model.loading import load_run_model
from tumorlib.safety.gate_features import feature_extractor
from tumorlib.training import ensemble_run as ensemble

SMALL, LARGE = 32, 48


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, size=(3, LARGE, LARGE, 3)).astype("float32")


@pytest.fixture(scope="module")
def members(images, tmp_path_factory):
    """Two small classifiers with informative (BatchNorm-calibrated) random backbones."""
    tmp = tmp_path_factory.mktemp("ensemble")
    built = []
    for seed, size in ((1, SMALL), (2, LARGE)):
        view = np.asarray(tf.image.resize(images, [size, size], antialias=True))
        weights = calibrated_backbone_file(tmp / f"b{size}.weights.h5", size, view)
        keras.utils.set_random_seed(seed)
        built.append(build_model(image_size=size, weights=str(weights), head_units=8))
    return tuple(built)


def _by_hand(members, images, tta: bool) -> np.ndarray:
    """The ensemble's output computed independently: resize, predict, mirror, average."""
    outputs = []
    for member in members:
        size = member.input_shape[1]
        x = images if size == LARGE else tf.image.resize(images, [size, size], antialias=True)
        x = np.asarray(x)
        outputs.append(member.predict(x, verbose=0))
        if tta:
            outputs.append(member.predict(x[:, :, ::-1, :], verbose=0))
    return np.mean(outputs, axis=0)


@pytest.mark.parametrize("tta", [False, True])
def test_ensemble_averages_members_and_their_mirrored_views(members, images, tta):
    model = ensemble_model.build_ensemble(list(members), tta=tta)
    assert model.input_shape == (None, LARGE, LARGE, 3)
    probabilities = model.predict(images, verbose=0)
    assert probabilities.shape == (3, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probabilities, _by_hand(members, images, tta), atol=1e-5)


def test_tta_changes_the_output_of_an_asymmetric_model(members, images):
    plain = ensemble_model.build_ensemble(list(members), tta=False).predict(images, verbose=0)
    mirrored = ensemble_model.build_ensemble(list(members), tta=True).predict(images, verbose=0)
    assert not np.allclose(plain, mirrored, atol=1e-6)


def test_round_trip_through_a_keras_file(members, images, tmp_path):
    model = ensemble_model.build_ensemble(list(members), tta=True)
    model.save(tmp_path / "ensemble.keras")
    loaded = keras.models.load_model(tmp_path / "ensemble.keras", compile=False)
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )
    assert ensemble_model.is_ensemble(loaded)
    assert [m.input_shape[1] for m in ensemble_model.members(loaded)] == [SMALL, LARGE]


def test_members_of_a_single_model_is_the_model(members):
    single = members[0]
    assert not ensemble_model.is_ensemble(single)
    assert ensemble_model.members(single) == [single]
    with pytest.raises(ValueError, match="at least one member"):
        ensemble_model.build_ensemble([])


def test_gradcam_of_an_ensemble_explains_the_ensembles_class(members, images):
    model = ensemble_model.build_ensemble(list(members), tta=True)
    assert has_gradcam_parts(model)
    probabilities, heatmap = gradcam(model, tf.constant(images))
    # Same execution mode (eager) on both sides: graph and eager kernels differ by ~1e-3 here.
    expected = model(tf.constant(images), training=False)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert heatmap.shape == (3, LARGE, LARGE)
    assert float(tf.reduce_min(heatmap)) >= 0.0 and float(tf.reduce_max(heatmap)) <= 1.0
    # Asking for another class gives another map.
    other = (np.argmax(probabilities, axis=1) + 1) % 4
    _, other_map = gradcam(model, tf.constant(images), tf.constant(other, tf.int32))
    assert not np.allclose(heatmap, other_map)


def test_gradcam_of_an_ensemble_runs_each_member_once_per_view(members, images, monkeypatch):
    """The differentiated (unflipped) pass of each member is also its share of the ensemble's
    probabilities: the whole member model runs only for the mirrored view."""
    model = ensemble_model.build_ensemble(list(members), tta=True)
    calls = {}
    for member in ensemble_model.members(model):
        original = member.call

        def counted(*args, _name=member.name, _call=original, **kwargs):
            calls[_name] = calls.get(_name, 0) + 1
            return _call(*args, **kwargs)

        monkeypatch.setattr(member, "call", counted)
    gradcam(model, tf.constant(images))
    assert calls == {"member_0": 1, "member_1": 1}


def test_gate_features_come_from_the_first_member_and_probabilities_from_all(members, images):
    model = ensemble_model.build_ensemble(list(members), tta=True)
    extractor = feature_extractor(model, ("block_6_expand_relu",))
    pooled, probabilities = extractor.predict(images, verbose=0)
    np.testing.assert_allclose(probabilities, model.predict(images, verbose=0), atol=1e-5)
    # The first member's unflipped view reuses the gate's backbone pass instead of a second one:
    # its whole model appears only for the mirrored view, the second member's for both.
    layers = extractor.get_config()["layers"]
    calls = {layer["name"]: len(layer["inbound_nodes"]) for layer in layers}
    assert (calls["member_0"], calls["member_1"], calls["gate_taps"]) == (1, 2, 1)
    small_view = tf.image.resize(images, [SMALL, SMALL], antialias=True)
    tap = members[0].get_layer("backbone").get_layer("block_6_expand_relu")
    inner = keras.Model(members[0].get_layer("backbone").inputs, tap.output)
    expected = np.asarray(inner(small_view, training=False)).mean(axis=(1, 2))
    np.testing.assert_allclose(pooled, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_ensemble_run_folder_is_calibrated_and_evaluates(tmp_path, capsys):
    data_dir = build_learnable_dataset(tmp_path)
    runs = []
    for i, size in enumerate((SMALL, LARGE)):
        keras.utils.set_random_seed(10 + i)
        run = tmp_path / "runs" / f"m{i}"
        run.mkdir(parents=True)
        build_model(image_size=size, weights=None).save(run / MODEL_FILE)
        write_json(
            run / CONFIG_FILE,
            {"image_size": size, "alpha": 0.35, "weights": "none", "seed": i,
             "dataset": {"name": "brain_mri", "config": "clean"},
             "timings": {"total_s": 10.0 * (i + 1)}, "peak_memory_mb": 100.0 * (i + 1)},
        )  # fmt: skip
        runs.append(run)

    def argv(name: str) -> list[str]:
        return [str(r) for r in runs] + [
            "--run-name", name, "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(data_dir),
        ]  # fmt: skip

    assert ensemble.main(argv("ens")) == 0
    run = load_run(tmp_path / "runs" / "ens")
    assert run.image_size == LARGE
    assert run.config["ensemble"]["tta"] == "horizontal flip"
    assert [m["image_size"] for m in run.config["ensemble"]["members"]] == [SMALL, LARGE]
    assert run.config["timings"]["members_total_s"] == 30.0
    assert run.config["peak_memory_mb"] == 200.0
    calibration = json.loads((run.path / "calibration.json").read_text())
    assert calibration["temperature"] > 0 and calibration["fitted_on"] == "clean/validation"

    assert evaluate.main([str(run.path), "--data-dir", str(data_dir)]) == 0
    metrics = json.loads((run.eval_dir("clean", "test") / "metrics.json").read_text())
    probabilities, _ = predict_split(
        load_run_model(run), "test", "clean", data_dir, image_size=run.image_size
    )
    labels = evaluate.split_arrays("test", "clean", data_dir)["label"]
    assert metrics["accuracy"] == pytest.approx(np.mean(probabilities.argmax(1) == labels))

    # The same name again, or members from different datasets: clear errors.
    capsys.readouterr()
    assert ensemble.main(argv("ens")) == EXIT_FAILURE
    assert "already holds a model" in capsys.readouterr().err
    config = json.loads((runs[1] / CONFIG_FILE).read_text())
    config["dataset"]["config"] = "original"
    write_json(runs[1] / CONFIG_FILE, config)
    assert ensemble.main(argv("ens2")) == EXIT_FAILURE
    assert "different datasets" in capsys.readouterr().err
    assert ensemble.main([str(tmp_path / "nowhere"), "--run-name", "ens3"]) == EXIT_FAILURE
    assert "does not exist" in capsys.readouterr().err


def test_the_ensemble_resizes_with_its_own_layer(members):
    """keras.layers.Resizing carries seed-generator state that tf.saved_model.save could not
    reach from an ensemble; the ensemble uses tumorlib's deterministic Resize instead."""
    model = ensemble_model.build_ensemble(list(members))
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "Resize" in kinds and "Resizing" not in kinds
