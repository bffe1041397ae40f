"""Getting data out: the audit records as CSV/JSON, and confirmed cases as a TFDS-ready folder.

The dataset folder is ImageFolder-style (``OUT/<split>/<class>/<record id>.png``, what
``tfds.folder_dataset.ImageFolder(OUT)`` reads) plus ``OUT/manifest.csv``. Only inputs a user
chose to keep, with consent, exist as images at all; of those, only cases whose latest feedback
gives a class (agree: the model's class; disagree: the corrected one) are exported.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

from serving.audit.queries import latest_feedback
from serving.audit.store import AuditStore, as_utc
from tumorlib.contracts.classes import CLASS_NAMES

MANIFEST = "manifest.csv"
MANIFEST_FIELDS = [
    "file", "label", "prediction_id", "input_sha256", "model_name", "model_version",
    "model_class", "verdict", "feedback_at", "kept_at",
]  # fmt: skip


def _iso(value: Any) -> Any:
    return as_utc(value).isoformat() if isinstance(value, dt.datetime) else value


def export_records(store: AuditStore, out: Path, *, before: dt.datetime | None = None) -> dict:
    """``predictions.csv``, ``feedback.csv``, ``models.json`` (never image bytes)."""
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for kind, name in (("prediction", "predictions.csv"), ("feedback", "feedback.csv")):
        rows = store.rows(kind, before=before)
        columns = [c.name for c in store_columns(kind)]
        with open(out / name, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows({k: _iso(v) for k, v in row.items()} for row in rows)
        counts[name] = len(rows)
    models = [{k: _iso(v) for k, v in row.items()} for row in store.rows("model")]
    (out / "models.json").write_text(json.dumps(models, indent=2, sort_keys=True) + "\n")
    counts["models.json"] = len(models)
    return counts


def store_columns(kind: str) -> list:
    from serving.audit.store import TABLES

    return [c for c in TABLES[kind].c if c.name != "data"]


def export_dataset(store: AuditStore, out: Path, *, split: str = "train") -> dict[str, int]:
    """Write confirmed kept images as ``OUT/split/class/*.png`` and a manifest; per-class counts."""
    feedback = latest_feedback(store)
    predictions = {row["id"]: row for row in store.rows("prediction")}
    counts = dict.fromkeys(CLASS_NAMES, 0)
    manifest = []
    for kept in store.rows("kept_image", with_data=True):
        pid = kept["prediction_id"]
        if pid not in feedback.index or pid not in predictions:
            continue
        verdict = feedback.loc[pid]
        prediction = predictions[pid]
        if verdict["verdict"] == "agree":
            label = prediction["class_name"]
        elif verdict["verdict"] == "disagree":
            label = verdict["corrected_class"]
        else:
            continue
        relative = Path(split) / label / f"{pid}.png"
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_bytes(kept["data"])
        counts[label] += 1
        manifest.append({
            "file": relative.as_posix(), "label": label, "prediction_id": pid,
            "input_sha256": prediction["input_sha256"], "model_name": prediction["model_name"],
            "model_version": prediction["model_version"], "model_class": prediction["class_name"],
            "verdict": verdict["verdict"], "feedback_at": _iso(verdict["created_at"]),
            "kept_at": _iso(kept["created_at"]),
        })  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with open(out / MANIFEST, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(manifest)
    return counts
