"""A study's DICOM results: the SR with the verdict and Grad-CAM Secondary Captures of its key
slices, built in memory and written only where the user asks.

Why here (``serving``): the Grad-CAM comes from the model through
:class:`serving.clients.backend.Backend` (in-process or TF Serving), and the PACS client
(:mod:`serving.pacs.dicomweb`), the page's download button and ``tumorlib study`` all need the same
objects. The SR is built by :mod:`serving.pacs.sr`, the captures by :mod:`serving.pacs.capture`.
Patient data stays in the datasets: nothing here logs or prints a header value, and files are
written only by :func:`write_study_results`.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
from pydicom import Dataset

from serving.clients.backend import Backend
from serving.clients.prediction import Explanation
from serving.pacs.capture import make_secondary_captures
from serving.pacs.sr import DicomResultsError, make_structured_report, require_dicom
from tumorlib.studies.study import StudyResult

__all__ = [
    "DicomResultsError",
    "make_secondary_captures",
    "make_structured_report",
    "overlays_for",
    "study_result_datasets",
    "to_bytes",
    "write_study_results",
]

log = logging.getLogger(__name__)
OVERLAY_OPACITY = 0.4  # the page's default


def overlays_for(
    result: StudyResult, backend: Backend, version: int | None
) -> tuple[dict[int, np.ndarray], list[str]]:
    """Grad-CAM overlays (uint8 RGB) of the key slices by slice index, and why any are missing.

    A model without Grad-CAM still gets its SR: the reasons come back instead of an error.
    """
    from tumorlib.model.gradcam_overlay import overlay_image  # TensorFlow, only when drawing

    images = {s.ref.index: s.image for s in result.series.slices}
    overlays: dict[int, np.ndarray] = {}
    missing: list[str] = []
    for index in result.verdict.key_slices:
        image = images.get(index, b"")
        answer = backend.explain(image, version) if image else "the slice has no image"
        if isinstance(answer, Explanation):
            overlays[index] = overlay_image(image, answer.heatmap, OVERLAY_OPACITY)
        else:
            missing.append(f"slice {index + 1}: {answer}")
    return overlays, missing


def study_result_datasets(
    result: StudyResult, backend: Backend, version: int | None
) -> list[Dataset]:
    """The SR first, then one Secondary Capture per key slice with a Grad-CAM; not written."""
    require_dicom(result)  # the clear NIfTI error before any Grad-CAM is computed
    overlays, missing = overlays_for(result, backend, version)
    for reason in missing:  # the backend's words about the model, never header values
        log.warning("no Grad-CAM capture for %s", reason)
    return [make_structured_report(result), *make_secondary_captures(result, overlays)]


def to_bytes(ds: Dataset) -> bytes:
    """A dataset as a DICOM Part 10 file in memory (the page offers it for download)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def file_name(ds: Dataset) -> str:
    """``SR_<uid>.dcm`` / ``SC_<uid>.dcm``: UIDs only, nothing identifying in the name."""
    kind = "SR" if ds.Modality == "SR" else "SC"
    return f"{kind}_{ds.SOPInstanceUID}.dcm"


def write_study_results(
    result: StudyResult, backend: Backend, version: int | None, out_dir: Path
) -> list[Path]:
    """Build the SR and the Secondary Captures and write them as ``.dcm`` files in ``out_dir``."""
    datasets = study_result_datasets(result, backend, version)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = out_dir / file_name(ds)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
