"""The page's audit: record every answer, and let a radiologist agree, correct or keep it.

Records go through :class:`serving.audit.AuditLog` (a background writer, cached per process), so
showing an answer never waits on the database; when it is unreachable the page says so and the
records wait in the spool. A record is made once per image, model version and backend in a
session: Streamlit reruns the script on every click, and a rerun is not a new prediction. Image
pixels are stored only when the user turns on the consent switch, re-encoded without any metadata.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Mapping
from typing import Any

import streamlit as st

from serving.audit import AuditLog, AuditSettings, Input, backend_name, resolve
from serving.clients.prediction import NOT_BRAIN_MRI
from tumorlib.contracts.classes import CLASS_NAMES, DISPLAY_NAMES

log = logging.getLogger(__name__)

RECORDS_KEY = "audit_records"  # session: (sha256, backend, version) -> record id
GIVEN_KEY = "audit_feedback_given"  # session: record ids with feedback
SECRET_SOP_UID = "audit_sop_uid"  # true: also record a salted hash of the DICOM SOP UID
VERDICT_LABELS = {
    "agree": "Agree",
    "disagree": "Disagree (give the correct class)",
    "not_assessable": "Not assessable",
}
CONSENT = (
    "Keep this image for retraining. I confirm the image may be stored: its pixels only, "
    "re-encoded without any file or DICOM metadata, in the audit database."
)


def settings(secrets: Mapping[str, Any]) -> AuditSettings:
    return resolve(secrets, os.environ)


@st.cache_resource(show_spinner=False, max_entries=2)
def audit_log(url: str, _settings: AuditSettings) -> AuditLog:
    """One background writer per database and process (shared by all sessions)."""
    return AuditLog(_settings)


def current_user(secrets: Mapping[str, Any]) -> str | None:
    """The signed-in user (``st.user``) when ``[auth]`` is configured; else nobody."""
    if "auth" not in secrets or not getattr(st.user, "is_logged_in", False):
        return None
    return st.user.get("email") or st.user.get("name") or None


def _sop_uid(upload: bytes) -> str | None:
    """The SOP Instance UID of a DICOM upload, and no other tag; None for other files."""
    from tumorlib.inputs.dicom import is_dicom

    if not is_dicom(upload):
        return None
    import pydicom

    try:
        dataset = pydicom.dcmread(
            io.BytesIO(upload), stop_before_pixels=True, specific_tags=["SOPInstanceUID"]
        )
    except Exception:  # noqa: BLE001 - no UID, no hash
        return None
    uid = dataset.get("SOPInstanceUID")
    return str(uid) if uid else None


def record_answers(audit: AuditLog, files: list, results: list, context: Any, **kw: Any) -> dict:
    """Record each answered upload once per session; returns ``{file index: record id}``."""
    known: dict = st.session_state.setdefault(RECORDS_KEY, {})
    backend = context.backend
    name = backend_name(backend)
    ids: dict[int, str] = {}
    todo = []
    for index, (file, result) in enumerate(zip(files, results)):
        if result.prediction is None:
            continue
        upload = file.getvalue()
        key = (hashlib.sha256(upload).hexdigest(), name, context.version)
        if key in known:
            ids[index] = known[key]
            continue
        uid = _sop_uid(upload) if kw.get("sop_uid") else None
        todo.append((index, key, result.prediction, Input(upload, None, uid)))
    if todo:
        new = audit.record(
            backend, context.version, [(p, item) for _, _, p, item in todo],
            source="page", user=kw.get("user"),
        )  # fmt: skip
        for (index, key, _, _), record_id in zip(todo, new):
            known[key] = ids[index] = record_id
    return ids


def show_status(audit: AuditLog) -> None:
    status = audit.status()
    if status.ok:
        return
    waiting = status.pending + status.spooled
    st.warning(
        f"The audit database ({audit.settings.safe_url}) cannot be written "
        f"({status.last_error or 'not reachable'}): {waiting} record(s) are waiting and will be "
        "written when it is back. The predictions shown are not affected."
    )


def show(files: list, checked: list, results: list, context: Any, secrets: Mapping) -> None:
    """Record the answers shown, then one feedback form per answered image."""
    config = settings(secrets)
    if not config.enabled or context.backend is None:
        return
    try:
        audit = audit_log(config.url, config)
        user = current_user(secrets)
        ids = record_answers(
            audit, files, results, context, user=user, sop_uid=bool(secrets.get(SECRET_SOP_UID))
        )
    except Exception as err:  # noqa: BLE001 - the audit must never hide an answer
        log.warning("audit: recording failed (%s)", type(err).__name__)
        st.warning(f"Predictions could not be recorded for audit ({type(err).__name__}).")
        return
    show_status(audit)
    answered = [
        i
        for i in ids
        if results[i].prediction.verdict != NOT_BRAIN_MRI  # nothing to assess
    ]
    if not answered:
        return
    st.subheader("Radiologist feedback")
    st.caption(
        "Tied to this prediction's audit record: which model version answered, when, for whom. "
        "Do not type patient identifiers in the note."
    )
    for index in answered:
        feedback_form(audit, ids[index], files[index].name, checked[index].data, user)


def feedback_form(audit: AuditLog, record_id: str, name: str, data: bytes, user: str | None):
    """Agree / disagree with the correct class / not assessable; note; consent to keep."""
    given: set = st.session_state.setdefault(GIVEN_KEY, set())
    with st.expander(f"Feedback on {name}", expanded=record_id not in given):
        with st.form(key=f"feedback_{record_id}"):
            verdict = st.radio(
                "Your reading", list(VERDICT_LABELS), format_func=VERDICT_LABELS.get,
                key=f"verdict_{record_id}", horizontal=True,
            )  # fmt: skip
            corrected = st.selectbox(
                "Correct class (if you disagree)", CLASS_NAMES,
                format_func=DISPLAY_NAMES.get, key=f"corrected_{record_id}",
            )  # fmt: skip
            note = st.text_input("Note (optional)", max_chars=1000, key=f"note_{record_id}")
            keep = st.toggle(CONSENT, key=f"keep_{record_id}")
            submitted = st.form_submit_button("Submit feedback")
        if submitted:
            audit.feedback(
                record_id, verdict, corrected_class=corrected if verdict == "disagree" else None,
                note=note, user=user,
            )  # fmt: skip
            if keep:
                audit.keep_image(record_id, data, user=user)
            given.add(record_id)
        if record_id in given:
            st.success("Feedback recorded." + (" Image kept with your consent." if keep else ""))
