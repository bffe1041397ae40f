"""The upload page: ``tumorlib app`` (or ``streamlit run`` on this file, from any folder).

A clinician uploads one or several MRI slices (JPEG/PNG, or DICOM converted in memory) and sees,
for each, the image, the predicted class in plain words, the four probabilities, the model
version, and that this is a decision-support tool. When the model says so, the class is withheld:
"uncertain — refer to a radiologist" (confidence below the validation-chosen threshold) or "this
does not look like a brain MRI slice" (the input gate). On request, a Grad-CAM overlay shows the
regions that drove the prediction. The page only validates uploads and shows answers: the model
(over TF Serving REST or in-process, see :mod:`serving.clients.backend`) does all preprocessing.

Every failure is shown with ``st.error`` in words; the page never lets an exception escape to a
stack trace (``client.showErrorDetails = "none"`` in the ``.streamlit/config.toml`` beside this
file is the backstop). Uploads stay in memory: nothing here writes or logs them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import streamlit as st

from serving.clients.backend import Backend, BackendError, Health, SafetyInfo
from serving.clients.prediction import NOT_BRAIN_MRI, UNCERTAIN, Prediction
from streamlit_app import backend as backends
from streamlit_app import (
    feedback,
    gradcam_view,
    performance_view,
    report_view,
    similar_view,
    study_pacs,
    study_view,
)
from streamlit_app.results import (
    FileResult,
    display_name,
    probabilities_text,
    probability_chart,
    show_results_table,
)
from streamlit_app.validation import ValidatedImage, prepare_upload
from tumorlib.contracts.serving_contract import (
    DISCLAIMER,
    NOT_BRAIN_MRI_MESSAGE,
    UNCERTAIN_MESSAGE,
    UNFAMILIAR_MESSAGE,
)
from tumorlib.inputs.policy import MAX_IMAGE_BYTES, MAX_PIXELS, InputRejected

# The contract's one-line disclaimer (the batch CLI prints the same words), then why.
DISCLAIMER_TEXT = (
    f"**{DISCLAIMER}** The model's output is a probability estimate from a single 2D slice. It "
    "can be wrong and must be read by a qualified clinician together with the full study and the "
    "patient's history."
)
UPLOAD_KEY = "uploads"
URL_KEY = "serving_url"


def signed_in_or_login_prompt(secrets: dict) -> bool:
    """With an ``[auth]`` section in secrets.toml, only signed-in users see the page.

    Streamlit's own OIDC login (``st.login``); without ``[auth]`` the page relies on binding to
    127.0.0.1 (``.streamlit/config.toml``) or on an authenticating reverse proxy (docs/app.md).
    """
    if "auth" not in secrets:
        return True
    if getattr(st.user, "is_logged_in", False):
        with st.sidebar:
            st.caption(f"Signed in as {st.user.get('email') or st.user.get('name') or 'user'}")
            st.button("Log out", on_click=st.logout)
        return True
    st.info("Sign in to classify images.")
    if st.button("Log in"):
        try:
            st.login()
        except Exception as err:  # noqa: BLE001 - e.g. Authlib missing, incomplete [auth]
            st.error(f"Sign-in is configured but failed: {err}")
    return False


def sidebar() -> tuple[Backend | None, Health | None, str | None]:
    """Backend choice and health; returns (backend, health, error message)."""
    with st.sidebar:
        st.header("Model backend")
        try:  # only configured servers can be chosen: the page never fetches a typed URL
            urls = backends.configured_urls(_safe_secrets(), _environ())
        except BackendError as err:
            st.error(err.message)
            return None, None, err.message
        url = st.selectbox(
            "Model server",
            [*urls, ""],
            key=URL_KEY,
            format_func=lambda u: u or "In-process SavedModel (newest export)",
            help="Servers configured in `serving_urls` in .streamlit/secrets.toml or "
            f"${backends.ENV_URLS}; in-process runs the newest exported model inside this app.",
        )
        try:
            settings = backends.settings_from_environment(url)
            backend = backends.make_backend(settings)
        except BackendError as err:
            st.markdown(f"**Backend:** {_describe_settings(url)}")
            st.error(err.message)
            return None, None, err.message
        st.markdown(f"**Backend:** {backend.label}")
        try:
            with st.spinner("Checking model status..."):
                health = backend.health()
        except BackendError as err:
            st.error(f"Unhealthy: {err.message}")
            return backend, None, err.message
        st.success(health.message)
        st.caption(
            "Model status from the serving API. Predictions below are pinned to this version."
        )
        return backend, health, None


def _describe_settings(url: str | None) -> str:
    return f"TF Serving REST at {url.strip()}" if url and url.strip() else "In-process SavedModel"


def _safe_secrets() -> dict:
    try:
        return backends.read_secrets()
    except BackendError:
        return {}  # reported by settings_from_environment below


def _environ() -> dict[str, str]:
    return dict(os.environ)


def show_safety(safety: SafetyInfo) -> None:
    """Say in the sidebar which safety checks the served version makes (and which it lacks)."""
    if not safety.known:
        st.caption("Safety checks of this model version: unknown (metadata not readable).")
        return
    if safety.threshold is None:
        abstention = "none in this export: every answer is shown as a class"
    elif safety.threshold > 1.0:
        abstention = "every answer is withheld (the precision target was not reachable)"
    else:
        precision = safety.target_precision
        target = f" (chosen for ≥ {precision:.0%} precision)" if precision else ""
        abstention = f"answers below {safety.threshold:.1%} confidence are withheld{target}"
        if safety.class_thresholds:
            limits = ", ".join(
                f"{display_name(name)} {limit:.1%}"
                for name, limit in safety.class_thresholds.items()
            )
            abstention = (
                f"answers below their class's confidence threshold ({limits}) are withheld{target}"
            )
    gate = "on" if safety.gate else "none in this export: non-MRI images are not refused"
    gradcam = "available" if safety.explain else "not in this export"
    st.caption(
        f"**Abstention:** {abstention}.  \n**Input gate:** {gate}.  \n**Grad-CAM:** {gradcam}."
    )


def validate_all(files: list) -> list[ValidatedImage | InputRejected]:
    """Check (and for DICOM, convert) every upload against the policy's per-image limits (the
    upload cap in ``.streamlit/config.toml`` is larger, for series archives and volumes)."""
    max_bytes = min(int(st.get_option("server.maxUploadSize")) * 1024 * 1024, MAX_IMAGE_BYTES)
    checked: list[ValidatedImage | InputRejected] = []
    for file in files:
        try:
            checked.append(
                prepare_upload(
                    file.name, file.getvalue(), max_bytes=max_bytes, max_pixels=MAX_PIXELS
                )
            )
        except InputRejected as err:
            checked.append(err)
    return checked


def predict_all(
    files: list,
    checked: list[ValidatedImage | InputRejected],
    backend: Backend | None,
    health: Health | None,
    backend_error: str | None,
) -> list[FileResult]:
    """One :class:`FileResult` per file: a prediction, an upload error, or the backend's error."""
    label = backend.label if backend else ""
    version = health.version if health else None
    valid = [i for i, c in enumerate(checked) if isinstance(c, ValidatedImage)]
    outcomes: dict[int, object] = {}
    if valid and backend is not None and health is not None:
        try:
            answers = backend.predict([checked[i].data for i in valid], version)
            outcomes = dict(zip(valid, answers))
        except BackendError as err:
            backend_error = err.message
    results = []
    for i, (file, check) in enumerate(zip(files, checked)):
        if isinstance(check, InputRejected):
            results.append(FileResult(file.name, error=check.message, backend=label))
            continue
        answer = outcomes.get(i)
        if answer is None or isinstance(answer, str):
            error = answer or f"No prediction: {backend_error or 'the model is not available.'}"
            results.append(FileResult(file.name, error=error, backend=label, note=check.note))
            continue
        results.append(
            FileResult(
                file.name,
                prediction=answer,
                model_version=version,
                backend=label,
                note=check.note,
            )
        )
    return results


