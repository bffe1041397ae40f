"""Where the slices of a DICOM series lie: per-frame positions of enhanced multi-frame files, the
order along the slice normal, and the gaps or repeats that order reveals.

Why apart from :mod:`tumorlib.studies.dicom_series`: geometry is pure arithmetic on header values
(numpy only), tested on its own; the reader decides what to do with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

# A spacing this much above the typical one marks missing slices (1.5: one slice gone at most).
GAP_FACTOR = 1.5


def frame_geometry(header: Any, frames: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-frame positions and the orientation of an enhanced multi-frame header (functional
    groups: PlanePositionSequence per frame, PlaneOrientationSequence shared or per frame)."""

    def vector(item: Any, sequence: str, key: str, n: int) -> np.ndarray | None:
        try:
            values = np.asarray([float(v) for v in item[sequence][0][key].value], dtype=float)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            return None
        return values if values.shape == (n,) and np.all(np.isfinite(values)) else None

    per_frame = header.get("PerFrameFunctionalGroupsSequence") or []
    shared = header.get("SharedFunctionalGroupsSequence") or []
    orientation = None
    for item in [*shared[:1], *per_frame[:1]]:
        orientation = vector(item, "PlaneOrientationSequence", "ImageOrientationPatient", 6)
        if orientation is not None:
            break
    if len(per_frame) != frames:
        return None, orientation
    positions = [
        vector(item, "PlanePositionSequence", "ImagePositionPatient", 3) for item in per_frame
    ]
    if any(p is None for p in positions):
        return None, orientation
    return np.stack(positions), orientation  # type: ignore[arg-type]


class Placed(Protocol):
    """What ordering needs of an instance (``dicom_series._Instance`` has it)."""

    name: str
    frames: int
    instance_number: int | None
    position: np.ndarray | None
    orientation: np.ndarray | None


P = TypeVar("P", bound=Placed)


def order_instances(instances: list[P]) -> tuple[list[P], list[float] | None, str]:
    """Order along the slice normal when every file has one position and one orientation;
    else by InstanceNumber; else by name. Returns the order, positions (mm) and how."""
    orientations = [i.orientation for i in instances if i.orientation is not None]
    single = all(i.frames == 1 for i in instances)
    if (
        single
        and len(orientations) == len(instances)
        and all(i.position is not None for i in instances)
        and all(np.allclose(o, orientations[0], atol=1e-3) for o in orientations)
    ):
        normal = np.cross(orientations[0][:3], orientations[0][3:])
        keyed = sorted(
            ((float(np.dot(i.position, normal)), i.instance_number or 0, i.name), i)  # type: ignore[arg-type]
            for i in instances
        )
        return [i for _, i in keyed], [k[0] for k, _ in keyed], "position"
    if all(i.instance_number is not None for i in instances):
        return sorted(instances, key=lambda i: (i.instance_number, i.name)), None, "instance"
    return sorted(instances, key=lambda i: i.name), None, "name"


def gap_warnings(positions: Sequence[float]) -> list[str]:
    """Missing slices (a step well above the typical spacing) and duplicated positions."""
    if len(positions) < 3:
        return []
    steps = np.diff(np.asarray(positions, dtype=float))
    spacing = float(np.median(steps))
    out = []
    if spacing <= 1e-6:
        return ["Most slices share one position: this does not look like one volume."]
    duplicates = int(np.sum(steps <= 1e-3 * spacing))
    if duplicates:
        out.append(f"{duplicates} slice(s) repeat the position of the slice before them.")
    for k in np.flatnonzero(steps > GAP_FACTOR * spacing):
        missing = round(float(steps[k]) / spacing) - 1
        out.append(
            f"About {max(missing, 1)} slice(s) appear to be missing between slice {k + 1} and "
            f"slice {k + 2} (a {steps[k]:.1f} mm step; the series spacing is {spacing:.1f} mm)."
        )
    return out
