"""Export a trained run as a TensorFlow Serving SavedModel: ``python -m serving.export RUN``.

The exported graph takes *encoded* image bytes and runs the same
:func:`tumorlib.preprocessing.preprocess_bytes_batch` the training pipeline uses, then the Keras
model, then :func:`tumorlib.calibration.apply_temperature`. A client therefore never
re-implements decoding, resizing or normalisation, and cannot get them subtly wrong.

Signatures (TF Serving serves every one; ``serving_default`` is used when none is named):

- ``serving_default``: ``image_bytes`` ``tf.string [None]`` -> ``probabilities`` ``float32
  [None, 4]`` (temperature-scaled), ``class_index`` ``int64 [None]``, ``class_name`` ``string
  [None]``, ``confidence`` ``float32 [None]`` (the top probability), and the clinical-safety
  outputs the run has measured:

  - ``abstain`` ``bool [None]``: ``confidence < threshold``, the threshold chosen on validation
    by ``python -m tumorlib.abstention RUN`` (``RUN/abstention.json``) — "uncertain, refer to a
    radiologist";
  - ``in_distribution`` ``bool [None]`` and ``gate_score`` ``float32 [None]`` (accepted when
    <= 1): the input gate fitted by ``python -m tumorlib.input_gate RUN``
    (``RUN/input_gate.npz``) — is this a brain MRI slice at all?

  A run without those files exports without those outputs, rather than with a default: a
  constant ``in_distribution = true`` would claim a check that was never made. Clients treat a
  missing output as "not checked" (``None`` in :class:`serving.prediction.Prediction`).
- ``explain``: ``image_bytes`` -> ``probabilities``, ``class_index`` and ``heatmap`` ``float32
  [None, S, S]`` in [0, 1]: Grad-CAM (:mod:`tumorlib.gradcam`) at model input resolution,
  aligned with the resized, black-padded image (:func:`tumorlib.preprocessing.resize`). Needs
  the project's architecture (``"backbone"`` and ``"head"`` sub-models, as every run of
  :mod:`tumorlib.train` has); a model without them is exported without ``explain``.
- ``metadata``: ``request`` ``tf.string [None]`` -> ``metadata_json`` ``string [None]``: the
  content of ``assets/metadata.json`` (class names, model and dataset versions, evaluation
  metrics, temperature, image size, the abstention threshold and the gate's thresholds) once
  per input row. TF Serving's REST API has no call that returns a model's assets, so this
  signature is how a REST client reads them:
  ``POST /v1/models/brain_mri:predict`` with
  ``{"signature_name": "metadata", "instances": ["metadata"]}``.

Versions are integers under ``--model-base-path`` (TF Serving's layout), always one more than
the highest existing folder; the export is written to a hidden folder and renamed into place, so
an existing version is never overwritten and a half-written one is never served.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.versions import next_version

DEFAULT_MODEL_BASE_PATH = Path("models/brain_mri")
DEFAULT_MODEL_NAME = "brain_mri"
SERVING_SIGNATURE = "serving_default"
METADATA_SIGNATURE = "metadata"
EXPLAIN_SIGNATURE = "explain"  # Grad-CAM (tumorlib.gradcam); clients import the names from here
INPUT_KEY = "image_bytes"
OUTPUT_KEYS = ("probabilities", "class_index", "class_name")  # always present
CONFIDENCE_KEY = "confidence"  # always present in exports from this version on
ABSTENTION_OUTPUT_KEYS = ("abstain",)  # when RUN/abstention.json exists
GATE_OUTPUT_KEYS = ("in_distribution", "gate_score")  # when RUN/input_gate.npz exists
EXPLAIN_OUTPUT_KEYS = ("probabilities", "class_index", "heatmap")
METADATA_INPUT_KEY = "request"
METADATA_OUTPUT_KEY = "metadata_json"
METADATA_ASSET = "metadata.json"
EXPORT_TOLERANCE = 1e-5


class ExportError(RuntimeError):
    """The export could not be written or does not reproduce the Keras model."""


@dataclass(frozen=True)
class Safety:
    """The clinical-safety pieces a run has measured; ``None`` where a step was not run."""

    abstention: dict[str, Any] | None  # metadata block; "threshold" is what the graph uses
    gate: Any | None  # tumorlib.input_gate.InputGate
    gate_report: dict[str, Any] | None  # RUN/input_gate.json, if written

    @property
    def threshold(self) -> float | None:
        return None if self.abstention is None else float(self.abstention["threshold"])

    def serving_outputs(self) -> list[str]:
        """``serving_default``'s output names for this run, in a stable order."""
        keys = [*OUTPUT_KEYS, CONFIDENCE_KEY]
        if self.abstention is not None:
            keys += ABSTENTION_OUTPUT_KEYS
        if self.gate is not None:
            keys += GATE_OUTPUT_KEYS
        return keys


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ExportError(f"{path} is not valid JSON: {err}") from None


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN: an unmeasurable number (e.g. precision when nothing is accepted) is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def load_abstention(run) -> dict[str, Any] | None:
    """The validation-chosen threshold from ``RUN/abstention.json`` as a metadata block.

    The threshold applies to temperature-scaled confidences; one chosen under another
    temperature would be on a different scale, so that mismatch stops the export.
    """
    from tumorlib.abstention import ABSTENTION_FILE, UNCERTAIN_MESSAGE

    path = run.path / ABSTENTION_FILE
    if not path.is_file():
        return None
    report = _read_json(path)
    try:
        chosen = report["chosen_on_validation"]
        threshold = float(chosen["threshold"])
    except (KeyError, TypeError, ValueError):
        raise ExportError(f"{path} has no chosen_on_validation.threshold") from None
    temperature = report.get("temperature")
    if temperature is not None and not math.isclose(
        float(temperature), run.temperature, rel_tol=1e-6
    ):
        raise ExportError(
            f"{path} was computed at temperature {temperature}, but the run's calibration is "
            f"{run.temperature}; re-run `python -m tumorlib.abstention {run.path}`"
        )
    test = report.get("test") or {}
    return {
        "threshold": threshold,
        "target_precision": _finite_or_none(chosen.get("target_precision")),
        "reachable": chosen.get("reachable"),
        "validation_coverage": _finite_or_none(chosen.get("coverage")),
        "validation_precision": _finite_or_none(chosen.get("precision")),
        "test_coverage": _finite_or_none(test.get("coverage")),
        "test_accepted_accuracy": _finite_or_none(test.get("accepted_accuracy")),
        "rule": "abstain = confidence < threshold (confidence: top temperature-scaled probability)",
        "message": report.get("message", UNCERTAIN_MESSAGE),
    }