def show_file(
    index: int,
    file,
    check: ValidatedImage | InputRejected,
    result: FileResult,
    context: PageContext,
) -> None:
    """One upload: the image, then the answer (or why there is none), then Grad-CAM on request."""
    st.subheader(file.name)
    if isinstance(check, InputRejected):
        st.error(f"{file.name}: {check.message}")
        return
    left, right = st.columns([1, 2])
    with left:
        st.image(check.data, caption=f"{check.width} x {check.height} {check.format}")
    with right:
        if check.note:
            st.info(check.note)
        if result.prediction is None:
            st.error(f"{file.name}: {result.error}")
            return
        show_answer(result, context.safety)
        st.caption(f"Model version {result.model_version} · {result.backend} · {DISCLAIMER}")
    if result.prediction.verdict != NOT_BRAIN_MRI:
        show_gradcam(index, check.data, result.prediction, context)
        similar_view.show(index, check.data, context.backend, context.version)


def show_answer(result: FileResult, safety: SafetyInfo) -> None:
    """The class, or "uncertain", or "not a brain MRI slice" — the model's verdict decides."""
    prediction = result.prediction
    assert prediction is not None
    confidence = prediction.probabilities[prediction.class_name]
    if prediction.verdict == NOT_BRAIN_MRI:
        st.error(f"#### {NOT_BRAIN_MRI_MESSAGE}.")
        st.caption(
            f"Input-gate score {prediction.gate_score:.2f} (a slice like the training images "
            "scores at most 1.00). Upload a single axial, coronal or sagittal brain MRI slice."
        )
        return
    if prediction.unfamiliar:
        st.warning(
            f"{UNFAMILIAR_MESSAGE}. Familiarity score {prediction.familiarity_score:.2f} "
            "(slices like the training images score at most 1.00)."
        )
    if prediction.verdict == UNCERTAIN:
        st.markdown(f"#### {UNCERTAIN_MESSAGE}")
        limit = (safety.class_thresholds or {}).get(prediction.class_name, safety.threshold)
        below = (
            f", below the threshold of {limit:.1%} chosen on validation data for this class"
            if limit
            else ""
        )
        st.warning(
            f"The model is not confident enough to answer: its most likely class, "
            f"{display_name(prediction.class_name)}, has {confidence:.1%}{below}. "
            "Not a reliable answer."
        )
    else:
        st.markdown(f"#### Predicted: {display_name(prediction.class_name)} ({confidence:.1%})")
    st.altair_chart(probability_chart(prediction), width="stretch")
    st.caption(probabilities_text(prediction))


