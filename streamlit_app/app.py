"""The upload page: ``streamlit run streamlit_app/app.py``.

A clinician uploads one or several MRI slices (JPEG/PNG) and sees, for each, the image, the
predicted class in plain words, the four probabilities, the model version, and that this is a
decision-support tool. The page only validates uploads and shows answers: the model (over TF
Serving REST or in-process, see :mod:`streamlit_app.backend`) does all preprocessing.

Every failure is shown with ``st.error`` in words; the page never lets an exception escape to a
stack trace (``client.showErrorDetails = "none"`` in ``.streamlit/config.toml`` is the backstop).
Uploads stay in memory: nothing here writes or logs them.
"""

from __future__ import annotations

import sys
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:  # `streamlit run` puts only this folder on sys.path
    sys.path.insert(0, str(_REPO_ROOT))

import streamlit as st  # noqa: E402

from streamlit_app import backend as backends  # noqa: E402
from streamlit_app.results import (  # noqa: E402
    FileResult,
    display_name,
    probabilities_text,
    probability_chart,
    show_results_table,
)
from streamlit_app.validation import (  # noqa: E402
    DEFAULT_MAX_PIXELS,
    UploadRejected,
    ValidatedImage,
    validate_upload,
)

DISCLAIMER = (
    "**Decision-support tool, not a diagnosis.** The model's output is a probability estimate "
    "from a single 2D slice. It can be wrong and must be read by a qualified clinician together "
    "with the full study and the patient's history."
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


def sidebar() -> tuple[backends.Backend | None, backends.Health | None, str | None]:
    """Backend choice and health; returns (backend, health, error message)."""
    with st.sidebar:
        st.header("Model backend")
        default_url = backends.configured_url(_safe_secrets(), _environ())
        url = st.text_input(
            "TF Serving URL",
            value=default_url,
            key=URL_KEY,
            placeholder="http://127.0.0.1:8501",
            help="Leave empty to run the newest exported model inside this app. Also read from "
            f"`serving_url` in .streamlit/secrets.toml or ${backends.ENV_URL}.",
        )
        try:
            settings = backends.settings_from_environment(url)
            backend = backends.make_backend(settings)
        except backends.BackendError as err:
            st.markdown(f"**Backend:** {_describe_settings(url)}")
            st.error(err.message)
            return None, None, err.message
        st.markdown(f"**Backend:** {backend.label}")
        try:
            with st.spinner("Checking model status..."):
                health = backend.health()
        except backends.BackendError as err:
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
    except backends.BackendError:
        return {}  # reported by settings_from_environment below


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


def validate_all(files: list) -> list[ValidatedImage | UploadRejected]:
    """Check every upload; the limits come from ``.streamlit/config.toml``."""
    max_bytes = int(st.get_option("server.maxUploadSize")) * 1024 * 1024
    checked: list[ValidatedImage | UploadRejected] = []
    for file in files:
        try:
            checked.append(
                validate_upload(file.getvalue(), max_bytes=max_bytes, max_pixels=DEFAULT_MAX_PIXELS)
            )
        except UploadRejected as err:
            checked.append(err)
    return checked


def predict_all(
    files: list,
    checked: list[ValidatedImage | UploadRejected],
    backend: backends.Backend | None,
    health: backends.Health | None,
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
        except backends.BackendError as err:
            backend_error = err.message
    results = []
    for i, (file, check) in enumerate(zip(files, checked)):
        if isinstance(check, UploadRejected):
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


def show_file(file, check: ValidatedImage | UploadRejected, result: FileResult) -> None:
    st.subheader(file.name)
    if isinstance(check, UploadRejected):
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
        prediction = result.prediction
        st.markdown(
            f"#### Predicted: {display_name(prediction.class_name)} ({result.confidence:.1%})"
        )
        st.altair_chart(probability_chart(prediction), width="stretch")
        st.caption(probabilities_text(prediction))
        st.caption(
            f"Model version {result.model_version} · {result.backend} · "
            "decision-support tool, not a diagnosis"
        )


def main() -> None:
    st.set_page_config(page_title="tumorlib: brain MRI slice classifier", layout="wide")
    st.title("Brain MRI slice classifier")
    st.warning(DISCLAIMER)
    if not signed_in_or_login_prompt(_safe_secrets()):
        return
    backend, health, backend_error = sidebar()
    files = st.file_uploader(
        "Upload MRI slices (JPEG or PNG, one slice per file)",
        type=["jpg", "jpeg", "png"],
        accept_multiple_files=True,
        key=UPLOAD_KEY,
        help="Files stay in this session's memory; they are never saved or logged.",
    )
    if not files:
        st.info(
            "Upload one or more axial/coronal/sagittal slices to see the predicted class: "
            "glioma, meningioma, pituitary tumour or no tumour."
        )
        return
    if backend_error:
        st.error(f"No predictions: {backend_error}")
    checked = validate_all(files)
    with st.spinner(f"Classifying {len(files)} file(s)..."):
        results = predict_all(files, checked, backend, health, backend_error)
    for file, check, result in zip(files, checked, results):
        show_file(file, check, result)
    if len(files) > 1:
        show_results_table(results)


main()