def load_safety(run) -> Safety:
    """Whatever of ``abstention.json``, ``input_gate.npz`` / ``.json`` the run folder holds."""
    from tumorlib.input_gate import GATE_FILE, GATE_SUMMARY, GateError, InputGate

    gate = None
    if (run.path / GATE_FILE).is_file():
        try:
            gate = InputGate.load(run.path / GATE_FILE)
        except (GateError, KeyError, ValueError, OSError) as err:
            raise ExportError(f"{run.path / GATE_FILE} could not be read: {err}") from None
    summary = run.path / GATE_SUMMARY
    gate_report = _read_json(summary) if gate is not None and summary.is_file() else None
    safety = Safety(load_abstention(run), gate, gate_report)
    _warn_if_stale(run, safety)
    return safety


def _warn_if_stale(run, safety: Safety) -> None:
    """A threshold or gate fitted before the model was last written may not fit it."""
    from tumorlib.abstention import ABSTENTION_FILE
    from tumorlib.input_gate import GATE_FILE
    from tumorlib.runs import MODEL_FILE

    model_time = (run.path / MODEL_FILE).stat().st_mtime
    present = [
        name
        for name, used in ((ABSTENTION_FILE, safety.abstention), (GATE_FILE, safety.gate))
        if used is not None
    ]
    for name in present:
        if (run.path / name).stat().st_mtime < model_time:
            print(
                f"warning: {run.path / name} is older than {MODEL_FILE}; re-run its step if the "
                "model was retrained",
                file=sys.stderr,
            )


