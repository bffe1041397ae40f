"""Similar confirmed cases on the page: the nearest training slices beside the answer.

Shown only when the served version has the ``similar_cases`` signature (an export made with its
training data at hand). The signature returns the 10 nearest; the page shows the first
:data:`SHOWN` as thumbnails with their confirmed label, cosine similarity and collection, and
says whether the 10 agree with the model — when the export's metadata says that disagreement
was chosen on validation as a reason to refer (``similar_cases.refer_rule``), it says so as one.
Answers are kept in the session's memory, keyed by image, backend and version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import streamlit as st

from serving.clients.backend import Backend
from serving.clients.prediction import SimilarCases
from tumorlib.contracts.classes import DISPLAY_NAMES
from tumorlib.contracts.serving_contract import MAX_SIMILAR

CACHE_KEY = "similar_cases"
MAX_CACHED = 32
SHOWN = 5


def index_info(backend: Backend, version: int | None) -> Mapping[str, Any]:
    """The export's ``similar_cases`` metadata (empty when unknown or absent)."""
    cache: dict = st.session_state.setdefault(f"{CACHE_KEY}_info", {})
    key = (backend.label, version)
    if key not in cache:
        try:
            cache[key] = dict(backend.metadata(version).get("similar_cases") or {})
        except Exception:  # noqa: BLE001 - no index information: the section stays hidden
            cache[key] = {}
    return cache[key]


def similar_for(backend: Backend, version: int | None, data: bytes) -> SimilarCases | str:
    """The 10 nearest cases of ``data``, once per session (errors are not cached)."""
    cache: dict = st.session_state.setdefault(CACHE_KEY, {})
    key = hashlib.sha256(repr((backend.label, version, hashlib.sha256(data).hexdigest())).encode())
    digest = key.hexdigest()
    if digest in cache:
        return cache[digest]
    found = backend.similar(data, MAX_SIMILAR, version)
    if isinstance(found, SimilarCases):
        if len(cache) >= MAX_CACHED:
            cache.pop(next(iter(cache)))
        cache[digest] = found
    return found


def show(index: int | str, data: bytes, backend: Backend | None, version: int | None) -> None:
    """Thumbnails of the nearest confirmed cases under one answer, when the export has them."""
    if backend is None:
        return
    info = index_info(backend, version)
    if not info.get("available"):
        return
    if not st.checkbox("Show similar confirmed cases", value=True, key=f"similar_show_{index}"):
        return
    found = similar_for(backend, version, data)
    if isinstance(found, str):
        st.info(found)
        return
    majority = DISPLAY_NAMES.get(found.majority_label or "", found.majority_label or "")
    model = DISPLAY_NAMES.get(found.class_name, found.class_name)
    rule = info.get("refer_rule") or {}
    if found.agrees:
        st.caption(f"The {len(found.cases)} nearest confirmed cases are mostly {majority}, "
                   "like the model's answer.")  # fmt: skip
    elif rule.get("adopted"):
        st.warning(
            f"Refer: the {len(found.cases)} nearest confirmed cases are mostly {majority}, not "
            f"{model}. On validation, answers whose neighbours disagreed were wrong "
            f"{rule.get('error_ratio_on_validation', '?')}x as often."
        )
    else:
        st.warning(f"The {len(found.cases)} nearest confirmed cases are mostly {majority}, not "
                   f"{model}: read with extra care.")  # fmt: skip
    columns = st.columns(SHOWN)
    for column, case in zip(columns, found.cases[:SHOWN]):
        with column:
            label = DISPLAY_NAMES.get(case.label, case.label)
            st.image(case.thumbnail, caption=f"{label} · {case.similarity:.2f} · {case.source}")
    terms = sorted({f"{c.source}: {c.licence}" for c in found.cases[:SHOWN]})
    st.caption(
        f"Training slices from {info.get('config')}/{info.get('split')} "
        f"({info.get('count')} indexed), nearest first, cosine similarity in the model's own "
        "features. " + "; ".join(terms)
    )
