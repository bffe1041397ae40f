"""What the study view hands back: the patient tags on request, and DICOM results to download.

Patient tags are read from the series' in-memory headers only when the user turns "Show patient
tags" on (:func:`tumorlib.inputs.dicom.patient_info` with ``reveal=True`` — the deliberate act). The
DICOM SR and Grad-CAM Secondary Captures come from :mod:`serving.pacs.results`; the zip is built
in memory when the user clicks the button (Streamlit's deferred download), never on disk.
"""

from __future__ import annotations

import io
import logging
import zipfile

import streamlit as st

from serving.clients.backend import Backend
from serving.pacs.results import study_result_datasets, to_bytes
from tumorlib.inputs.dicom import patient_info
from tumorlib.studies.study import Series, StudyResult

log = logging.getLogger(__name__)

DOWNLOAD_LABEL = "Download DICOM SR + Grad-CAM captures"
ZIP_NAME = "tumorlib_study_results.zip"


def show_patient_tags(series: Series, index: int) -> None:
    """A switch, off by default; only then are identifying header values read out."""
    if not series.headers:
        return
    if not st.toggle("Show patient tags", value=False, key=f"study_patient_tags_{index}"):
        st.caption("Patient tags hidden.")
        return
    tags = patient_tags(series)
    if tags:
        st.table({"tag": list(tags), "value": list(tags.values())})
    else:
        st.caption("No patient tags in this series.")


def patient_tags(series: Series) -> dict[str, str]:
    """The first header's identifying fields, revealed (call only when the user asked)."""
    import pydicom

    header = series.headers[0]
    buffer = io.BytesIO()
    try:
        pydicom.dcmwrite(buffer, header, enforce_file_format=True)
        return patient_info(buffer.getvalue(), reveal=True)
    except Exception as err:  # noqa: BLE001 - values may be malformed; never quote them
        log.warning("patient tags could not be read (%s)", type(err).__name__)
        return {}


def results_zip(result: StudyResult, backend: Backend, version: int | None) -> bytes:
    """The SR and the Secondary Captures of ``result`` as one zip, built in memory."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for number, ds in enumerate(study_result_datasets(result, backend, version), start=1):
            kind = "SR" if getattr(ds, "Modality", "") == "SR" else "SC"
            archive.writestr(f"{number:03d}_{kind}.dcm", to_bytes(ds))
    return buffer.getvalue()


def _results_zip_in_words(result: StudyResult, backend: Backend, version: int | None) -> bytes:
    """:func:`results_zip` for the deferred download: Streamlit passes a failure's text to the
    browser, so it gets the error's type only (a message might quote a header value)."""
    try:
        return results_zip(result, backend, version)
    except Exception as err:  # noqa: BLE001 - reworded, never re-raised with its own text
        log.warning("DICOM results could not be built (%s)", type(err).__name__)
        raise RuntimeError(f"the DICOM results could not be built ({type(err).__name__})") from None


def download_button(result: StudyResult, backend: Backend, version: int | None, index: int) -> None:
    """One click builds and downloads the zip (deferred: nothing is computed until then)."""
    st.download_button(
        DOWNLOAD_LABEL,
        data=lambda: _results_zip_in_words(result, backend, version),
        file_name=ZIP_NAME,
        mime="application/zip",
        key=f"study_download_{index}",
        on_click="ignore",
        help="A DICOM Structured Report with the study verdict and per-slice results, and a "
        "Secondary Capture with the Grad-CAM overlay of each key slice, for the PACS.",
    )
