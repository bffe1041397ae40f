"""The page's "report" button: a PDF for the record, per answered slice or per study.

Built on request (the Grad-CAM and similar cases it prints are asked of the same backend and
version, or reused from the session), in memory, and offered with ``st.download_button``;
nothing is written to disk. The audit record id comes from the page's audit
(:mod:`streamlit_app.feedback`). Patient identifiers go into a study's PDF only when a signed-in
user switches them on; a slice's PDF never carries the upload's file name.
"""

from __future__ import annotations

import hashlib
from typing import Any

import streamlit as st

from serving.audit import backend_name
from serving.clients.prediction import NOT_BRAIN_MRI, SimilarCases
from streamlit_app import similar_view
from streamlit_app.feedback import RECORDS_KEY

PDFS_KEY = "report_pdfs"
MIME = "application/pdf"


def _audit_id(data: bytes, context: Any) -> str | None:
    key = (hashlib.sha256(data).hexdigest(), backend_name(context.backend), context.version)
    return st.session_state.get(RECORDS_KEY, {}).get(key)


def show(files: list, checked: list, results: list, context: Any) -> None:
    """One "Prepare PDF report" button per answered slice; its download once built."""
    from serving.reporting.build import case_pdf

    backend = context.backend
    answered = [i for i, r in enumerate(results) if r.prediction is not None]
    if backend is None or not answered:
        return
    st.subheader("Report for the record")
    built: dict = st.session_state.setdefault(PDFS_KEY, {})
    for number, index in enumerate(answered, start=1):
        data, prediction = checked[index].data, results[index].prediction
        key = (hashlib.sha256(data).hexdigest(), backend.label, context.version)
        if st.button(f"Prepare PDF report: image {number}", key=f"report_make_{index}"):
            similar = None
            if prediction.verdict != NOT_BRAIN_MRI and similar_view.index_info(
                backend, context.version
            ).get("available"):
                found = similar_view.similar_for(backend, context.version, data)
                similar = found if isinstance(found, SimilarCases) else None
            with st.spinner("Writing the report..."):
                built[key] = case_pdf(
                    backend, data, prediction, context.version, similar=similar,
                    audit_id=_audit_id(data, context), title=f"Image {number}",
                )  # fmt: skip
        if key in built:
            st.download_button(
                f"Download report (PDF): image {number}", built[key],
                file_name=f"report-image-{number}.pdf", mime=MIME, key=f"report_get_{index}",
            )  # fmt: skip


def show_study(result: Any, backend: Any, version: int | None, index: int) -> None:
    """The study's PDF: a button, then its download. Patient tags go in only when the user has
    shown them ("Show patient tags") and then asks for them in the report too."""
    from serving.reporting.build import study_pdf
    from streamlit_app.study_results import patient_tags

    patient = None
    if st.session_state.get(f"study_patient_tags_{index}") and st.toggle(
        "Include the patient tags in the PDF report", value=False, key=f"report_patient_{index}"
    ):
        patient = patient_tags(result.series) or None
    key = ("study", index, id(result), backend.label, version, patient is not None)
    built: dict = st.session_state.setdefault(PDFS_KEY, {})
    if st.button("Prepare PDF report of the study", key=f"report_make_study_{index}"):
        with st.spinner("Writing the report..."):
            built[key] = study_pdf(backend, result, version, patient=patient)
    if key in built:
        st.download_button(
            "Download study report (PDF)", built[key], file_name="study-report.pdf", mime=MIME,
            key=f"report_get_study_{index}",
        )  # fmt: skip
