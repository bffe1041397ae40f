"""The page's side of :mod:`serving.backend`: where its settings come from, and caching.

Which model answers (TF Serving over REST, or the newest export in-process), chunking and failure
isolation live in :mod:`serving.backend`, shared with the batch CLI; this module only resolves the
page's settings and keeps clients and loaded models alive across reruns with
``st.cache_resource``.

Where the URL comes from, first match wins: the sidebar field, ``serving_url`` in
``.streamlit/secrets.toml``, the ``TUMORLIB_SERVING_URL`` environment variable. No URL means the
embedded default: the newest version under ``TUMORLIB_MODEL_BASE_PATH`` (else ``models/brain_mri``
in the current directory) loaded once per process, so a first-time user needs no server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import streamlit as st

from serving.backend import (
    DEFAULT_TIMEOUT_S,
    HOW_TO_EXPORT,
    Backend,
    BackendError,
    Settings,
)
from serving.backend import make_backend as make_serving_backend
from serving.client import TFServingClient
from tumorlib.serving_contract import MODEL_BASE_PATH, MODEL_NAME

ENV_URL = "TUMORLIB_SERVING_URL"
ENV_MODEL_NAME = "TUMORLIB_MODEL_NAME"
ENV_MODEL_BASE_PATH = "TUMORLIB_MODEL_BASE_PATH"
ENV_TIMEOUT = "TUMORLIB_SERVING_TIMEOUT"
SECRET_URL = "serving_url"
SECRET_MODEL_NAME = "model_name"
SECRET_MODEL_BASE_PATH = "model_base_path"
SECRET_TIMEOUT = "serving_timeout"

PAGE_HINT = f"{HOW_TO_EXPORT} Or enter a TF Serving URL in the sidebar."


def default_model_base_path() -> Path:
    """The contract's ``models/brain_mri``, relative to the folder the page was started from."""
    return Path.cwd() / MODEL_BASE_PATH


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
    base_path = Path(pick(SECRET_MODEL_BASE_PATH, ENV_MODEL_BASE_PATH) or MODEL_BASE_PATH)
    if not base_path.is_absolute():
        base_path = Path.cwd() / base_path
    timeout_text = pick(SECRET_TIMEOUT, ENV_TIMEOUT)
    try:
        timeout = float(timeout_text) if timeout_text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise BackendError(
            "config", f"The serving timeout must be a number of seconds, not {timeout_text!r}."
        ) from None
    return Settings(
        serving_url=normalize_url(url) if url else None,
        model_name=pick(SECRET_MODEL_NAME, ENV_MODEL_NAME) or MODEL_NAME,
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


# -- construction, cached per process ----------------------------------------------------------


@st.cache_resource(show_spinner=False, max_entries=4)
def _rest_client(url: str, model_name: str, timeout_s: float) -> TFServingClient:
    # One retry only: a person is waiting, and a down server should say so in seconds.
    return TFServingClient(url, model_name=model_name, timeout=timeout_s, retries=1, backoff=0.2)


@st.cache_resource(show_spinner="Loading the model...", max_entries=2)
def _inprocess_model(model_base_path: str, version: int) -> Any:
    from serving.backend import load_model

    return load_model(model_base_path, version)


def make_backend(settings: Settings) -> Backend:
    """The backend for ``settings``, its client or model cached; :class:`BackendError` if none.

    The newest version is part of the model's cache key, so a fresh export is picked up on the
    next interaction without restarting the page.
    """
    return make_serving_backend(
        settings, make_client=_rest_client, load=_inprocess_model, hint=PAGE_HINT
    )
