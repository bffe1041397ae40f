"""Reports through any backend: ask for the evidence a report shows, then render it.

The page, ``tumorlib predict --report``, ``tumorlib study --report`` and ``tumorlib pacs`` all
build reports here, so a case or a study reads the same wherever it was made. The Grad-CAM and
the similar cases come from the same served version as the answer; what a backend cannot give
(an old export without an index) is left out of the report, never invented.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from serving.clients.backend import Backend
from serving.clients.prediction import NOT_BRAIN_MRI, Explanation, Prediction, SimilarCases
from serving.reporting.content import case_report, study_report
from serving.reporting.pdf import render_pdf

DEFAULT_SIMILAR = 5


def _metadata(backend: Backend, version: int | None) -> Mapping[str, Any]:
    try:
        return backend.metadata(version)
    except Exception:  # noqa: BLE001 - the report still has the answer; it says less
        return {}


def evidence(
    backend: Backend, image: bytes, version: int | None, k: int
) -> tuple[np.ndarray | None, SimilarCases | None]:
    """The heatmap and the ``k`` similar cases of one slice (None for what is unavailable)."""
    explained = backend.explain(image, version)
    heatmap = explained.heatmap if isinstance(explained, Explanation) else None
    found = backend.similar(image, k, version) if k > 0 else None
    return heatmap, found if isinstance(found, SimilarCases) else None


def case_pdf(
    backend: Backend,
    image: bytes,
    prediction: Prediction,
    version: int | None,
    *,
    k: int = DEFAULT_SIMILAR,
    audit_id: str | None = None,
    patient: Mapping[str, str] | None = None,
    title: str = "Image",
    heatmap: np.ndarray | None = None,
    similar: SimilarCases | None = None,
) -> bytes:
    """The PDF of one answered slice; evidence already at hand is reused, not asked again."""
    if prediction.verdict != NOT_BRAIN_MRI and (heatmap is None or similar is None):
        asked_heatmap, asked_similar = evidence(backend, image, version, k)
        heatmap = heatmap if heatmap is not None else asked_heatmap
        similar = similar if similar is not None else asked_similar
    report = case_report(
        prediction, image, _metadata(backend, version), heatmap=heatmap,
        similar=None if similar is None else similar.first(k), audit_id=audit_id,
        patient=patient, backend=backend.label, title=title,
    )  # fmt: skip
    return render_pdf(report)


def study_pdf(
    backend: Backend,
    result: Any,
    version: int | None,
    *,
    k: int = DEFAULT_SIMILAR,
    overlays: Mapping[int, np.ndarray] | None = None,
    audit_ids: Sequence[str] = (),
    patient: Mapping[str, str] | None = None,
) -> bytes:
    """The PDF of a classified series (:class:`tumorlib.studies.study.StudyResult`): each key
    slice with its Grad-CAM (``overlays`` already drawn, else asked) and similar cases."""
    images = {s.ref.index: s.image for s in result.series.slices}
    heatmaps: dict[int, np.ndarray] = {}
    similar: dict[int, SimilarCases] = {}
    for index in result.verdict.key_slices:
        if not images.get(index):
            continue
        if overlays is None or index not in overlays:
            heatmap, _ = evidence(backend, images[index], version, 0)
            if heatmap is not None:
                heatmaps[index] = heatmap
        found = backend.similar(images[index], k, version) if k > 0 else None
        if isinstance(found, SimilarCases):
            similar[index] = found
    report = study_report(
        result, images, _metadata(backend, version), heatmaps=heatmaps, similar=similar,
        audit_ids=audit_ids, patient=patient, backend=backend.label,
    )  # fmt: skip
    if overlays:
        from dataclasses import replace

        report = replace(
            report,
            entries=[
                replace(e, overlay=overlays.get(i)) if i in overlays else e
                for e, i in zip(report.entries, result.verdict.key_slices)
            ],
        )
    return render_pdf(report)
