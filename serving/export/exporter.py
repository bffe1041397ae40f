"""Export a trained run as a TensorFlow Serving SavedModel: ``python -m serving.export RUN``.

The exported graph takes *encoded* image bytes and runs the same
:func:`tumorlib.images.preprocessing.preprocess_bytes_batch` the training pipeline uses, then the
Keras model, then :func:`tumorlib.model.calibration.apply_temperature`. A client therefore never
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
  missing output as "not checked" (``None`` in :class:`serving.clients.prediction.Prediction`).
- ``explain``: ``image_bytes`` -> ``probabilities``, ``class_index`` and ``heatmap`` ``float32
  [None, S, S]`` in [0, 1]: Grad-CAM (:mod:`tumorlib.model.gradcam`) at model input resolution,
  aligned with the resized, black-padded image (:func:`tumorlib.images.preprocessing.resize`). Needs
  the project's architecture (``"backbone"`` and ``"head"`` sub-models, as every run of
  :mod:`tumorlib.training.train` has); a model without them is exported without ``explain``.
- ``metadata``: ``request`` ``tf.string [None]`` -> ``metadata_json`` ``string [None]``: the
  content of ``assets/metadata.json`` (class names, model and dataset versions, evaluation
  metrics, temperature, image size, the abstention threshold and the gate's thresholds) once
  per input row. TF Serving's REST API has no call that returns a model's assets, so this
  signature is how a REST client reads them:
  ``POST /v1/models/brain_mri:predict`` with
  ``{"signature_name": "metadata", "instances": ["metadata"]}``.

Names of signatures, inputs and outputs: :mod:`tumorlib.contracts.serving_contract`. The pieces:
:mod:`serving.export.safety` (what the run measured), :mod:`serving.export.metadata` (the asset),
:mod:`serving.export.module` (the ``tf.Module`` and its signatures), :mod:`serving.export.verify`.

Versions are integers under ``--model-base-path`` (TF Serving's layout), always one more than
the highest existing folder; the export is written to a hidden folder and renamed into place, so
an existing version is never overwritten and a half-written one is never served.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from serving.common.versions import next_version
from serving.export.metadata import build_metadata, describe_export, set_version, write_metadata
from serving.export.safety import Safety, load_safety
from tumorlib.contracts.runs import Run, load_run
from tumorlib.contracts.serving_contract import (
    EXPLAIN_SIGNATURE,
    METADATA_ASSET,
    MODEL_BASE_PATH,
    MODEL_NAME,
)
from tumorlib.model.loading import load_run_model

log = logging.getLogger(__name__)

SAVED_MODEL_DIR = "saved_model"  # inside the staging folder, renamed to <base>/<version>


def export_run(
    run_path: str | os.PathLike,
    model_base_path: str | os.PathLike = MODEL_BASE_PATH,
    *,
    model_name: str = MODEL_NAME,
    verify: bool = True,
    warmup: bool = True,
) -> Path:
    """Export ``run_path`` as the next version under ``model_base_path``; return its folder.

    ``warmup`` writes TF Serving's warm-up records (:mod:`serving.export.warmup`) beside it.
    """
    from tumorlib.model.gradcam import has_gradcam_parts

    run = load_run(run_path)
    safety = load_safety(run)
    base = Path(model_base_path)
    base.mkdir(parents=True, exist_ok=True)
    model = load_run_model(run)
    explain = has_gradcam_parts(model)
    if not explain:
        log.warning(
            "the model has no 'backbone'/'head' sub-models (not built by "
            "tumorlib.model.classifier); exported without the %r (Grad-CAM) signature",
            EXPLAIN_SIGNATURE,
        )
    version = next_version(base)
    metadata = build_metadata(
        run, model_name=model_name, version=version, safety=safety, explain=explain
    )
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=base))
    try:
        saved = _save(staging, model, run, metadata, safety, explain)
        if warmup:
            from serving.export.warmup import write_warmup_requests

            write_warmup_requests(saved, model_name, run.image_size, set(metadata["signatures"]))
        if verify:
            from serving.export.verify import verify_export

            verify_export(saved, model, run.image_size, run.temperature)
        target = _move_into_place(saved, base, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _save(staging: Path, model, run: Run, metadata: dict, safety: Safety, explain: bool) -> Path:
    """Write the SavedModel (with its metadata asset) under ``staging``; return its folder."""
    from serving.export.module import ServingModule, save_serving_module

    metadata_file = staging / "src" / METADATA_ASSET
    metadata_file.parent.mkdir()
    write_metadata(metadata_file, metadata)
    module = ServingModule(
        model,
        image_size=run.image_size,
        temperature=run.temperature,
        metadata_file=metadata_file,
        safety=safety,
        explain=explain,
    )
    return save_serving_module(module, staging / SAVED_MODEL_DIR)


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
            set_version(saved, version)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from tumorlib.contracts.cli import run_command

    parser = argparse.ArgumentParser(
        prog="python -m serving.export",
        description="Export a run folder as a TF Serving SavedModel (next integer version).",
    )
    parser.add_argument("run", help="run folder, e.g. runs/default")
    parser.add_argument("--model-base-path", default=str(MODEL_BASE_PATH))
    parser.add_argument("--model-name", default=MODEL_NAME)
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the reload-and-compare check"
    )
    parser.add_argument(
        "--no-warmup",
        action="store_true",
        help="write no assets.extra/tf_serving_warmup_requests (first requests then pay the "
        "runtime's lazy initialisation)",
    )
    args = parser.parse_args(argv)

    def body() -> None:
        target = export_run(
            args.run,
            args.model_base_path,
            model_name=args.model_name,
            verify=not args.no_verify,
            warmup=not args.no_warmup,
        )
        print(f"exported {args.run} -> {target} (version {target.name})")
        print(describe_export(target))

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
