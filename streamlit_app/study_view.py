"""The study view: a whole series (DICOM files, a zip, a multi-frame DICOM, NIfTI) on one page.

A radiologist reads a series, not a slice, so an upload that *is* a series gets one answer for
the study — the aggregation rule's verdict, in words, with its reason — and the evidence behind
it: counts per outcome, the reader's warnings, the key slices first in a strip of thumbnails, and
a slider through the volume with the chosen slice's Grad-CAM overlay (:mod:`gradcam_view`).

Reading is :func:`tumorlib.studies.readers.read_series`, classification
:func:`serving.clients.study. classify_series` through the page's one
:class:`serving.clients.backend.Backend`; this module only routes uploads and shows results. Single
JPEG/PNG/DICOM slices, and any upload mixing images with other files, keep the per-file view in
``app.py``.

Everything stays in the session's memory: the series and its results are cached there (keyed by
a hash of the uploads, the backend and the version) so moving a slider does not classify the
series again. Patient tags are shown only when the user turns on "Show patient tags"; file names
and header values are never logged.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Sequence

import streamlit as st

from serving.clients.backend import Backend, BackendError
from serving.clients.study import classify_series
from streamlit_app import gradcam_view, report_view, similar_view, study_results
from streamlit_app.results import display_name
from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.contracts.serving_contract import (
    DISCLAIMER,
    NOT_BRAIN_MRI_MESSAGE,
    UNFAMILIAR_MESSAGE,
)
from tumorlib.inputs.dicom import DICOM_SUFFIXES, is_dicom, silence_pydicom_logging
from tumorlib.studies.readers import StudyError, read_series
from tumorlib.studies.study import (
    SLICE_CLASSIFIED,
    SLICE_FAILED,
    SLICE_NOT_BRAIN_MRI,
    SLICE_UNCERTAIN,
    SliceOutcome,
    StudyResult,
)
from tumorlib.studies.study import verdict_words as study_verdict_words
from tumorlib.studies.verdict import NO_TUMOR

ARCHIVE_SUFFIXES = (".zip",)
NIFTI_SUFFIXES = (".nii", ".nii.gz")
# What the uploader accepts: slices as before, plus a series as a zip or a NIfTI volume.
UPLOAD_TYPES = ["jpg", "jpeg", "png", "dcm", "dicom", "zip", "nii", "nii.gz"]
RESULTS_KEY = "study_results"  # session: (upload key, results) of the latest study only
MAX_THUMBNAILS = 12
THUMBNAILS_PER_ROW = 6
NO_USABLE_SLICES = "No usable slices — the study was not classified"
OUTCOME_WORDS = {
    SLICE_UNCERTAIN: "uncertain",
    SLICE_NOT_BRAIN_MRI: "not a brain MRI",
    SLICE_FAILED: "failed",
}
_OUTCOME_RANK = {SLICE_CLASSIFIED: 0, SLICE_UNCERTAIN: 1, SLICE_NOT_BRAIN_MRI: 2, SLICE_FAILED: 3}


def is_study(uploads: Sequence[tuple[str, bytes]]) -> bool:
    """True when the upload is a series: only DICOM, zip or NIfTI files, more than one slice.

    A zip or NIfTI file is always a study; DICOM is one when there are several files or one
    multi-frame file. Images mixed with other files keep the per-file view.
    """
    kinds = [_kind(name, data) for name, data in uploads]
    if not kinds or None in kinds:
        return False
    if any(kind != "dicom" for kind in kinds):
        return True
    return len(kinds) > 1 or _frames(uploads[0][1]) > 1


def _kind(name: str, data: bytes) -> str | None:
    lower = name.lower()
    if lower.endswith(ARCHIVE_SUFFIXES):
        return "archive"
    if lower.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if lower.endswith(DICOM_SUFFIXES) or is_dicom(data):
        return "dicom"
    return None


def _frames(data: bytes) -> int:
    """NumberOfFrames from the header alone; 1 when unreadable (the per-file view says why)."""
    import pydicom

    silence_pydicom_logging()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's warnings may quote header values
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            return int(ds.get("NumberOfFrames", 1) or 1)
    except Exception:  # noqa: BLE001 - malformed: not a study, the single-file path explains
        return 1


def analyse(
    uploads: Sequence[tuple[str, bytes]], backend: Backend, version: int | None
) -> list[StudyResult] | str:
    """Read and classify every series of the upload once per session; a string says why not."""
    key = _upload_key(uploads, backend.label, version)
    cached = st.session_state.get(RESULTS_KEY)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        series = read_series(uploads, decode=False)  # decoded while classifying
    except StudyError as err:
        return f"This study cannot be read: {err.message}"
    total = sum(s.n_slices for s in series) or 1
    bar = st.progress(0.0, text=f"Classifying {total} slice(s)...")
    done = [0]

    def progress(n: int) -> None:
        done[0] += n
        bar.progress(min(1.0, done[0] / total), text=f"Classified {done[0]} of {total} slices")

    try:
        results = [classify_series(s, backend, version, progress=progress) for s in series]
    except BackendError as err:
        return f"No predictions: {err.message}"
    finally:
        bar.empty()
    st.session_state[RESULTS_KEY] = (key, results)
    return results


def _upload_key(uploads: Sequence[tuple[str, bytes]], label: str, version: int | None) -> str:
    digest = hashlib.sha256(f"{label}\0{version}".encode())
    for name, data in uploads:
        digest.update(hashlib.sha256(name.encode()).digest() + hashlib.sha256(data).digest())
    return digest.hexdigest()


def show(
    uploads: Sequence[tuple[str, bytes]],
    backend: Backend | None,
    version: int | None,
) -> None:
    """The study view for ``uploads`` (``(name, bytes)``: the uploader's files or a series
    retrieved from the PACS); the page has already said why when there is no backend."""
    if backend is None:
        return
    results = analyse(uploads, backend, version)
    if isinstance(results, str):
        st.error(results)
        return
    if not results:
        st.error(f"#### {NO_USABLE_SLICES}: the upload holds no image slices.")
        return
    index = 0
    if len(results) > 1:
        index = st.selectbox(
            f"Series ({len(results)} in this upload)",
            range(len(results)),
            format_func=lambda i: series_label(results[i], i),
            key="study_series",
        )
    show_result(results[index], index, backend, version)


def series_label(result: StudyResult, index: int) -> str:
    """Technical facts only: modality, description, slice count, verdict."""
    series = result.series
    parts = [series.modality or series.kind.upper(), series.description or f"series {index + 1}"]
    return f"{index + 1}. {' · '.join(parts)} · {series.n_slices} slices · {verdict_words(result)}"


def verdict_words(result: StudyResult) -> str:
    """The study verdict in plain words: a class, "uncertain — refer", or no usable slices."""
    verdict = result.verdict
    if verdict.n_classified + verdict.n_uncertain == 0:
        return NO_USABLE_SLICES
    return study_verdict_words(verdict.verdict)


def show_result(result: StudyResult, index: int, backend: Backend, version: int | None) -> None:
    """Verdict first, then counts, warnings, patient tags, thumbnails, the volume, downloads."""
    verdict = result.verdict
    words = verdict_words(result)
    if words == NO_USABLE_SLICES:
        st.error(f"#### Study: {words}")
    else:
        st.markdown(f"#### Study: {words}")
    st.markdown(verdict.reason)
    if verdict.probabilities:
        st.caption(scores_text(verdict.probabilities))
    st.caption(f"{DISCLAIMER} Model version {result.model_version or version} · {backend.label}")
    with st.expander("How the study verdict is reached"):
        st.caption(f"Rule: {verdict.rule}")
    show_counts(result)
    for warning in reader_warnings(result):
        st.warning(warning)
    if result.series.kind == "dicom":
        study_results.show_patient_tags(result.series, index)
    show_thumbnails(result)
    show_volume(result, index, backend, version)
    if result.series.kind == "dicom":
        study_results.download_button(result, backend, version, index)
    report_view.show_study(result, backend, version, index)  # the PDF for the record


def scores_text(scores: dict[str, float]) -> str:
    """The rule's study-level scores, named as what they are (not calibrated probabilities)."""
    shown = " · ".join(f"{display_name(n)}: {scores.get(n, 0.0):.2f}" for n in CLASS_NAMES)
    return f"Study scores (from the key slices; not calibrated probabilities): {shown}"


