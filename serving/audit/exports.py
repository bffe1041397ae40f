"""Getting data out: the audit records as CSV/JSON, and confirmed cases as a TFDS-ready folder.

The dataset folder is ImageFolder-style (``OUT/<split>/<class>/<record id>.png``, what
``tfds.folder_dataset.ImageFolder(OUT)`` reads) plus ``OUT/manifest.csv``. Only inputs a user
chose to keep, with consent, exist as images at all; of those, only cases whose latest feedback
gives a class (agree: the model's class; disagree: the corrected one) are exported.

What leaves the database is private: folders are created 0700 and files 0600 (a report of who
said what about which image is not for every account on the machine), and every CSV cell is
neutralised by OWASP's rule (:func:`tumorlib.contracts.display.csv_cell`): a radiologist's note
starting with ``=`` is text in a spreadsheet, never a formula.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from serving.audit.queries import latest_feedback
from serving.audit.store import AuditStore, as_utc
from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.contracts.display import csv_cell

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700

MANIFEST = "manifest.csv"
MANIFEST_FIELDS = [
    "file", "label", "prediction_id", "input_sha256", "model_name", "model_version",
    "model_class", "verdict", "feedback_at", "kept_at",
]  # fmt: skip


def _iso(value: Any) -> Any:
    return as_utc(value).isoformat() if isinstance(value, dt.datetime) else value


def private_dir(path: Path) -> Path:
    """``path`` as a folder, created 0700 when missing; a file there is refused in words."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a folder: choose another --output")
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    return path


def open_private(path: Path, mode: str = "w") -> IO[Any]:
    """A file opened for writing with permissions 0600 (also when it already existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    os.fchmod(fd, PRIVATE_FILE)
    if "b" in mode:
        return os.fdopen(fd, mode)
    return os.fdopen(fd, mode, newline="", encoding="utf-8")


def write_csv(path: Path, fields: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """A private CSV whose every cell is neutralised (no formula, no control character)."""
    with open_private(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)


def export_records(store: AuditStore, out: Path, *, before: dt.datetime | None = None) -> dict:
    """``predictions.csv``, ``feedback.csv``, ``models.json`` (never image bytes), private."""
    private_dir(out)
    counts = {}
    for kind, name in (("prediction", "predictions.csv"), ("feedback", "feedback.csv")):
        rows = store.rows(kind, before=before)
        columns = [c.name for c in store_columns(kind)]
        write_csv(out / name, columns, ({k: _iso(v) for k, v in row.items()} for row in rows))
        counts[name] = len(rows)
    models = [{k: _iso(v) for k, v in row.items()} for row in store.rows("model")]
    with open_private(out / "models.json") as handle:
        handle.write(json.dumps(models, indent=2, sort_keys=True) + "\n")
    counts["models.json"] = len(models)
    return counts


def store_columns(kind: str) -> list:
    from serving.audit.store import TABLES

    return [c for c in TABLES[kind].c if c.name != "data"]


def export_dataset(store: AuditStore, out: Path, *, split: str = "train") -> dict[str, int]:
    """Write confirmed kept images as ``OUT/split/class/*.png`` and a manifest; per-class counts."""
    private_dir(out)
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
        private_dir(out / split)
        private_dir(out / relative.parent)
        with open_private(out / relative, "wb") as image:
            image.write(kept["data"])
        counts[label] += 1
        manifest.append({
            "file": relative.as_posix(), "label": label, "prediction_id": pid,
            "input_sha256": prediction["input_sha256"], "model_name": prediction["model_name"],
            "model_version": prediction["model_version"], "model_class": prediction["class_name"],
            "verdict": verdict["verdict"], "feedback_at": _iso(verdict["created_at"]),
            "kept_at": _iso(kept["created_at"]),
        })  # fmt: skip
    write_csv(out / MANIFEST, MANIFEST_FIELDS, manifest)
    return counts
