"""Export a trained run as a TensorFlow Serving SavedModel: ``python -m serving.export RUN``.

The exported graph takes *encoded* image bytes and runs the same
:func:`tumorlib.preprocessing.preprocess_bytes_batch` the training pipeline uses, then the Keras
model, then :func:`tumorlib.calibration.apply_temperature`. A client therefore never
re-implements decoding, resizing or normalisation, and cannot get them subtly wrong.

Signatures (TF Serving serves every one; ``serving_default`` is used when none is named):

- ``serving_default``: ``image_bytes`` ``tf.string [None]`` -> ``probabilities`` ``float32
  [None, 4]`` (temperature-scaled), ``class_index`` ``int64 [None]``, ``class_name`` ``string
  [None]``.
- ``metadata``: ``request`` ``tf.string [None]`` -> ``metadata_json`` ``string [None]``: the
  content of ``assets/metadata.json`` (class names, model and dataset versions, evaluation
  metrics, temperature, image size) once per input row. TF Serving's REST API has no call that
  returns a model's assets, so this signature is how a REST client reads them:
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
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from serving.versions import next_version

DEFAULT_MODEL_BASE_PATH = Path("models/brain_mri")
DEFAULT_MODEL_NAME = "brain_mri"
SERVING_SIGNATURE = "serving_default"
METADATA_SIGNATURE = "metadata"
INPUT_KEY = "image_bytes"
OUTPUT_KEYS = ("probabilities", "class_index", "class_name")
METADATA_INPUT_KEY = "request"
METADATA_OUTPUT_KEY = "metadata_json"
METADATA_ASSET = "metadata.json"
EXPORT_TOLERANCE = 1e-5


class ExportError(RuntimeError):
    """The export could not be written or does not reproduce the Keras model."""


def collect_metrics(run_path: Path) -> dict[str, Any]:
    """Every ``eval/<config>-<split>/metrics.json`` of the run, keyed by ``<config>-<split>``."""
    from tumorlib.runs import EVAL_DIR

    metrics: dict[str, Any] = {}
    for path in sorted((run_path / EVAL_DIR).glob("*/metrics.json")):
        try:
            metrics[path.parent.name] = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ExportError(f"{path} is not valid JSON: {err}") from None
    return metrics


def build_metadata(run, *, model_name: str, version: int) -> dict[str, Any]:
    """What a client needs to interpret and trust the model's output."""
    import tensorflow as tf

    from tumorlib.classes import CLASS_NAMES, DISPLAY_NAMES

    config = run.config
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
        "outputs": list(OUTPUT_KEYS),
        "dataset": config.get("dataset", {}),
        "model_config": {
            k: config[k] for k in ("alpha", "weights", "dropout", "head_units") if k in config
        },
        "metrics": collect_metrics(run.path),
        "tensorflow_version": tf.__version__,
    }


def make_serving_module(model, *, image_size: int, temperature: float, metadata_file: Path):
    """A ``tf.Module`` holding the Keras model, the preprocessing and the metadata asset."""
    import tensorflow as tf

    from tumorlib.calibration import apply_temperature
    from tumorlib.classes import CLASS_NAMES
    from tumorlib.preprocessing import preprocess_bytes_batch

    class ServingModule(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="brain_mri_serving")
            self.model = model
            self.metadata_asset = tf.saved_model.Asset(str(metadata_file))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_KEY)])
        def serve(self, image_bytes):
            images = preprocess_bytes_batch(image_bytes, image_size)
            probabilities = self.model(images, training=False)
            probabilities = apply_temperature(probabilities, temperature)
            class_index = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
            class_name = tf.gather(tf.constant(CLASS_NAMES), class_index)
            return {
                "probabilities": probabilities,
                "class_index": class_index,
                "class_name": class_name,
            }

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
    import tensorflow as tf

    from tumorlib.runs import load_run

    run = load_run(run_path)
    base = Path(model_base_path)
    base.mkdir(parents=True, exist_ok=True)
    model = run.load_model()
    version = next_version(base)
    metadata = build_metadata(run, model_name=model_name, version=version)

    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=base))
    try:
        metadata_file = staging / "src" / METADATA_ASSET
        metadata_file.parent.mkdir()
        metadata_file.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        module = make_serving_module(
            model,
            image_size=run.image_size,
            temperature=run.temperature,
            metadata_file=metadata_file,
        )
        saved = staging / "saved_model"
        tf.saved_model.save(
            module,
            str(saved),
            signatures={
                SERVING_SIGNATURE: module.serve.get_concrete_function(),
                METADATA_SIGNATURE: module.metadata.get_concrete_function(),
            },
        )
        if verify:
            verify_export(saved, model, run.image_size, run.temperature)
        while True:  # never overwrite: a concurrent exporter may have taken the number
            target = base / str(version)
            try:
                os.rename(saved, target)
                break
            except OSError:
                if not target.exists():
                    raise
                version += 1
                _rewrite_version(saved, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _rewrite_version(saved: Path, version: int) -> None:
    """Keep the metadata asset's version in step when a race forced a later number."""
    asset = saved / "assets" / METADATA_ASSET
    data = json.loads(asset.read_text())
    data["model_version"] = version
    asset.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def verify_export(saved: Path, model, image_size: int, temperature: float) -> float:
    """Reload the SavedModel and check it matches the Keras model on generated images.

    Returns the largest absolute probability difference; raises :class:`ExportError` above
    :data:`EXPORT_TOLERANCE`. Catches an export whose graph drifted from training (a wrong
    image size, a missing temperature) before TF Serving ever sees it.
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
    if diff > EXPORT_TOLERANCE:
        raise ExportError(
            f"exported model differs from the Keras model by {diff:.2e} (> {EXPORT_TOLERANCE})"
        )
    return diff


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
    return 0


if __name__ == "__main__":
    sys.exit(main())
