"""Grad-CAM on the page: "Show regions that drove the prediction".

The heatmap comes from the served model's ``explain`` signature (:mod:`tumorlib.model.gradcam`
inside the SavedModel), at the model's input resolution and aligned with the slice as the model saw
it: resized with its aspect kept and black padding.
:func:`tumorlib.model.gradcam_overlay.overlay_image` draws it on that same image (the DICOM
Secondary Captures use the same function); it imports TensorFlow only when a user asks for a
heatmap.

Heatmaps are kept in the session's memory (never on disk), keyed by a hash of the image, the
backend and the model version, so moving the opacity slider does not recompute the gradient.
"""

from __future__ import annotations

import hashlib

import streamlit as st

from serving.clients.backend import Backend
from serving.clients.prediction import Explanation
from tumorlib.contracts.classes import DISPLAY_NAMES
from tumorlib.model.gradcam_overlay import overlay_image

CACHE_KEY = "gradcam_heatmaps"
MAX_CACHED = 32  # heatmaps per session; 384 x 384 float32 (the shipped model) is 590 KB each
DEFAULT_OPACITY = 0.4
CAPTION = (
    "Grad-CAM for {label}: warm colours mark the regions that raised the model's score for this "
    "class most. Coarse (1/32 of the model input) and drawn on the slice as the model saw it "
    "(resized, black-padded); it shows where evidence came from, not a segmentation."
)


def cached_explanation(key_parts: tuple, compute) -> Explanation | str:
    """``compute()`` once per image/backend/version in this session; errors are not cached."""
    cache: dict[str, Explanation] = st.session_state.setdefault(CACHE_KEY, {})
    key = hashlib.sha256(repr(key_parts).encode()).hexdigest()
    if key in cache:
        return cache[key]
    result = compute()
    if isinstance(result, Explanation):
        if len(cache) >= MAX_CACHED:
            cache.pop(next(iter(cache)))
        cache[key] = result
    return result


def image_key(data: bytes) -> str:
    """Identifies an upload in the cache without keeping its bytes there."""
    return hashlib.sha256(data).hexdigest()


def show(
    image: bytes, backend: Backend, version: int | None, *, uncertain: bool, slider_key: str
) -> None:
    """The overlay of ``image``'s Grad-CAM with an opacity slider (widget key ``slider_key``);
    for an uncertain answer the caption says it explains only the most likely class."""
    explanation = cached_explanation(
        (backend.label, version, image_key(image)), lambda: backend.explain(image, version)
    )
    if not isinstance(explanation, Explanation):
        st.info(explanation)
        return
    opacity = st.slider(
        "Heatmap opacity",
        min_value=0.0,
        max_value=1.0,
        value=DEFAULT_OPACITY,
        step=0.05,
        key=slider_key,
    )
    label = DISPLAY_NAMES.get(explanation.class_name, explanation.class_name)
    if uncertain:
        label = f"the most likely class ({label})"
    try:
        overlay = overlay_image(image, explanation.heatmap, opacity)
    except Exception as err:  # noqa: BLE001 - a display problem must not hide the answer
        st.info(f"The Grad-CAM overlay could not be drawn ({type(err).__name__}).")
        return
    st.image(overlay, caption=CAPTION.format(label=label), width=320)
