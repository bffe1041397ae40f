"""The sidebar's "Open from PACS" box: pick a study and series on the configured PACS, classify it.

Shown only when an operator configured a DICOMweb URL (``pacs_url`` in ``.streamlit/secrets.toml``
or ``$TUMORLIB_PACS_URL``): like the model servers, the page never contacts a URL typed into it.
Credentials come from ``pacs_user``/``pacs_password`` in secrets or ``$TUMORLIB_PACS_USER``/
``$TUMORLIB_PACS_PASSWORD`` (:class:`serving.pacs.dicomweb.Pacs`).

Studies are listed without patient attributes (description, modalities, series count, Study
Instance UID: the study date is an identifying field here, as in :mod:`tumorlib.inputs.dicom`). The
chosen series is retrieved into the session's memory
(:meth:`serving.pacs.dicomweb.Pacs.retrieve_series`, within the input policy's study limits) and
shown by the study view exactly as an upload would be.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import streamlit as st

from serving.pacs.dicomweb import IMAGE_MODALITY, Pacs, PacsError, SeriesSummary, StudySummary

ENV_PACS_URL = "TUMORLIB_PACS_URL"
SECRET_PACS_URL = "pacs_url"
OPENED_KEY = "pacs_opened"  # session: (study uid, series uid, files) of the opened series
LISTED_KEY = "pacs_listed"  # session: {(url, what): summaries}, until "Refresh"


def configured_url(secrets: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    """The operator's DICOMweb root, or None (then there is no PACS box)."""
    url = str(secrets.get(SECRET_PACS_URL) or environ.get(ENV_PACS_URL) or "").strip()
    return url or None


def sidebar(secrets: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """The PACS box; returns the files of the series opened from the PACS ([] if none)."""
    url = configured_url(secrets, os.environ)
    if url is None:
        return []
    pacs = Pacs(url, user=secrets.get("pacs_user"), password=secrets.get("pacs_password"))
    with st.sidebar:
        st.header("Open from PACS")
        st.caption(f"DICOMweb at {pacs.display_url}")
        if st.button("Refresh the list", key="pacs_refresh"):
            st.session_state.pop(LISTED_KEY, None)
        try:
            _choose_and_open(pacs)
        except PacsError as err:
            st.error(str(err))
    opened = st.session_state.get(OPENED_KEY)
    return list(opened[2]) if opened else []


def _choose_and_open(pacs: Pacs) -> None:
    studies: list[StudySummary] = _listed(pacs, "studies", pacs.find_studies)
    if not studies:
        st.caption("No studies on this PACS.")
        return
    study = st.selectbox("Study", studies, format_func=study_label, key="pacs_study")
    series: list[SeriesSummary] = _listed(
        pacs, study.study_uid, lambda: pacs.list_series(study.study_uid)
    )
    images = [s for s in series if s.modality == IMAGE_MODALITY] or series
    if not images:
        st.caption("This study has no series.")
        return
    chosen = st.selectbox("Series", images, format_func=series_label, key="pacs_series")
    if st.button("Open and classify", key="pacs_open"):
        with st.spinner("Retrieving the series..."):
            files = pacs.retrieve_series(study.study_uid, chosen.series_uid)
        st.session_state[OPENED_KEY] = (study.study_uid, chosen.series_uid, files)


def _listed(pacs: Pacs, what: str, find) -> list:
    """QIDO-RS answers kept in the session (not re-queried on every click) until "Refresh"."""
    listed: dict = st.session_state.setdefault(LISTED_KEY, {})
    key = (pacs.display_url, what)
    if key not in listed:
        listed[key] = find()
    return listed[key]


def study_label(study: StudySummary) -> str:
    """Non-identifying: description, modalities, series count and the Study Instance UID."""
    modalities = ", ".join(study.modalities) or "?"
    n = f"{study.n_series} series" if study.n_series is not None else "series: ?"
    return f"{study.description or '(no description)'} · {modalities} · {n} · {study.study_uid}"


def series_label(series: SeriesSummary) -> str:
    number = f"#{series.number} " if series.number is not None else ""
    count = f" · {series.n_instances} images" if series.n_instances is not None else ""
    return f"{number}{series.modality} {series.description or '(no description)'}{count}"
