"""A tiny, learnable ``brain_mri`` dataset for training and evaluation tests.

Each image is an independent random texture (so the builder's de-duplication keeps every one) plus
a class-dependent brightness offset. The offset is invisible to the near-duplicate measure, which
mean-centres its thumbnails, but easy for a network to learn — so a few training steps measurably
lower the loss.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.archive_fixtures import FOLDERS, encode, texture
from tumorlib import data

OFFSETS = (0, 45, 90, 135)  # per class, in folder (= CLASS_NAMES) order


def write_learnable_archive(root: Path, *, training: int = 24, testing: int = 6) -> Path:
    """Write ``Training/<class>_tumor/*.jpg`` and ``Testing/...`` under ``root``."""
    rng = np.random.default_rng(7)
    for split, count in (("Training", training), ("Testing", testing)):
        for offset, folder in zip(OFFSETS, FOLDERS):
            for k in range(count):
                pixels = (texture(rng).astype(np.float32) * 0.45 + offset).astype(np.uint8)
                path = root / split / folder / f"{folder[:2]} ({k}).jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(encode(pixels))
    return root


def build_learnable_dataset(tmp: Path, configs: tuple[str, ...] = ("clean",)) -> Path:
    """Build the given configs of ``brain_mri`` from a generated archive; returns the data dir."""
    archive = write_learnable_archive(tmp / "archive")
    data_dir = tmp / "tfds"
    for config in configs:
        data.build(config, manual_dir=archive, data_dir_=data_dir)
    return data_dir


def calibrated_backbone_file(path: Path, image_size: int, images: np.ndarray) -> Path:
    """Save a random MobileNetV2 whose BatchNorm statistics are fitted to ``images``.

    A randomly initialised MobileNetV2 in inference mode shrinks its activations ~1e-12-fold
    (unit running variances against far smaller real ones), so its features carry no usable
    signal. Setting every BatchNorm's running statistics from one batch (momentum 0, one
    forward pass in training mode) gives a small, honest stand-in for pretrained weights,
    saved as a real weights file.
    """
    import keras

    from tumorlib.model import build_backbone

    keras.utils.set_random_seed(3)
    backbone = build_backbone(image_size, weights=None)
    batch_norms = [
        lyr for lyr in backbone.layers if isinstance(lyr, keras.layers.BatchNormalization)
    ]
    for layer in batch_norms:
        layer.momentum = 0.0
    backbone(images.astype("float32"), training=True)
    for layer in batch_norms:
        layer.momentum = 0.999
    backbone.save_weights(path)
    return path