def gate_metadata(safety: Safety) -> dict[str, Any] | None:
    """The gate's thresholds (and measured rates, if evaluated) for the metadata asset."""
    from tumorlib.input_gate import REJECTED_MESSAGE

    if safety.gate is None:
        return None
    report = safety.gate_report or {}
    return {
        "layers": [{"layer": g.layer, "threshold": g.threshold} for g in safety.gate.layers],
        "score_threshold": 1.0,
        "false_rejection_target_on_validation": safety.gate.false_rejection_target,
        "test_false_rejection_rate": _finite_or_none(report.get("test_false_rejection_rate")),
        "negative_rejection_rate": _finite_or_none(report.get("negative_rejection_rate")),
        "rule": "in_distribution = gate_score <= 1; gate_score = max over layers of "
        "Mahalanobis distance / layer threshold",
        "message": REJECTED_MESSAGE,
    }


def has_gradcam_parts(model) -> bool:
    """Grad-CAM needs the ``"backbone"`` and ``"head"`` sub-models of tumorlib.model (in every
    member, for an ensemble)."""
    from tumorlib.ensemble_model import members
    from tumorlib.model import BACKBONE_NAME, HEAD_NAME

    def complete(classifier) -> bool:
        names = {layer.name for layer in classifier.layers}
        return BACKBONE_NAME in names and HEAD_NAME in names

    return all(complete(member) for member in members(model))


def collect_metrics(run_path: Path) -> dict[str, Any]:
    """Every ``eval/<config>-<split>/metrics.json`` of the run, keyed by ``<config>-<split>``."""
    from tumorlib.runs import EVAL_DIR

    return {
        path.parent.name: _read_json(path)
        for path in sorted((run_path / EVAL_DIR).glob("*/metrics.json"))
    }


def build_metadata(
    run,
    *,
    model_name: str,
    version: int,
    safety: Safety | None = None,
    explain: bool = False,
) -> dict[str, Any]:
    """What a client needs to interpret and trust the model's output."""
    import tensorflow as tf

    from tumorlib.classes import CLASS_NAMES, DISPLAY_NAMES

    safety = safety or Safety(None, None, None)
    config = run.config
    signatures = {
        SERVING_SIGNATURE: safety.serving_outputs(),
        METADATA_SIGNATURE: [METADATA_OUTPUT_KEY],
    }
    if explain:
        signatures[EXPLAIN_SIGNATURE] = list(EXPLAIN_OUTPUT_KEYS)
    return {
        "model_name": model_name,
        "model_version": version,
        "run": run.path.name,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "class_names": list(CLASS_NAMES),
        "display_names": {name: DISPLAY_NAMES[name] for name in CLASS_NAMES},
        "image_size": run.image_size,
        "temperature": run.temperature,
        "input": {
            "name": INPUT_KEY,
            "dtype": "string",
            "shape": [None],
            "description": "encoded JPEG/PNG/BMP/GIF bytes",
        },
        "outputs": signatures[SERVING_SIGNATURE],
        "signatures": signatures,
        "abstention": safety.abstention,
        "input_gate": gate_metadata(safety),
        "dataset": config.get("dataset", {}),
        "model_config": {
            k: config[k]
            for k in ("alpha", "weights", "dropout", "head_units", "ensemble")
            if k in config
        },
        "metrics": collect_metrics(run.path),
        "tensorflow_version": tf.__version__,
    }


def make_base_serve_fn(model, *, image_size: int, temperature: float):
    """Plain classification: bytes -> temperature-scaled probabilities, class index and name."""
    import tensorflow as tf

    from tumorlib.calibration import apply_temperature
    from tumorlib.classes import CLASS_NAMES
    from tumorlib.preprocessing import preprocess_bytes_batch

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_KEY)])
    def classify(image_bytes):
        images = preprocess_bytes_batch(image_bytes, image_size)
        probabilities = apply_temperature(model(images, training=False), temperature)
        class_index = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {
            "probabilities": probabilities,
            "class_index": class_index,
            "class_name": tf.gather(tf.constant(CLASS_NAMES), class_index),
        }

    return classify


def make_serve_fn(base, *, threshold: float | None):
    """``serving_default``: the base function's outputs plus ``confidence`` and ``abstain``.

    ``abstain`` is computed in the graph, so TF Serving, the page and the CLI cannot disagree
    about which answers to withhold. ``base`` is the plain or the gated function
    (:func:`tumorlib.input_gate.make_gated_serve_fn`, which adds ``in_distribution`` and
    ``gate_score``).
    """
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_KEY)])
    def serve(image_bytes):
        outputs = dict(base(image_bytes))
        confidence = tf.reduce_max(outputs["probabilities"], axis=-1)
        outputs[CONFIDENCE_KEY] = confidence
        if threshold is not None:
            outputs["abstain"] = confidence < tf.constant(threshold, tf.float32)
        return outputs

    return serve


