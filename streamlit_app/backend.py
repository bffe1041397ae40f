"""Which model answers the page: TF Serving over REST, or the newest export loaded in-process.

Both go through the serving package's one interface (``predict``/``status``/``metadata``), so the
page has no second REST implementation and no second copy of the preprocessing: it sends encoded
bytes and the SavedModel's own signature decodes, resizes and normalises them.

Where the URL comes from, first match wins: the sidebar field, ``serving_url`` in
``.streamlit/secrets.toml``, the ``TUMORLIB_SERVING_URL`` environment variable. No URL means the
embedded default: the newest version under ``models/brain_mri`` (or ``TUMORLIB_MODEL_BASE_PATH``)
loaded once per process with ``st.cache_resource``, so a first-time user needs no server.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import streamlit as st

from serving.client import TFServingClient, TFServingError, TFServingUnavailable
from serving.export import EXPLAIN_SIGNATURE
from serving.prediction import ExplainUnavailable, Explanation, Prediction
from serving.versions import find_latest_version, list_versions

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL_BASE_PATH = REPO_ROOT / "models" / "brain_mri"
DEFAULT_MODEL_NAME = "brain_mri"
DEFAULT_TIMEOUT_S = 10.0

ENV_URL = "TUMORLIB_SERVING_URL"
ENV_MODEL_NAME = "TUMORLIB_MODEL_NAME"
ENV_MODEL_BASE_PATH = "TUMORLIB_MODEL_BASE_PATH"
ENV_TIMEOUT = "TUMORLIB_SERVING_TIMEOUT"
SECRET_URL = "serving_url"
SECRET_MODEL_NAME = "model_name"
SECRET_MODEL_BASE_PATH = "model_base_path"
SECRET_TIMEOUT = "serving_timeout"

# TF Serving and the local server cap a request's size (16 MB by default); base64 adds a third.
# Files are sent in chunks under this many raw bytes, so a large batch never trips that cap.
MAX_CHUNK_BYTES = 6 * 1024 * 1024
MAX_CHUNK_IMAGES = 16

HOW_TO_EXPORT = (
    "Create one with `scripts/main` (build, train, evaluate, export), or export an existing "
    "run with `python -m serving.export runs/<name>`; or enter a TF Serving URL in the sidebar."
)


class BackendError(RuntimeError):
    """A failure the page shows as it is: ``message`` is written for the user."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class Settings:
    """The resolved configuration for one page run."""

    serving_url: str | None
    model_name: str
    model_base_path: Path
    timeout_s: float

    @property
    def uses_rest(self) -> bool:
        return self.serving_url is not None


@dataclass(frozen=True)
class Health:
    """What the sidebar reports; ``version`` is the one predictions will come from."""

    ok: bool
    message: str
    version: int | None = None


def resolve_settings(
    sidebar_url: str | None,
    secrets: Mapping[str, Any],
    environ: Mapping[str, str],
) -> Settings:
    """Merge the sidebar, secrets and environment into :class:`Settings` (clear error if bad)."""

    def pick(secret_key: str, env_key: str) -> str | None:
        value = secrets.get(secret_key) or environ.get(env_key)
        return str(value).strip() if value else None

    url = (sidebar_url or "").strip() or pick(SECRET_URL, ENV_URL)
    base_path = Path(pick(SECRET_MODEL_BASE_PATH, ENV_MODEL_BASE_PATH) or DEFAULT_MODEL_BASE_PATH)
    if not base_path.is_absolute():
        base_path = REPO_ROOT / base_path
    timeout_text = pick(SECRET_TIMEOUT, ENV_TIMEOUT)
    try:
        timeout = float(timeout_text) if timeout_text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise BackendError(
            "config", f"The serving timeout must be a number of seconds, not {timeout_text!r}."
        ) from None
    return Settings(
        serving_url=normalize_url(url) if url else None,
        model_name=pick(SECRET_MODEL_NAME, ENV_MODEL_NAME) or DEFAULT_MODEL_NAME,
        model_base_path=base_path,
        timeout_s=timeout,
    )


def configured_url(secrets: Mapping[str, Any], environ: Mapping[str, str]) -> str:
    """The URL from secrets or the environment, to pre-fill the sidebar field ('' if none)."""
    return str(secrets.get(SECRET_URL) or environ.get(ENV_URL) or "").strip()