def show_gradcam(index: int, data: bytes, prediction: Prediction, context: PageContext) -> None:
    """Grad-CAM overlay with an opacity slider, computed only when the box is ticked."""
    if not st.checkbox("Show regions that drove the prediction", key=f"gradcam_show_{index}"):
        return
    backend = context.backend
    assert backend is not None
    gradcam_view.show(
        data,
        backend,
        context.version,
        uncertain=prediction.verdict == UNCERTAIN,
        slider_key=f"gradcam_opacity_{index}",
    )


@dataclass(frozen=True)
class PageContext:
    """What every file's display needs from the sidebar: backend, pinned version, its checks."""

    backend: Backend | None
    version: int | None
    safety: SafetyInfo


def main() -> None:
    st.set_page_config(page_title="tumorlib: brain MRI slice classifier", layout="wide")
    st.title("Brain MRI slice classifier")
    st.warning(DISCLAIMER_TEXT)
    if not signed_in_or_login_prompt(_safe_secrets()):
        return
    backend, health, backend_error = sidebar()
    safety = SafetyInfo()
    if backend is not None and health is not None:
        safety = backend.safety(health.version)
        with st.sidebar:
            show_safety(safety)
    performance_view.show(_safe_secrets())  # sidebar toggle; the view reads the audit database
    from_pacs = study_pacs.sidebar(_safe_secrets())  # a series opened from a configured PACS
    files = st.file_uploader(
        "Upload MRI slices (JPEG, PNG or DICOM) or a series (DICOM files, .zip, NIfTI)",
        type=study_view.UPLOAD_TYPES,
        accept_multiple_files=True,
        key=UPLOAD_KEY,
        help="Files stay in this session's memory; they are never saved or logged.",
    )
    uploads = [(file.name, file.getvalue()) for file in files] or from_pacs
    if not uploads:
        st.info(
            "Upload one or more axial/coronal/sagittal slices to see the predicted class: "
            "glioma, meningioma, pituitary tumour or no tumour."
        )
        return
    if backend_error:
        st.error(f"No predictions: {backend_error}")
    context = PageContext(backend, health.version if health else None, safety)
    if not files or study_view.is_study(uploads):  # a series: one verdict for the study
        study_view.show(uploads, context.backend, context.version)
        return
    checked = validate_all(files)
    with st.spinner(f"Classifying {len(files)} file(s)..."):
        results = predict_all(files, checked, backend, health, backend_error)
    for index, (file, check, result) in enumerate(zip(files, checked, results)):
        show_file(index, file, check, result, context)
    if len(files) > 1:
        show_results_table(results)
    feedback.show(files, checked, results, context, _safe_secrets())  # audit record + feedback
    report_view.show(files, checked, results, context)  # a PDF per answer, on request


main()
