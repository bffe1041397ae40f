"""The page's side of :mod:`serving.clients.backend`: where its settings come from, and caching.

Which model answers (TF Serving over REST, or the newest export in-process), chunking and failure
isolation live in :mod:`serving.clients.backend`, shared with the batch CLI; this module only
resolves the page's settings and keeps clients and loaded models alive across reruns with
``st.cache_resource``.

Which servers the page may talk to is configuration, never user input: ``serving_urls = [...]``
and ``serving_url`` in ``.streamlit/secrets.toml``, ``TUMORLIB_SERVING_URLS`` (comma-separated)
and ``TUMORLIB_SERVING_URL`` in the environment form an allow-list, and the sidebar only chooses
among them — so the page's server never fetches a URL a visitor typed. The first configured URL is
the default; choosing none means the embedded model: the newest version under
``TUMORLIB_MODEL_BASE_PATH`` (else ``models/brain_mri`` in the current directory) loaded once per
process, so a first-time user needs no server.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import streamlit as st

from serving.clients.backend import (
    DEFAULT_TIMEOUT_S,
    HOW_TO_EXPORT,
    Backend,
    BackendError,
    Settings,
)
from serving.clients.backend import make_backend as make_serving_backend
from serving.clients.grpc_client import GRPC_SCHEMES, TFServingGrpcClient, is_grpc_url
from serving.clients.rest import TFServingClient
from tumorlib.contracts.display import safe_url
from tumorlib.contracts.serving_contract import MODEL_BASE_PATH, MODEL_NAME

ENV_URL = "TUMORLIB_SERVING_URL"
ENV_URLS = "TUMORLIB_SERVING_URLS"
ENV_MODEL_NAME = "TUMORLIB_MODEL_NAME"
ENV_MODEL_BASE_PATH = "TUMORLIB_MODEL_BASE_PATH"
ENV_TIMEOUT = "TUMORLIB_SERVING_TIMEOUT"
SECRET_URL = "serving_url"
SECRET_URLS = "serving_urls"
SECRET_MODEL_NAME = "model_name"
SECRET_MODEL_BASE_PATH = "model_base_path"
SECRET_TIMEOUT = "serving_timeout"

PAGE_HINT = (
    f"{HOW_TO_EXPORT} Or configure a TF Serving URL (`serving_urls` in .streamlit/secrets.toml "
    f"or ${ENV_URLS}) and choose it in the sidebar."
)


def default_model_base_path() -> Path:
    """The contract's ``models/brain_mri``, relative to the folder the page was started from."""
    return Path.cwd() / MODEL_BASE_PATH


def resolve_settings(
    chosen_url: str | None,
    secrets: Mapping[str, Any],
    environ: Mapping[str, str],
) -> Settings:
    """Secrets and environment into :class:`Settings`, with the sidebar's choice of server.

    ``chosen_url`` must be one of :func:`configured_urls` (``None`` or ``""``: the in-process
    model); anything else is refused, so no typed or forged URL is ever fetched.
    """

    def pick(secret_key: str, env_key: str) -> str | None:
        value = secrets.get(secret_key) or environ.get(env_key)
        return str(value).strip() if value else None

    allowed = configured_urls(secrets, environ)
    url = (chosen_url or "").strip() or None
    if url is not None and url.rstrip("/") not in allowed:
        raise BackendError(
            "config",
            "That model server is not one of the configured ones; choose one in the sidebar "
            f"(configured in `{SECRET_URLS}` in .streamlit/secrets.toml or ${ENV_URLS}).",
        )
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


def configured_urls(secrets: Mapping[str, Any], environ: Mapping[str, str]) -> list[str]:
    """The allow-list of TF Serving URLs, normalised, first-configured first, no duplicates.

    From ``serving_urls`` (a list) and ``serving_url`` in secrets, then ``TUMORLIB_SERVING_URLS``
    (comma-separated) and ``TUMORLIB_SERVING_URL``; a malformed entry is a :class:`BackendError`.
    """
    listed = secrets.get(SECRET_URLS) or []
    if isinstance(listed, str):
        listed = listed.split(",")
    raw = [*listed, secrets.get(SECRET_URL) or ""]
    raw += (environ.get(ENV_URLS) or "").split(",") + [environ.get(ENV_URL) or ""]
    urls: list[str] = []
    for entry in raw:
        if str(entry).strip():
            url = normalize_url(str(entry))
            if url not in urls:
                urls.append(url)
    return urls


def normalize_url(url: str) -> str:
    """``http(s)://host[:port]`` (or ``grpc://host:port``) without a trailing slash; a clear
    error for anything else."""
    parsed = urlparse(url.strip())
    if parsed.scheme not in ("http", "https", *GRPC_SCHEMES) or not parsed.hostname:
        raise BackendError(
            "config",
            f"{safe_url(url)!r} is not a TF Serving URL; expected something like "
            "http://127.0.0.1:8501.",
        )
    try:
        parsed.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise BackendError("config", f"{safe_url(url)!r} has an invalid port number.") from None
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
    if is_grpc_url(url):
        return TFServingGrpcClient(  # type: ignore[return-value]
            url, model_name=model_name, timeout=timeout_s, retries=1, backoff=0.2
        )
    return TFServingClient(url, model_name=model_name, timeout=timeout_s, retries=1, backoff=0.2)


@st.cache_resource(show_spinner="Loading the model...", max_entries=2)
def _inprocess_model(model_base_path: str, version: int) -> Any:
    from serving.clients.backend import load_model

    return load_model(model_base_path, version)


def make_backend(settings: Settings) -> Backend:
    """The backend for ``settings``, its client or model cached; :class:`BackendError` if none.

    The newest version is part of the model's cache key, so a fresh export is picked up on the
    next interaction without restarting the page.
    """
    return make_serving_backend(
        settings, make_client=_rest_client, load=_inprocess_model, hint=PAGE_HINT
    )