def normalize_url(url: str) -> str:
    """``http(s)://host[:port]`` without a trailing slash; a clear error for anything else."""
    parsed = urlparse(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise BackendError(
            "config",
            f"{url!r} is not a TF Serving URL; expected something like http://127.0.0.1:8501.",
        )
    try:
        parsed.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise BackendError("config", f"{url!r} has an invalid port number.") from None
    return url.strip().rstrip("/")


def read_secrets() -> dict[str, Any]:
    """``st.secrets`` as a plain dict; empty when no secrets.toml exists (not an error here)."""
    try:
        return {key: st.secrets[key] for key in st.secrets}
    except FileNotFoundError:  # includes StreamlitSecretNotFoundError: no secrets.toml at all
        return {}
    except Exception as err:  # noqa: BLE001 - a malformed secrets.toml is a config error
        raise BackendError("config", f"secrets.toml could not be read: {err}") from None


def settings_from_environment(sidebar_url: str | None) -> Settings:
    return resolve_settings(sidebar_url, read_secrets(), os.environ)


@dataclass(frozen=True)
class SafetyInfo:
    """What the served version checks, from its exported metadata (``None``: not known)."""

    threshold: float | None = None  # abstention threshold on the top probability
    target_precision: float | None = None
    gate: bool = False
    explain: bool = False
    known: bool = False  # False: the metadata could not be read

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> SafetyInfo:
        abstention = metadata.get("abstention") or {}
        signatures = metadata.get("signatures") or {}
        return cls(
            threshold=_float_or_none(abstention.get("threshold")),
            target_precision=_float_or_none(abstention.get("target_precision")),
            gate=bool(metadata.get("input_gate")),
            explain=EXPLAIN_SIGNATURE in signatures,
            known=True,
        )


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


GRADCAM_UNAVAILABLE = (
    "This model version has no Grad-CAM (`explain`) signature: it was exported before Grad-CAM "
    "existed. Re-export the run (`python -m serving.export runs/<name>`) to add it."
)


class Backend:
    """One model source behind the page: health check, then predictions from that version."""

    label: str

    def health(self) -> Health:
        raise NotImplementedError

    def predict(self, images: Sequence[bytes], version: int | None) -> list[Prediction | str]:
        """One :class:`Prediction` or a user-facing error string per image, in order."""
        raise NotImplementedError

    def explain(self, image: bytes, version: int | None) -> Explanation | str:
        """Grad-CAM for one image, or a user-facing reason why there is none."""
        try:
            return self._explain(image, version)
        except ExplainUnavailable:
            return GRADCAM_UNAVAILABLE
        except BackendError as err:
            return err.message
        except Exception as err:  # noqa: BLE001 - shown next to the image, never a traceback
            return f"Grad-CAM could not be computed: {_describe(err)}"

    def safety(self, version: int | None) -> SafetyInfo:
        """The abstention threshold and which checks the version has; unknown on failure."""
        try:
            return SafetyInfo.from_metadata(self._metadata(version))
        except Exception:  # noqa: BLE001 - the page still works without it; the sidebar says so
            return SafetyInfo()

    def _explain(self, image: bytes, version: int | None) -> Explanation:
        raise NotImplementedError

    def _metadata(self, version: int | None) -> Mapping[str, Any]:
        raise NotImplementedError


class RestBackend(Backend):
    """TF Serving's REST API (the real server or ``python -m serving.local``)."""

    def __init__(self, client: TFServingClient) -> None:
        self.client = client
        self.label = f"TF Serving REST at {client.base_url} (model {client.model_name!r})"

    def health(self) -> Health:
        """Model status endpoint: healthy when a version is AVAILABLE; that version is used.

        Pinning predictions to the version seen here means the page never labels an answer
        with one version while a newer one, loaded in between, produced it.
        """
        try:
            statuses = self.client.status()["model_version_status"]
        except TFServingError as err:
            raise _rest_error(err, self.client) from None
        except (KeyError, TypeError, ValueError):
            raise BackendError(
                "error", f"{self.client.base_url} did not answer like TF Serving's model status."
            ) from None
        available = [int(s["version"]) for s in statuses if s.get("state") == "AVAILABLE"]
        if not available:
            states = ", ".join(f"v{s.get('version')}: {s.get('state')}" for s in statuses)
            raise BackendError(
                "model_missing",
                f"TF Serving has no AVAILABLE version of {self.client.model_name!r} "
                f"({states or 'no versions'}).",
            )
        version = max(available)
        return Health(True, f"Healthy: version {version} AVAILABLE", version)

    def predict(self, images: Sequence[bytes], version: int | None) -> list[Prediction | str]:
        def call(chunk: Sequence[bytes]) -> list[Prediction]:
            try:
                return self.client.predict(chunk, version=version)
            except TFServingUnavailable as err:
                raise _rest_error(err, self.client) from None

        return predict_isolating_failures(call, images)

    def _explain(self, image: bytes, version: int | None) -> Explanation:
        try:
            return self.client.explain([image], version=version)[0]
        except TFServingUnavailable as err:
            raise _rest_error(err, self.client) from None

    def _metadata(self, version: int | None) -> Mapping[str, Any]:
        return self.client.metadata(version)


class InProcessBackend(Backend):
    """The exported SavedModel run in this process (``serving.inprocess.InProcessModel``)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.label = f"In-process SavedModel ({model.path})"

    def health(self) -> Health:
        if not self.model.is_healthy():
            raise BackendError("error", "The in-process model did not load its signature.")
        return Health(True, f"Healthy: version {self.model.version} loaded", self.model.version)

    def predict(self, images: Sequence[bytes], version: int | None) -> list[Prediction | str]:
        return predict_isolating_failures(self.model.predict, images)

    def _explain(self, image: bytes, version: int | None) -> Explanation:
        return self.model.explain([image])[0]

    def _metadata(self, version: int | None) -> Mapping[str, Any]:
        return self.model.metadata()


def predict_isolating_failures(
    predict: Callable[[Sequence[bytes]], list[Prediction]], images: Sequence[bytes]
) -> list[Prediction | str]:
    """Predict in size-bounded chunks; a chunk that fails is retried image by image.

    So one file the model cannot decode costs only its own result, never the batch's.
    :class:`BackendError` (server down, model gone) is not per-image and propagates.
    """
    results: list[Prediction | str] = []
    for chunk in _chunks(images):
        try:
            results.extend(predict(chunk))
            continue
        except BackendError:
            raise
        except Exception as err:  # noqa: BLE001 - isolated per image below, shown to the user
            if len(chunk) == 1:
                results.append(_describe(err))
                continue
        for image in chunk:
            try:
                results.extend(predict([image]))
            except BackendError:
                raise
            except Exception as err:  # noqa: BLE001 - one image's failure, shown next to it
                results.append(_describe(err))
    return results


def _chunks(images: Sequence[bytes]) -> list[list[bytes]]:
    chunks: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for image in images:
        if current and (size + len(image) > MAX_CHUNK_BYTES or len(current) >= MAX_CHUNK_IMAGES):
            chunks.append(current)
            current, size = [], 0
        current.append(image)
        size += len(image)
    if current:
        chunks.append(current)
    return chunks


def _describe(err: Exception) -> str:
    if isinstance(err, TFServingError):
        return f"The model server refused this image: {err.message}"
    return f"The model could not process this image: {err}"


def _rest_error(err: TFServingError, client: TFServingClient) -> BackendError:
    if isinstance(err, TFServingUnavailable):
        return BackendError(
            "unavailable",
            f"TF Serving at {client.base_url} is down or too slow (timeout {client.timeout:g} s): "
            f"{err.message}. Start it (e.g. `python -m serving.local`), check the URL, or clear "
            "the URL to use the in-process model.",
        )
    if err.status_code == 404:
        return BackendError(
            "model_missing",
            f"TF Serving at {client.base_url} does not serve a model named "
            f"{client.model_name!r}: {err.message}",
        )
    return BackendError("error", f"TF Serving at {client.base_url} answered: {err}")


# -- construction, cached per process ----------------------------------------------------------


@st.cache_resource(show_spinner=False, max_entries=4)
def _rest_client(url: str, model_name: str, timeout_s: float) -> TFServingClient:
    # One retry only: a person is waiting, and a down server should say so in seconds.
    return TFServingClient(url, model_name=model_name, timeout=timeout_s, retries=1, backoff=0.2)


@st.cache_resource(show_spinner="Loading the model...", max_entries=2)
def _inprocess_model(model_base_path: str, version: int) -> Any:
    from serving.inprocess import InProcessModel  # imports TensorFlow: only when needed

    return InProcessModel(model_base_path, version=version)


def make_backend(settings: Settings) -> Backend:
    """The backend for ``settings``; :class:`BackendError` when it cannot be had."""
    if settings.uses_rest:
        assert settings.serving_url is not None
        return RestBackend(
            _rest_client(settings.serving_url, settings.model_name, settings.timeout_s)
        )
    base = settings.model_base_path
    version = find_latest_version(base)
    if version is None:
        raise BackendError(
            "model_missing",
            f"No exported model yet under {base} "
            f"({'empty' if base.is_dir() else 'folder does not exist'}). {HOW_TO_EXPORT}",
        )
    try:
        # The newest version is part of the cache key, so a fresh export is picked up on the
        # next interaction without restarting the page.
        return InProcessBackend(_inprocess_model(str(base), version))
    except Exception as err:  # noqa: BLE001 - a broken export is reported, not raised
        raise BackendError(
            "model_missing",
            f"Version {version} under {base} could not be loaded ({type(err).__name__}: {err}). "
            f"Versions present: {list_versions(base)}. {HOW_TO_EXPORT}",
        ) from None
