"""A Grad-CAM heatmap drawn on a slice as the model saw it: one definition for every surface.

The page shows it; the DICOM Secondary Captures (``serving.pacs.results``) store it. The heatmap
is at the model's input resolution and aligned with the image resized the model's way (aspect
kept, black padding), so the slice is resized by :func:`tumorlib.images.preprocessing.resize` — the
one definition of it — and blended by :func:`tumorlib.model.gradcam.overlay`. Both import
TensorFlow, so they are imported only when an overlay is drawn: importing this module stays
TensorFlow-free.
"""

from __future__ import annotations

import numpy as np


def overlay_image(image_bytes: bytes, heatmap: np.ndarray, opacity: float) -> np.ndarray:
    """The image resized as the model saw it, with ``heatmap`` blended over it (uint8 RGB)."""
    import tensorflow as tf

    from tumorlib.images.preprocessing import decode_image, resize
    from tumorlib.model.gradcam import overlay

    image = resize(decode_image(tf.constant(image_bytes)), int(heatmap.shape[0])).numpy()
    return overlay(image, heatmap, opacity)