def make_serving_module(
    model,
    *,
    image_size: int,
    temperature: float,
    metadata_file: Path,
    safety: Safety | None = None,
    explain: bool = False,
):
    """A ``tf.Module`` holding the Keras model, its signatures and the metadata asset.

    Every function the signatures call is an attribute, so the variables it uses (the
    classifier's own, shared with the gate's feature extractor) are tracked and saved.
    """
    import tensorflow as tf

    safety = safety or Safety(None, None, None)

    class ServingModule(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="brain_mri_serving")
            self.model = model
            # Every variable reachable from the root, explicitly: Keras does not expose the
            # seed-generator state of layers nested in an ensemble's members to TF's object
            # graph, and tf.saved_model.save refuses functions that capture unreachable state.
            self.model_variables = list(model.variables)
            self.metadata_asset = tf.saved_model.Asset(str(metadata_file))
            if safety.gate is not None:
                from tumorlib.input_gate import GateError, make_gated_serve_fn

                try:
                    self.classify, self.gate_features = make_gated_serve_fn(
                        model, safety.gate, image_size=image_size, temperature=temperature
                    )
                except GateError as err:
                    raise ExportError(f"the input gate does not fit this model: {err}") from None
            else:
                self.classify = make_base_serve_fn(
                    model, image_size=image_size, temperature=temperature
                )
            self.serve = make_serve_fn(self.classify, threshold=safety.threshold)
            if explain:
                from tumorlib.gradcam import make_explain_fn

                self.explain = make_explain_fn(
                    model, image_size=image_size, temperature=temperature
                )

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=METADATA_INPUT_KEY)])
        def metadata(self, request):
            text = tf.io.read_file(self.metadata_asset.asset_path)
            return {METADATA_OUTPUT_KEY: tf.fill(tf.shape(request), text)}

    return ServingModule()


