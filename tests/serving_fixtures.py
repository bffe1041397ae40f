"""Shared fixtures for the serving tests: a tiny trained-looking run folder and test images.

The model here stands in for ``tumorlib.model.build_model``: same contract (normalised
``[N, S, S, 3]`` in [-1, 1] -> softmax ``[N, 4]``), a few thousand weights, so exporting and
serving it takes seconds on two cores. The temperature is not 1 so temperature scaling is
actually exercised.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

FIXTURE_IMAGE_SIZE = 32
FIXTURE_TEMPERATURE = 1.7


def make_fixture_run(path: Path, *, image_size: int = FIXTURE_IMAGE_SIZE,
                     temperature: float = FIXTURE_TEMPERATURE, seed: int = 0) -> Path:
    """Write ``runs/<name>/`` with model.keras, config.json, calibration.json and one eval."""
    import keras

    from tumorlib.classes import CLASS_NAMES, NUM_CLASSES
    from tumorlib.runs import CALIBRATION_FILE, CONFIG_FILE, MODEL_FILE, write_json

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    path.mkdir(parents=True, exist_ok=True)
    model.save(path / MODEL_FILE)
    write_json(path / CONFIG_FILE, {
        "image_size": image_size, "alpha": 0.35, "weights": "none (test fixture)",
        "dropout": 0.2, "head_units": 0, "seed": seed,
        "dataset": {"name": "brain_mri", "config": "clean", "version": "1.0.0"},
    })
    write_json(path / CALIBRATION_FILE, {"temperature": temperature})
    write_json(path / "eval" / "clean-test" / "metrics.json", {
        "config": "clean", "split": "test", "accuracy": 0.5, "macro_f1": 0.4,
        "per_class": {n: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 3}
                      for n in CLASS_NAMES},
    })
    return path


def make_images(n: int, *, seed: int = 0, fmt: str = "PNG") -> list[bytes]:
    """``n`` encoded images of varied sizes and content (grey and colour, square and not)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = int(rng.integers(20, 90)), int(rng.integers(20, 90))
        array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image = Image.fromarray(array)
        if i % 3 == 1:
            image = image.convert("L")
        buf = io.BytesIO()
        image.save(buf, format=fmt)
        out.append(buf.getvalue())
    return out
