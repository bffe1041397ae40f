"""TF Serving's on-disk layout: ``<model_base_path>/<integer version>/saved_model.pb``.

TF Serving treats every all-digit sub-folder as a version and ignores everything else, so the
exporter writes into a hidden temporary folder and renames it into place: a half-written export
is never seen as a version.
"""

from __future__ import annotations

import os
from pathlib import Path

SAVED_MODEL_FILE = "saved_model.pb"


def list_versions(model_base_path: str | os.PathLike) -> list[int]:
    """All complete versions under ``model_base_path``, ascending (empty if the path is absent)."""
    base = Path(model_base_path)
    if not base.is_dir():
        return []
    versions = [
        int(p.name)
        for p in base.iterdir()
        if p.is_dir() and p.name.isdigit() and (p / SAVED_MODEL_FILE).exists()
    ]
    return sorted(versions)


def find_latest_version(model_base_path: str | os.PathLike) -> int | None:
    """The newest complete version, or ``None`` when none has been exported yet."""
    versions = list_versions(model_base_path)
    return versions[-1] if versions else None


def next_version(model_base_path: str | os.PathLike) -> int:
    """One more than the highest numbered folder (complete or not), starting at 1.

    Incomplete numbered folders count too, so a version number is never reused.
    """
    base = Path(model_base_path)
    taken = [int(p.name) for p in base.iterdir() if p.name.isdigit()] if base.is_dir() else []
    return max(taken, default=0) + 1
