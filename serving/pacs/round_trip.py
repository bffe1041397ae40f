"""The PACS round trip: pick a study's MR series, retrieve each, classify it as a volume, and
store its SR and Grad-CAM captures back into the study.

Why apart from :mod:`serving.pacs.dicomweb`: that module talks DICOMweb; this one composes it with
the study reader, a model backend and the DICOM results (``docs/pacs.md``). The PACS is asked
which series to classify before a model is loaded, so a missing study costs one QIDO call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from serving.clients.backend import Backend
from serving.clients.study import classify_series
from serving.pacs.capture import make_secondary_captures
from serving.pacs.dicomweb import IMAGE_MODALITY, Pacs, PacsError, SeriesSummary
from serving.pacs.results import overlays_for
from serving.pacs.sr import make_structured_report
from tumorlib.contracts.display import printable
from tumorlib.inputs import policy
from tumorlib.studies.readers import read_series
from tumorlib.studies.study import StudyResult


@dataclass
class SeriesReport:
    """What happened to one series: its verdict and the results stored (SOP instance UIDs)."""

    series_uid: str
    description: str
    result: StudyResult = field(repr=False)
    stored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # Grad-CAM missing, series warnings
    pdf_uid: str | None = None  # the Encapsulated PDF report among ``stored``


def choose_series(pacs: Pacs, study_uid: str, series_uid: str | None = None) -> list[SeriesSummary]:
    """The series to classify: the one asked, else every MR series; asked of the PACS before any
    model is loaded, so a missing study or one without MR series costs one QIDO call."""
    candidates = pacs.list_series(study_uid)
    if not candidates:
        raise PacsError(
            f"The PACS at {pacs.display_url} has no study {printable(study_uid)} (it lists no "
            "series for it): check the StudyInstanceUID (tumorlib pacs studies lists them)."
        )
    if series_uid is not None:
        chosen = [s for s in candidates if s.series_uid == series_uid]
        if not chosen:
            raise PacsError(
                f"Study {printable(study_uid)} has no series {printable(series_uid)} at "
                f"{pacs.display_url}."
            )
        if chosen[0].modality != IMAGE_MODALITY:
            raise PacsError(
                f"Series {printable(series_uid)} is {chosen[0].modality or 'of no modality'}, "
                f"not {IMAGE_MODALITY}: only MR series are classified."
            )
        return chosen
    chosen = [s for s in candidates if s.modality == IMAGE_MODALITY]
    if not chosen:
        found = ", ".join(sorted({s.modality or "?" for s in candidates}))
        raise PacsError(
            f"Study {printable(study_uid)} has no {IMAGE_MODALITY} series to classify "
            f"(modalities: {found})."
        )
    return chosen


def classify_study(
    pacs: Pacs,
    study_uid: str,
    backend: Backend,
    version: int | None,
    *,
    series_uid: str | None = None,
    store: bool = True,
    chosen: Sequence[SeriesSummary] | None = None,
    report: bool = True,
) -> list[SeriesReport]:
    """Classify the study's MR series (or the one asked) and store the results in the study.

    Each series: WADO-RS into memory, read as a volume
    (:func:`tumorlib.studies.readers.read_series`), classified
    (:func:`serving.clients.study.classify_series`), its SR and Grad-CAM captures built
    (:mod:`serving.pacs.results`) and, with ``store``, sent back by STOW-RS. ``chosen``: the
    series :func:`choose_series` already picked. ``report``: the PDF report too, as an
    Encapsulated PDF beside the SR (:mod:`serving.pacs.report_pdf`).
    """
    if chosen is None:
        chosen = choose_series(pacs, study_uid, series_uid)
    return [
        _classify_one(pacs, study_uid, summary, backend, version, store, report)
        for summary in chosen
    ]


def _pdf_document(result: StudyResult, backend: Backend, version, overlays, sr) -> tuple:
    """The study's PDF report as an Encapsulated PDF referencing ``sr``; on failure, a note (the
    SR and captures are stored regardless)."""
    from serving.pacs.report_pdf import make_encapsulated_pdf
    from serving.reporting.build import study_pdf

    try:
        pdf = study_pdf(backend, result, version, overlays=overlays)
        return make_encapsulated_pdf(result, pdf, references=[sr]), None
    except Exception as err:  # noqa: BLE001 - never a header value: the type only
        return None, f"no PDF report ({type(err).__name__})"


def _classify_one(
    pacs: Pacs,
    study_uid: str,
    summary: SeriesSummary,
    backend: Backend,
    version: int | None,
    store: bool,
    with_pdf: bool = True,
) -> SeriesReport:
    files = pacs.retrieve_series(study_uid, summary.series_uid)
    try:
        series = [s for s in read_series(files, decode=False) if s.kind == "dicom"]
    except policy.InputRejected as err:
        raise PacsError(f"Series {summary.series_uid} cannot be read: {err.message}") from None
    if len(series) != 1:
        raise PacsError(f"Series {summary.series_uid} did not read as one DICOM series.")
    result = classify_series(series[0], backend, version)
    overlays, missing = overlays_for(result, backend, version)
    try:
        datasets = [make_structured_report(result), *make_secondary_captures(result, overlays)]
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        # Never the library's message: it may quote a header value (a malformed birth date).
        raise PacsError(
            f"The results of series {summary.series_uid} could not be built as DICOM "
            f"({type(err).__name__}): its headers are not valid enough to copy."
        ) from None
    report = SeriesReport(summary.series_uid, summary.description, result)
    report.notes += [*series[0].warnings, *(f"no Grad-CAM for {m}" for m in missing)]
    if with_pdf:
        document, note = _pdf_document(result, backend, version, overlays, datasets[0])
        if document is not None:
            datasets.append(document)
            report.pdf_uid = str(document.SOPInstanceUID)
        report.notes += [note] if note else []
    if store:
        report.stored = pacs.store(datasets)
    return report
