"""The export's ``assets/metadata.json``: what a client needs to interpret and trust the model.

Class names, model and dataset versions, evaluation metrics, temperature, image size, the
signatures and their outputs, the abstention threshold and the gate's thresholds. TF Serving's
REST API has no call that returns a model's assets, so the export also serves this file through
its ``metadata`` signature (:mod:`serving.export.module`).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from serving.common.warmup_records import warmup_path
from serving.export.distribution import validation_distribution
from serving.export.safety import NO_SAFETY, Safety, finite_or_none, read_json
from tumorlib.contracts.classes import CLASS_NAMES, DISPLAY_NAMES
from tumorlib.contracts.runs import EVAL_DIR, METRICS_FILE, STUDY_RULE_FILE, Run
from tumorlib.contracts.serving_contract import (
    EXPLAIN_OUTPUT_KEYS,
    EXPLAIN_SIGNATURE,
    INPUT_KEY,
    METADATA_ASSET,
    METADATA_OUTPUT_KEY,
    METADATA_SIGNATURE,
    NOT_BRAIN_MRI_MESSAGE,
    SERVING_SIGNATURE,
    UNFAMILIAR_MESSAGE,
)

ASSETS_DIR = "assets"  # a SavedModel's asset folder (TF's layout)


def study_rule(run_path: Path) -> dict[str, Any] | None:
    """The run's ``study_rule.json`` (``tumorlib study evaluate``), or None when not chosen."""
    path = run_path / STUDY_RULE_FILE
    return read_json(path) if path.exists() else None


def gate_metadata(safety: Safety) -> dict[str, Any] | None:
    """The gate's thresholds (and measured rates, if evaluated) for the metadata asset."""
    if safety.gate is None:
        return None
    report = safety.gate_report or {}
    return {
        "layers": [{"layer": g.layer, "threshold": g.threshold} for g in safety.gate.layers],
        "score_threshold": 1.0,
        "false_rejection_target_on_validation": safety.gate.false_rejection_target,
        "test_false_rejection_rate": finite_or_none(report.get("test_false_rejection_rate")),
        "negative_rejection_rate": finite_or_none(report.get("negative_rejection_rate")),
        "test_changed_false_rejection_rate": finite_or_none(
            report.get("test_changed_false_rejection_rate")
        ),
        "second_source": _second_source_rates(report),
        "linear_check": None
        if safety.gate.linear is None
        else {
            "layers": list(safety.gate.linear.layers),
            "threshold_logit": safety.gate.linear.threshold,
            "rule": "accepted when features @ weights + bias >= threshold_logit",
        },
        "rule": "in_distribution = gate_score <= 1; gate_score = max over layers of "
        "Mahalanobis distance / layer threshold (fitted on training slices and their "
        "acquisition-changed copies: any brain MRI sequence is accepted)",
        "message": NOT_BRAIN_MRI_MESSAGE,
        "familiarity": familiarity_metadata(safety),
    }


def _second_source_rates(report: dict[str, Any]) -> dict[str, Any] | None:
    source = report.get("second_source")
    if not source:
        return None
    return {k: v for k, v in source.items() if k != "rejected_names"}


def familiarity_metadata(safety: Safety) -> dict[str, Any] | None:
    """The familiarity check's thresholds and measured rates, when the run fitted one."""
    if safety.familiarity is None:
        return None
    report = (safety.gate_report or {}).get("familiarity") or {}
    return {
        "layers": [{"layer": g.layer, "threshold": g.threshold} for g in safety.familiarity.layers],
        "test_unfamiliar_rate": finite_or_none(report.get("test_unfamiliar_rate")),
        "rule": "familiar = familiarity_score <= 1 (the same statistics fitted on the unchanged "
        "training slices only); unfamiliar slices are still classified, with a flag",
        "message": UNFAMILIAR_MESSAGE,
    }


def collect_metrics(run_path: Path) -> dict[str, Any]:
    """Every ``eval/<config>-<split>/metrics.json`` of the run, keyed by ``<config>-<split>``."""
    return {
        path.parent.name: read_json(path)
        for path in sorted((run_path / EVAL_DIR).glob(f"*/{METRICS_FILE}"))
    }


def build_metadata(
    run: Run,
    *,
    model_name: str,
    version: int,
    safety: Safety = NO_SAFETY,
    explain: bool = False,
) -> dict[str, Any]:
    """What a client needs to interpret and trust the model's output."""
    import tensorflow as tf

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
        # Drift watch's reference (serving.audit.drift); None when the run has neither file.
        "validation_distribution": validation_distribution(run.path),
        # The study aggregation rule chosen for this run (serving.clients.study); None: the default.
        "study_rule": study_rule(run.path),
        "tensorflow_version": tf.__version__,
    }


def write_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """The asset as the export writes it (sorted keys, so exports diff cleanly)."""
    path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")


def read_exported_metadata(saved: Path) -> dict[str, Any]:
    """The metadata asset of an exported version folder."""
    return json.loads((saved / ASSETS_DIR / METADATA_ASSET).read_text())


def set_version(saved: Path, version: int) -> None:
    """Keep the asset's version in step when a race forced a later version number."""
    data = read_exported_metadata(saved)
    data["model_version"] = version
    write_metadata(saved / ASSETS_DIR / METADATA_ASSET, data)


def describe_export(target: Path) -> str:
    """One line per signature and safety piece, so a missing step is visible at export time."""
    meta = read_exported_metadata(target)
    lines = [f"  {name}: {', '.join(keys)}" for name, keys in meta["signatures"].items()]
    warmup = warmup_path(target)
    lines.append(
        f"  warm-up: {warmup.relative_to(target)}"
        if warmup.is_file()
        else "  warm-up: none (first requests after each load pay TensorFlow's set-up)"
    )
    similar = meta.get("similar_cases") or {}
    if similar.get("available"):
        lines.append(f"  similar cases: {similar['count']} {similar['split']} slices indexed")
    elif similar:
        lines.append(f"  similar cases: {similar.get('reason')}")
    abstention, gate = meta.get("abstention"), meta.get("input_gate")
    if not abstention:
        lines.append("  abstention: none (run `python -m tumorlib.abstention RUN` first to add it)")
    elif abstention.get("class_thresholds"):
        limits = ", ".join(f"{k} {v:.4f}" for k, v in abstention["class_thresholds"].items())
        lines.append(f"  abstention thresholds by predicted class: {limits}")
    else:
        lines.append(f"  abstention threshold: {abstention['threshold']:.4f}")
    if gate:
        layers = ", ".join(f"{g['layer']} <= {g['threshold']:.2f}" for g in gate["layers"])
        linear = ", and a linear check" if gate.get("linear_check") else ""
        lines.append(f"  input gate (brain MRI?): {layers}{linear}")
        if gate.get("familiarity"):
            lines.append("  familiarity: familiar, familiarity_score")
    else:
        lines.append("  input gate: none (run `python -m tumorlib.input_gate RUN` first to add it)")
    return "\n".join(lines)
