"""Check a freshly written SavedModel against the Keras model it came from.

Catches an export whose graph drifted from training (a wrong image size, a missing temperature)
before TF Serving ever sees it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from serving.export.errors import ExportError
from tumorlib.contracts.serving_contract import (
    EXPLAIN_SIGNATURE,
    HEATMAP_KEY,
    INPUT_KEY,
    PROBABILITIES_KEY,
    SERVING_SIGNATURE,
)
from tumorlib.images.preprocessing import preprocess_bytes_batch
from tumorlib.model.calibration import apply_temperature_np

EXPORT_TOLERANCE = 1e-5


def _probe_images(image_size: int) -> tf.Tensor:
    """Two random PNGs: one at the model's size, one of another shape (padding exercised)."""
    rng = np.random.default_rng(0)
    return tf.constant(
        [
            tf.io.encode_png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).numpy()
            for h, w in ((image_size, image_size), (image_size + 7, image_size // 2 + 3))
        ]
    )


def verify_export(saved: Path, model, image_size: int, temperature: float) -> float:
    """Reload the SavedModel and check it matches the Keras model on generated images.

    Returns the largest absolute probability difference (``serving_default`` and, if present,
    ``explain``); raises :class:`ExportError` above :data:`EXPORT_TOLERANCE`, or when the
    heatmap is not a finite map in [0, 1] at input resolution.
    """
    batch = _probe_images(image_size)
    expected = apply_temperature_np(
        model(preprocess_bytes_batch(batch, image_size), training=False).numpy(), temperature
    )
    loaded = tf.saved_model.load(str(saved))
    got = loaded.signatures[SERVING_SIGNATURE](**{INPUT_KEY: batch})[PROBABILITIES_KEY].numpy()
    diff = float(np.max(np.abs(got - expected)))
    if EXPLAIN_SIGNATURE in loaded.signatures:
        explained = loaded.signatures[EXPLAIN_SIGNATURE](**{INPUT_KEY: batch})
        diff = max(diff, float(np.max(np.abs(explained[PROBABILITIES_KEY].numpy() - expected))))
        _check_heatmap(explained[HEATMAP_KEY].numpy(), int(batch.shape[0]), image_size)
    if diff > EXPORT_TOLERANCE:
        raise ExportError(
            f"exported model differs from the Keras model by {diff:.2e} (> {EXPORT_TOLERANCE})"
        )
    return diff


def _check_heatmap(heatmap: np.ndarray, n: int, image_size: int) -> None:
    if heatmap.shape != (n, image_size, image_size):
        raise ExportError(f"explain heatmap has shape {heatmap.shape}, expected {n}x{image_size}²")
    if not np.isfinite(heatmap).all() or heatmap.min() < 0.0 or heatmap.max() > 1.0:
        raise ExportError("explain heatmap is not a finite map in [0, 1]")
