"""The rows the audit stores, built from a prediction: hashes and outputs, never pixels or tags.

Kept only: the input's SHA-256 and size (the hospital can re-hash its own file to find the
record), the DICOM frame, an HMAC of the SOP Instance UID only when asked (salted, so the UID
cannot be looked up without the salt), the model's outputs, the model name and version, the
backend, the signed-in user. A kept image is re-encoded from its pixels as a PNG without any
metadata chunk, so no EXIF, comment or DICOM field travels with it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import io
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from serving.audit.schema import NOTE_MAX_CHARS, SOURCES, VERDICTS
from serving.clients.prediction import Prediction
from tumorlib import __version__
from tumorlib.contracts.classes import CLASS_NAMES

CONSENT_TEXT = "kept for retraining with the user's explicit consent"


@dataclass(frozen=True)
class ModelInfo:
    """Which model answered, and the reference figures its export recorded."""

    name: str
    version: int | None
    reference: dict[str, Any]


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sop_uid_hash(uid: str, salt: str) -> str:
    """HMAC-SHA256 of a SOP Instance UID: matches the same UID later, reveals nothing alone."""
    return hmac.new(salt.encode(), uid.strip().encode(), hashlib.sha256).hexdigest()


def reference_from_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What live monitoring compares against: clean-test accuracy, threshold, validation data."""
    metrics = metadata.get("metrics") or {}
    clean = metrics.get("clean-test") or {}
    abstention = metadata.get("abstention") or {}
    return {
        "test_accuracy": clean.get("accuracy"),
        "test_accuracy_interval": (clean.get("bootstrap") or {}).get("accuracy"),
        "test_size": clean.get("num_examples") or clean.get("n"),
        "abstention_threshold": abstention.get("threshold"),
        "test_accepted_accuracy": abstention.get("test_accepted_accuracy"),
        "validation_distribution": metadata.get("validation_distribution"),
        "exported_at": metadata.get("exported_at"),
        "run": metadata.get("run"),
    }


def model_info(metadata: Mapping[str, Any], fallback_name: str) -> ModelInfo:
    version = metadata.get("model_version")
    return ModelInfo(
        name=str(metadata.get("model_name") or fallback_name),
        version=None if version is None else int(version),
        reference=reference_from_metadata(metadata),
    )


def model_row(model: ModelInfo) -> dict[str, Any]:
    return {
        "model_name": model.name,
        "model_version": model.version if model.version is not None else -1,
        "first_seen": utcnow(),
        "reference": json.dumps(model.reference, sort_keys=True),
    }


def prediction_row(
    prediction: Prediction,
    data: bytes,
    *,
    model: ModelInfo,
    backend: str,
    source: str,
    user: str | None = None,
    frame: int | None = None,
    sop_hash: str | None = None,
    record_id: str | None = None,
) -> dict[str, Any]:
    """One prediction record; ``data`` is hashed and measured, never stored."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    probabilities = {str(k): float(v) for k, v in prediction.probabilities.items()}
    return {
        "id": record_id or new_id(),
        "created_at": utcnow(),
        "source": source,
        "model_name": model.name,
        "model_version": model.version,
        "backend": backend[:300],
        "user": user[:200] if user else None,
        "input_sha256": sha256_hex(data),
        "input_bytes": len(data),
        "frame": frame,
        "sop_uid_hash": sop_hash,
        "class_name": prediction.class_name,
        "confidence": float(prediction.confidence or max(probabilities.values())),
        "probabilities": json.dumps(probabilities, sort_keys=True),
        "abstain": prediction.abstain,
        "in_distribution": prediction.in_distribution,
        "gate_score": None if prediction.gate_score is None else float(prediction.gate_score),
        "tumorlib_version": __version__,
    }


def feedback_row(
    prediction_id: str,
    verdict: str,
    *,
    corrected_class: str | None = None,
    note: str | None = None,
    user: str | None = None,
) -> dict[str, Any]:
    """A radiologist's verdict on one prediction; ``disagree`` needs the corrected class."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, not {verdict!r}")
    if verdict == "disagree" and corrected_class not in CLASS_NAMES:
        raise ValueError(f"a disagreement needs the corrected class, one of {CLASS_NAMES}")
    return {
        "id": new_id(),
        "prediction_id": prediction_id,
        "created_at": utcnow(),
        "user": user[:200] if user else None,
        "verdict": verdict,
        "corrected_class": corrected_class if verdict == "disagree" else None,
        "note": (note or "").strip()[:NOTE_MAX_CHARS] or None,
    }


def pixels_only_png(data: bytes) -> bytes:
    """The image's pixels as a PNG with no metadata (EXIF, text chunks, ICC) carried over."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        mode = "L" if image.mode in ("L", "I;16", "1", "P") and image.mode != "P" else "RGB"
        clean = Image.frombytes(mode, image.size, image.convert(mode).tobytes())
    out = io.BytesIO()
    clean.save(out, format="PNG")
    return out.getvalue()


def kept_image_row(
    prediction_id: str, data: bytes, *, user: str | None = None, consent: str = CONSENT_TEXT
) -> dict[str, Any]:
    """An input the user chose to keep for retraining (consent given in the page)."""
    return {
        "id": new_id(),
        "prediction_id": prediction_id,
        "created_at": utcnow(),
        "user": user[:200] if user else None,
        "consent": consent[:200],
        "media_type": "image/png",
        "data": pixels_only_png(data),
    }
