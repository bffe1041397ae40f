"""Export: TF Serving layout, signature contract, metadata asset, and agreement with Keras;
the safety outputs (abstention, input gate) and the Grad-CAM ``explain`` signature."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tensorflow as tf

from serving.clients.inprocess import InProcessModel, InvalidImageError, ModelNotFoundError
from serving.common.versions import find_latest_version, list_versions, next_version
from serving.export.errors import ExportError
from serving.export.exporter import export_run, main
from serving.server.config import ConfigError, load_model_config_file, parse_batching_parameters
from tests.fixtures.serving import (
    ABSTAIN_PROBE_COUNT,
    ABSTAIN_PROBE_SEED,
    FIXTURE_GATE_LAYERS,
    FIXTURE_IMAGE_SIZE,
    FIXTURE_TEMPERATURE,
    REPO_ROOT,
    add_safety_outputs,
    blank_png,
    make_fixture_run,
    make_images,
    served_probabilities,
)
from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.contracts.runs import RunNotFoundError, load_run
from tumorlib.contracts.serving_contract import EXPLAIN_SIGNATURE, METADATA_ASSET
from tumorlib.images.preprocessing import preprocess_bytes_batch
from tumorlib.inputs.policy import NOT_AN_IMAGE
from tumorlib.model.calibration import apply_temperature_np
from tumorlib.model.loading import load_run_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    run = make_fixture_run(root / "runs" / "fx")
    base = root / "models" / "brain_mri"
    first = export_run(run, base)
    return run, base, first


@pytest.fixture(scope="module")
def safe_export(tmp_path_factory):
    """A run with abstention.json and input_gate.npz, exported once."""
    root = tmp_path_factory.mktemp("safe-export")
    run = make_fixture_run(root / "runs" / "safe", seed=1, temperature=0.8)
    add_safety_outputs(run)
    return run, export_run(run, root / "models" / "brain_mri")


def _outputs(signature) -> dict[str, tuple[tf.DType, list]]:
    return {k: (v.dtype, v.shape.as_list()) for k, v in signature.structured_outputs.items()}


def test_export_writes_integer_versions_and_never_overwrites(exported, tmp_path):
    run, base, first = exported
    assert first == base / "1"
    (base / "2").mkdir()  # an incomplete folder still reserves its number
    (base / "2" / "marker").write_text("keep")
    second = export_run(run, base, verify=False)
    assert second == base / "3"
    assert (base / "2" / "marker").read_text() == "keep"
    assert list_versions(base) == [1, 3]  # "2" has no saved_model.pb, so it is no version
    assert find_latest_version(base) == 3
    assert next_version(base) == 4
    assert not [p for p in base.iterdir() if p.name.startswith(".")]  # no staging left over
    meta = json.loads((second / "assets" / METADATA_ASSET).read_text())
    assert meta["model_version"] == 3


def test_metadata_asset_holds_what_clients_need(exported):
    _, _, first = exported
    meta = json.loads((first / "assets" / METADATA_ASSET).read_text())
    assert meta["class_names"] == list(CLASS_NAMES)
    assert meta["model_version"] == 1
    assert meta["temperature"] == pytest.approx(FIXTURE_TEMPERATURE)
    assert meta["image_size"] == 32
    assert meta["dataset"]["version"] == "1.0.0"
    assert meta["metrics"]["clean-test"]["accuracy"] == 0.5
    # the metadata signature returns the same asset content
    assert InProcessModel(first.parent, version=1).metadata() == meta


def test_serving_signature_contract(exported):
    _, _, first = exported
    signature = tf.saved_model.load(str(first)).signatures["serving_default"]
    (_, inputs) = signature.structured_input_signature
    assert list(inputs) == ["image_bytes"]
    assert inputs["image_bytes"].dtype == tf.string
    assert inputs["image_bytes"].shape.as_list() == [None]
    outputs = signature.structured_outputs
    assert outputs["probabilities"].dtype == tf.float32
    assert outputs["probabilities"].shape.as_list() == [None, 4]
    assert outputs["class_index"].dtype == tf.int64
    assert outputs["class_name"].dtype == tf.string


def test_safety_outputs_and_explain_signature_contract(safe_export):
    _, target = safe_export
    signatures = tf.saved_model.load(str(target)).signatures
    assert _outputs(signatures["serving_default"]) == {
        "probabilities": (tf.float32, [None, 4]),
        "class_index": (tf.int64, [None]),
        "class_name": (tf.string, [None]),
        "confidence": (tf.float32, [None]),
        "abstain": (tf.bool, [None]),
        "in_distribution": (tf.bool, [None]),
        "gate_score": (tf.float32, [None]),
    }
    size = FIXTURE_IMAGE_SIZE
    assert _outputs(signatures["explain"]) == {
        "probabilities": (tf.float32, [None, 4]),
        "class_index": (tf.int64, [None]),
        "heatmap": (tf.float32, [None, size, size]),
    }
    (_, inputs) = signatures["explain"].structured_input_signature
    assert list(inputs) == ["image_bytes"] and inputs["image_bytes"].dtype == tf.string


def test_metadata_carries_the_abstention_and_gate_thresholds(safe_export):
    from tumorlib.safety.gate import InputGate

    run, target = safe_export
    meta = json.loads((target / "assets" / METADATA_ASSET).read_text())
    chosen = json.loads((run / "abstention.json").read_text())["chosen_on_validation"]
    assert meta["abstention"]["threshold"] == chosen["threshold"]
    assert meta["abstention"]["target_precision"] == 0.99
    assert "Uncertain" in meta["abstention"]["message"]
    gate = InputGate.load(run / "input_gate.npz")
    assert [(g["layer"], g["threshold"]) for g in meta["input_gate"]["layers"]] == [
        (g.layer, g.threshold) for g in gate.layers
    ]
    assert meta["input_gate"]["score_threshold"] == 1.0
    assert meta["outputs"] == meta["signatures"]["serving_default"]
    assert "abstain" in meta["outputs"] and "gate_score" in meta["outputs"]
    assert meta["signatures"]["explain"] == ["probabilities", "class_index", "heatmap"]


def test_abstain_flag_is_confidence_below_the_threshold(safe_export):
    _, target = safe_export
    meta = json.loads((target / "assets" / METADATA_ASSET).read_text())
    threshold = np.float32(meta["abstention"]["threshold"])
    out = InProcessModel(target.parent).predict_raw(
        make_images(ABSTAIN_PROBE_COUNT, seed=ABSTAIN_PROBE_SEED)
    )
    np.testing.assert_allclose(out["confidence"], out["probabilities"].max(axis=1), atol=1e-7)
    np.testing.assert_array_equal(out["abstain"], out["confidence"] < threshold)
    assert 0 < out["abstain"].sum() < len(out["abstain"])  # both sides are exercised


def test_gate_flags_a_blank_image_and_matches_the_numpy_gate(safe_export):
    from tumorlib.contracts.runs import load_run
    from tumorlib.safety.gate import InputGate
    from tumorlib.safety.gate_features import feature_extractor, features_for_images

    run_path, target = safe_export
    images = make_images(6, seed=3) + [blank_png()]
    out = InProcessModel(target.parent).predict_raw(images)
    assert out["in_distribution"].tolist() == [True] * 6 + [False]
    assert out["gate_score"][-1] > 2.0 and (out["gate_score"][:-1] <= 1.0).all()

    run = load_run(run_path)
    extractor = feature_extractor(load_run_model(run), FIXTURE_GATE_LAYERS)
    feats = features_for_images(extractor, FIXTURE_GATE_LAYERS, images, run.image_size)
    expected = InputGate.load(run_path / "input_gate.npz").score(feats)
    np.testing.assert_allclose(out["gate_score"], expected, rtol=1e-3)


def test_explain_heatmap_is_a_unit_map_at_input_resolution(safe_export):
    from tumorlib.contracts.runs import load_run
    from tumorlib.model.gradcam import make_gradcam_fn

    run_path, target = safe_export
    images = tf.constant(make_images(4, seed=5) + make_images(1, seed=6, fmt="JPEG"))
    signatures = tf.saved_model.load(str(target)).signatures
    explained = signatures["explain"](image_bytes=images)
    served = signatures["serving_default"](image_bytes=images)
    heatmap = explained["heatmap"].numpy()
    assert heatmap.shape == (5, FIXTURE_IMAGE_SIZE, FIXTURE_IMAGE_SIZE)
    assert np.isfinite(heatmap).all() and heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    np.testing.assert_allclose(
        explained["probabilities"].numpy(), served["probabilities"].numpy(), atol=1e-5
    )
    np.testing.assert_array_equal(explained["class_index"], served["class_index"])
    run = load_run(run_path)
    direct = make_gradcam_fn(load_run_model(run), temperature=run.temperature)(
        preprocess_bytes_batch(images, run.image_size)
    )
    np.testing.assert_allclose(heatmap, direct["heatmap"].numpy(), atol=1e-4)


def test_export_without_safety_files_omits_their_outputs(exported):
    _, _, first = exported
    signatures = tf.saved_model.load(str(first)).signatures
    outputs = set(signatures["serving_default"].structured_outputs)
    assert outputs == {"probabilities", "class_index", "class_name", "confidence"}
    assert "explain" in signatures
    meta = json.loads((first / "assets" / METADATA_ASSET).read_text())
    assert meta["abstention"] is None and meta["input_gate"] is None
    assert set(meta["outputs"]) == outputs


def test_model_without_backbone_and_head_exports_without_explain(tmp_path, caplog):
    run = make_fixture_run(tmp_path / "runs" / "plain", plain=True)
    target = export_run(run, tmp_path / "models")
    assert "without the 'explain'" in caplog.text  # logged, no longer printed
    assert "explain" not in tf.saved_model.load(str(target)).signatures
    meta = json.loads((target / "assets" / METADATA_ASSET).read_text())
    assert set(meta["signatures"]) == {"serving_default", "metadata"}


def test_threshold_chosen_at_another_temperature_stops_the_export(tmp_path):
    run = make_fixture_run(tmp_path / "runs" / "stale")
    add_safety_outputs(run, gate=False)
    report = json.loads((run / "abstention.json").read_text())
    report["temperature"] = 3.0
    (run / "abstention.json").write_text(json.dumps(report))
    with pytest.raises(ExportError, match="temperature 3.0"):
        export_run(run, tmp_path / "models")
    assert not (tmp_path / "models" / "1").exists()


def test_exported_predictions_match_keras_in_process(exported):
    run_path, base, _ = exported
    run = load_run(run_path)
    keras_model = load_run_model(run)
    images = make_images(5, seed=3) + make_images(3, seed=4, fmt="JPEG")
    served = InProcessModel(base, version=1)
    outputs = served.predict_raw(images)

    raw = keras_model(preprocess_bytes_batch(tf.constant(images), run.image_size)).numpy()
    expected = apply_temperature_np(raw, run.temperature)
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
    assert np.abs(outputs["probabilities"] - raw).max() > 1e-4  # temperature really applied
    np.testing.assert_array_equal(outputs["class_index"], expected.argmax(axis=1))

    predictions = served.predict(images)
    assert [p.class_name for p in predictions] == [CLASS_NAMES[i] for i in expected.argmax(1)]
    for p, row in zip(predictions, expected):
        assert list(p.probabilities) == list(CLASS_NAMES)
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(list(p.probabilities.values()), row, atol=1e-5)


def test_in_process_model_errors(exported, tmp_path):
    _, base, _ = exported
    model = InProcessModel(base, version=1)
    assert model.predict([]) == []
    with pytest.raises(
        InvalidImageError, match=re.escape(NOT_AN_IMAGE)
    ):  # the input policy's words
        model.predict([b"definitely not an image"])
    with pytest.raises(ModelNotFoundError, match="no exported model"):
        InProcessModel(tmp_path / "nothing")
    with pytest.raises(ModelNotFoundError, match="version 99 not found"):
        InProcessModel(base, version=99)
    assert model.status()["model_version_status"][0]["state"] == "AVAILABLE"
    assert model.is_healthy()


def test_export_of_missing_run_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(RunNotFoundError, match="does not exist"):
        export_run(tmp_path / "no-such-run", tmp_path / "models")
    assert main([str(tmp_path / "no-such-run"), "--model-base-path", str(tmp_path / "m")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_tf_serving_config_files_parse(tmp_path):
    models = load_model_config_file(REPO_ROOT / "deploy" / "tf_serving" / "models.config")
    assert [m.name for m in models] == ["brain_mri"]
    assert models[0].policy == "latest" and models[0].policy_versions == (2,)
    assert models[0].select([1, 2, 5]) == [2, 5]
    options = parse_batching_parameters(
        (REPO_ROOT / "deploy" / "tf_serving" / "batching_parameters.txt").read_text()
    )
    assert options.max_batch_size == 32 and options.batch_timeout_micros == 2000
    with pytest.raises(ConfigError, match="malformed"):
        parse_batching_parameters("max_batch_size { value: 'x' }")
    bad = tmp_path / "bad.config"
    bad.write_text("model_config_list { config { name: 'a' } }")
    with pytest.raises(ConfigError, match="name and a base_path"):
        load_model_config_file(bad)


def test_deployment_files_agree_with_each_other():
    yaml = pytest.importorskip("yaml")

    deploy_dir = REPO_ROOT / "deploy"
    compose = yaml.safe_load((deploy_dir / "docker-compose.yml").read_text())
    service = compose["services"]["tfserving"]
    mounted = {v.split(":")[0].removeprefix("./"): v.split(":")[1] for v in service["volumes"]}
    for flag in ("--model_config_file", "--batching_parameters_file", "--monitoring_config_file"):
        value = next(a.split("=", 1)[1] for a in service["command"] if a.startswith(flag + "="))
        source = next(src for src, dst in mounted.items() if dst == value)
        assert (deploy_dir / source).exists(), source
    # the container's model path is the one models.config names
    assert mounted["../models/brain_mri"] == str(
        load_model_config_file(deploy_dir / "tf_serving" / "models.config")[0].base_path
    )
    docs = {
        d["kind"]: d
        for f in (deploy_dir / "k8s" / "serving").glob("*.yaml")
        for d in yaml.safe_load_all(f.read_text())
    }
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/models/brain_mri"
    assert (
        docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"]
        == docs["Deployment"]["metadata"]["name"]
    )
    assert (
        docs["Service"]["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    )
    assert (
        docs["InferenceService"]["spec"]["predictor"]["model"]["modelFormat"]["name"]
        == "tensorflow"
    )


@pytest.mark.slow
def test_export_of_the_project_model_matches_keras(tmp_path):
    """The real architecture (MobileNetV2 backbone, BatchNorm, Dropout head) survives export."""
    model_module = pytest.importorskip("tumorlib.model.classifier")
    from tumorlib.contracts.runs import CALIBRATION_FILE, CONFIG_FILE, MODEL_FILE, write_json

    run = tmp_path / "run"
    run.mkdir()
    model = model_module.build_model(image_size=32, weights=None)
    model.save(run / MODEL_FILE)
    write_json(run / CONFIG_FILE, {"image_size": 32, "alpha": 0.35, "weights": "none"})
    write_json(run / CALIBRATION_FILE, {"temperature": 2.0})
    target = export_run(run, tmp_path / "models", verify=False)

    images = make_images(4, seed=9)
    got = InProcessModel(target.parent).predict_raw(images)["probabilities"]
    raw = model(preprocess_bytes_batch(tf.constant(images), 32), training=False).numpy()
    np.testing.assert_allclose(got, apply_temperature_np(raw, 2.0), atol=1e-5)
    explained = tf.saved_model.load(str(target)).signatures["explain"](
        image_bytes=tf.constant(images)
    )
    np.testing.assert_allclose(explained["probabilities"], got, atol=1e-5)
    assert explained["heatmap"].shape == (4, 32, 32)


def test_an_ensemble_run_exports_with_gate_abstention_and_explain(tmp_path):
    """tumorlib.training.ensemble_run's model (resize + flip layers, two members) through the real
    export."""
    import json

    import keras

    from tumorlib.contracts.runs import ENSEMBLE_FILE
    from tumorlib.model.ensemble import build_ensemble

    members = []
    for seed, size in ((1, 32), (2, 40)):
        keras.utils.set_random_seed(seed)
        members.append(load_run(make_fixture_run(tmp_path / f"m{size}", image_size=size)))
    run = make_fixture_run(tmp_path / "runs" / "ens", image_size=40)  # config, calibration, eval
    model = build_ensemble([load_run_model(m) for m in members], tta=True)
    model.save(run / "model.keras")
    (run / ENSEMBLE_FILE).write_text(json.dumps({"members": [], "tta": "horizontal flip"}))
    add_safety_outputs(run)

    saved = export_run(run, tmp_path / "models")
    served = InProcessModel(tmp_path / "models")
    images = make_images(4, seed=9)
    np.testing.assert_allclose(
        served.predict_raw(images)["probabilities"], served_probabilities(run, images), atol=1e-5
    )
    explained = served.explain(images[:2])
    assert all(e.heatmap.shape == (40, 40) for e in explained)
    assert EXPLAIN_SIGNATURE in tf.saved_model.load(str(saved)).signatures