def show_counts(result: StudyResult) -> None:
    verdict = result.verdict
    counts = [
        ("Slices classified", verdict.n_classified),
        ("Slices uncertain", verdict.n_uncertain),
        ("Slices not a brain MRI", verdict.n_not_brain_mri),
        ("Slices failed", verdict.n_failed),
    ]
    for column, (label, value) in zip(st.columns(len(counts)), counts):
        column.metric(label, value)
    unfamiliar = sum(
        1 for s in result.slices if s.familiar is False and s.outcome != SLICE_NOT_BRAIN_MRI
    )
    if unfamiliar:
        st.warning(f"{unfamiliar} of {verdict.n_slices} slices: {UNFAMILIAR_MESSAGE}.")


def reader_warnings(result: StudyResult) -> list[str]:
    """The reader's own warnings, then every slice it refused (with the policy's words)."""
    warnings_ = list(result.series.warnings)
    refused = [s for s in result.series.slices if s.problem]
    for item in refused[:5]:
        warnings_.append(f"{item.ref.label or f'slice {item.ref.index + 1}'}: {item.problem}")
    if len(refused) > 5:
        warnings_.append(f"... and {len(refused) - 5} more slices refused.")
    return warnings_


def evidence_order(result: StudyResult) -> list[int]:
    """Positions in ``result.slices``: the verdict's key slices first, then answered slices by
    the rule's tumour evidence (1 - p(no tumour)), then the rest in volume order."""
    position = {outcome.ref.index: i for i, outcome in enumerate(result.slices)}
    keys = [position[k] for k in result.verdict.key_slices if k in position]

    def strength(i: int) -> tuple:
        outcome = result.slices[i]
        evidence = 1.0 - (outcome.probabilities or {}).get(NO_TUMOR, 1.0)
        return (_OUTCOME_RANK.get(outcome.outcome, 4), -evidence, outcome.ref.index)

    taken = set(keys)
    return keys + sorted((i for i in range(len(result.slices)) if i not in taken), key=strength)