def export_run(
    run_path: str | os.PathLike,
    model_base_path: str | os.PathLike = DEFAULT_MODEL_BASE_PATH,
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    verify: bool = True,
) -> Path:
    """Export ``run_path`` as the next version under ``model_base_path``; return its folder."""
    from tumorlib.runs import load_run

    run = load_run(run_path)
    safety = load_safety(run)
    base = Path(model_base_path)
    base.mkdir(parents=True, exist_ok=True)
    model = run.load_model()
    explain = has_gradcam_parts(model)
    if not explain:
        print(
            "note: the model has no 'backbone'/'head' sub-models (not built by tumorlib.model); "
            f"exported without the {EXPLAIN_SIGNATURE!r} (Grad-CAM) signature",
            file=sys.stderr,
        )
    version = next_version(base)
    metadata = build_metadata(
        run, model_name=model_name, version=version, safety=safety, explain=explain
    )
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=base))
    try:
        saved = _save(staging, model, run, metadata, safety, explain)
        if verify:
            verify_export(saved, model, run.image_size, run.temperature)
        target = _move_into_place(saved, base, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _save(staging: Path, model, run, metadata: dict, safety: Safety, explain: bool) -> Path:
    """Write the SavedModel (with its metadata asset) under ``staging``; return its folder."""
    import tensorflow as tf

    metadata_file = staging / "src" / METADATA_ASSET
    metadata_file.parent.mkdir()
    metadata_file.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    module = make_serving_module(
        model,
        image_size=run.image_size,
        temperature=run.temperature,
        metadata_file=metadata_file,
        safety=safety,
        explain=explain,
    )
    signatures = {
        SERVING_SIGNATURE: module.serve.get_concrete_function(),
        METADATA_SIGNATURE: module.metadata.get_concrete_function(),
    }
    if explain:
        signatures[EXPLAIN_SIGNATURE] = module.explain.get_concrete_function()
    saved = staging / "saved_model"
    tf.saved_model.save(module, str(saved), signatures=signatures)
    return saved


def _move_into_place(saved: Path, base: Path, version: int) -> Path:
    """Rename to ``base/<version>``; never overwrite: a concurrent exporter may own the number."""
    while True:
        target = base / str(version)
        try:
            os.rename(saved, target)
            return target
        except OSError:
            if not target.exists():
                raise
            version += 1
            _rewrite_version(saved, version)


def _rewrite_version(saved: Path, version: int) -> None:
    """Keep the metadata asset's version in step when a race forced a later number."""
    asset = saved / "assets" / METADATA_ASSET
    data = json.loads(asset.read_text())
    data["model_version"] = version
    asset.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def verify_export(saved: Path, model, image_size: int, temperature: float) -> float:
    """Reload the SavedModel and check it matches the Keras model on generated images.

    Returns the largest absolute probability difference (``serving_default`` and, if present,
    ``explain``); raises :class:`ExportError` above :data:`EXPORT_TOLERANCE`, or when the
    heatmap is not a finite map in [0, 1] at input resolution. Catches an export whose graph
    drifted from training (a wrong image size, a missing temperature) before TF Serving ever
    sees it.
    """
    import numpy as np
    import tensorflow as tf

    from tumorlib.calibration import apply_temperature_np
    from tumorlib.preprocessing import preprocess_bytes_batch

    rng = np.random.default_rng(0)
    images = [
        tf.io.encode_png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).numpy()
        for h, w in ((image_size, image_size), (image_size + 7, image_size // 2 + 3))
    ]
    batch = tf.constant(images)
    expected = apply_temperature_np(
        model(preprocess_bytes_batch(batch, image_size), training=False).numpy(), temperature
    )
    loaded = tf.saved_model.load(str(saved))
    got = loaded.signatures[SERVING_SIGNATURE](**{INPUT_KEY: batch})["probabilities"].numpy()
    diff = float(np.max(np.abs(got - expected)))
    if EXPLAIN_SIGNATURE in loaded.signatures:
        explained = loaded.signatures[EXPLAIN_SIGNATURE](**{INPUT_KEY: batch})
        diff = max(diff, float(np.max(np.abs(explained["probabilities"].numpy() - expected))))
        _check_heatmap(explained["heatmap"].numpy(), len(images), image_size)
    if diff > EXPORT_TOLERANCE:
        raise ExportError(
            f"exported model differs from the Keras model by {diff:.2e} (> {EXPORT_TOLERANCE})"
        )
    return diff


def _check_heatmap(heatmap, n: int, image_size: int) -> None:
    import numpy as np

    if heatmap.shape != (n, image_size, image_size):
        raise ExportError(f"explain heatmap has shape {heatmap.shape}, expected {n}x{image_size}²")
    if not np.isfinite(heatmap).all() or heatmap.min() < 0.0 or heatmap.max() > 1.0:
        raise ExportError("explain heatmap is not a finite map in [0, 1]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.export",
        description="Export a run folder as a TF Serving SavedModel (next integer version).",
    )
    parser.add_argument("run", help="run folder, e.g. runs/default")
    parser.add_argument("--model-base-path", default=str(DEFAULT_MODEL_BASE_PATH))
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the reload-and-compare check"
    )
    args = parser.parse_args(argv)
    from tumorlib.runs import RunNotFoundError

    try:
        target = export_run(
            args.run, args.model_base_path, model_name=args.model_name, verify=not args.no_verify
        )
    except (RunNotFoundError, ExportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"exported {args.run} -> {target} (version {target.name})")
    print(describe_export(target))
    return 0


def describe_export(target: Path) -> str:
    """One line per signature and safety piece, so a missing step is visible at export time."""
    meta = json.loads((target / "assets" / METADATA_ASSET).read_text())
    lines = [f"  {name}: {', '.join(keys)}" for name, keys in meta["signatures"].items()]
    abstention, gate = meta.get("abstention"), meta.get("input_gate")
    lines.append(
        f"  abstention threshold: {abstention['threshold']:.4f}"
        if abstention
        else "  abstention: none (run `python -m tumorlib.abstention RUN` first to add it)"
    )
    if gate:
        layers = ", ".join(f"{g['layer']} <= {g['threshold']:.2f}" for g in gate["layers"])
        lines.append(f"  input gate: {layers}")
    else:
        lines.append("  input gate: none (run `python -m tumorlib.input_gate RUN` first to add it)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
