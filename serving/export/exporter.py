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
from typing import Any

from serving.common.versions import next_version
from serving.export.metadata import (
    ASSETS_DIR,
    build_metadata,
    describe_export,
    set_version,
    write_metadata,
)
from serving.export.safety import Safety, load_safety
from tumorlib.contracts.runs import Run, load_run
from tumorlib.contracts.serving_contract import (
    EXPLAIN_SIGNATURE,
    METADATA_ASSET,
    MODEL_BASE_PATH,
    MODEL_NAME,
    SIMILAR_CASES_ASSET_DIR,
    SIMILAR_OUTPUT_KEYS,
    SIMILAR_SIGNATURE,
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
    similar: bool = True,
    data_dir: str | os.PathLike | None = None,
) -> Path:
    """Export ``run_path`` as the next version under ``model_base_path``; return its folder.

    ``warmup`` writes TF Serving's warm-up records (:mod:`serving.export.warmup`) beside it.
    ``similar`` indexes the run's training split (from ``data_dir``, else where training read
    it) for the ``similar_cases`` signature (:mod:`serving.export.similar_cases`); without a
    built dataset the export goes on without it and its metadata says why.
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
    index, reason = _case_index(model, run, similar and explain, data_dir)
    version = next_version(base)
    metadata = build_metadata(
        run, model_name=model_name, version=version, safety=safety, explain=explain
    )
    metadata.update(_evidence_metadata(run, index, reason, explain))
    if index is not None:
        metadata["signatures"][SIMILAR_SIGNATURE] = list(SIMILAR_OUTPUT_KEYS)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=base))
    try:
        saved = _save(staging, model, run, metadata, safety, explain, index)
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


def _case_index(model, run: Run, wanted: bool, data_dir) -> tuple[Any, str]:
    """The similar-cases index of the run's training split, or ``(None, why not)``."""
    if not wanted:
        return None, "no index: not requested, or the model has no backbone/head sub-models"
    from serving.export.similar_cases import build_case_index

    index, reason = build_case_index(model, run, data_dir=data_dir)
    log.info("similar cases: %s", f"{len(index)} training slices indexed" if index else reason)
    return index, reason


def _evidence_metadata(run: Run, index: Any, reason: str, explain: bool) -> dict[str, Any]:
    """The metadata entries for similar cases and the served heatmap method."""
    from serving.export.similar_cases import similar_metadata
    from tumorlib.evaluation.faithfulness import chosen_method

    entries: dict[str, Any] = {"similar_cases": similar_metadata(index, reason, run)}
    if explain:
        entries["explain_method"] = chosen_method(run.path)
    return entries


def _save(
    staging: Path,
    model,
    run: Run,
    metadata: dict,
    safety: Safety,
    explain: bool,
    index: Any = None,
) -> Path:
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
        explain_method=metadata.get("explain_method", "gradcam"),
        similar=index,
    )
    saved = save_serving_module(module, staging / SAVED_MODEL_DIR)
    if index is not None:  # the rows for NumPy and vector-index readers, beside the graph's copy
        index.save(saved / ASSETS_DIR / SIMILAR_CASES_ASSET_DIR)
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
    parser.add_argument(
        "--no-similar",
        action="store_true",
        help="leave out the similar_cases signature (no index of the training split)",
    )
    parser.add_argument(
        "--data-dir", default=None, help="TFDS data dir of the run's dataset (for the index)"
    )
    args = parser.parse_args(argv)

    def body() -> None:
        target = export_run(
            args.run,
            args.model_base_path,
            model_name=args.model_name,
            verify=not args.no_verify,
            warmup=not args.no_warmup,
            similar=not args.no_similar,
            data_dir=args.data_dir,
        )
        print(f"exported {args.run} -> {target} (version {target.name})")
        print(describe_export(target))

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