def slice_words(outcome: SliceOutcome) -> str:
    """One slice's answer in a few words (thumbnail captions, the chosen slice)."""
    if outcome.outcome == SLICE_CLASSIFIED and outcome.class_name:
        return f"{display_name(outcome.class_name)} {outcome.confidence or 0:.0%}"
    if outcome.outcome == SLICE_UNCERTAIN and outcome.class_name:
        return f"uncertain ({display_name(outcome.class_name)} {outcome.confidence or 0:.0%})"
    return OUTCOME_WORDS.get(outcome.outcome, outcome.outcome)


def _slice_name(result: StudyResult, i: int) -> str:
    """The reader's label ("slice 12 / 40", with the frame for multi-frame files)."""
    ref = result.slices[i].ref
    return ref.label or f"slice {ref.index + 1} / {result.series.n_slices}"


def show_thumbnails(result: StudyResult) -> None:
    order = evidence_order(result)[:MAX_THUMBNAILS]
    images = {s.ref.index: s.image for s in result.series.slices}
    st.markdown(
        f"**Slices by evidence** (key slices first; {len(order)} of {len(result.slices)} shown)"
    )
    for start in range(0, len(order), THUMBNAILS_PER_ROW):
        row = order[start : start + THUMBNAILS_PER_ROW]
        for column, i in zip(st.columns(THUMBNAILS_PER_ROW), row):
            outcome = result.slices[i]
            caption = f"{_slice_name(result, i)}: {slice_words(outcome)}"
            if outcome.ref.index in result.verdict.key_slices:
                caption = f"★ {caption}"
            image = images.get(outcome.ref.index)
            if image:
                column.image(image, caption=caption, width="stretch")
            else:
                column.caption(caption)


def show_volume(result: StudyResult, index: int, backend: Backend, version: int | None) -> None:
    """A slider through the volume; the chosen slice with its answer and Grad-CAM overlay."""
    n = len(result.slices)
    first = evidence_order(result)[0] if n else 0
    chosen = first
    if n > 1:
        chosen = (
            st.slider("Slice", 1, n, value=first + 1, key=f"study_slice_{index}", format="%d") - 1
        )
    outcome = result.slices[chosen]
    study_slice = next((s for s in result.series.slices if s.ref.index == outcome.ref.index), None)
    image = study_slice.image if study_slice else b""
    left, right = st.columns([1, 1])
    with left:
        if image:
            where = outcome.ref.position
            place = f" · {where:.1f} mm along the slice normal" if where is not None else ""
            st.image(image, caption=f"{_slice_name(result, chosen)}{place}", width=320)
    with right:
        st.markdown(f"**{_slice_name(result, chosen)}: {slice_words(outcome)}**")
        if outcome.outcome == SLICE_NOT_BRAIN_MRI:
            st.caption(f"{NOT_BRAIN_MRI_MESSAGE}.")
        if outcome.message:
            st.caption(outcome.message)
        if image and outcome.outcome in (SLICE_CLASSIFIED, SLICE_UNCERTAIN):
            show_gradcam(image, outcome, index, backend, version)
    if image and outcome.outcome in (SLICE_CLASSIFIED, SLICE_UNCERTAIN):
        similar_view.show(f"study_{index}", image, backend, version)


def show_gradcam(
    image: bytes, outcome: SliceOutcome, index: int, backend: Backend, version: int | None
) -> None:
    """The chosen slice's Grad-CAM (on by default here: one slice, cached per session)."""
    if not st.checkbox(
        "Show regions that drove the prediction", value=True, key=f"study_gradcam_{index}"
    ):
        return
    gradcam_view.show(
        image,
        backend,
        version,
        uncertain=outcome.outcome == SLICE_UNCERTAIN,
        slider_key=f"study_gradcam_opacity_{index}",
    )
