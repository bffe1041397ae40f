"""Pooled backbone features of a split, computed once and cached on disk.

Why: with a frozen backbone, every epoch of head training (and every KerasTuner trial) would push
the same images through the same convolutions. Running the backbone once per split and fitting the
head on the pooled ``[N, F]`` features is the same optimisation problem (no augmentation in phase
one) at a tiny fraction of the cost on a CPU.

The cache key covers everything the features depend on: the dataset (name, config, split,
version, split size and bytes, data directory), the backbone (alpha, image size) and the exact
starting weights — a hash of the backbone's weight values themselves, so ``"imagenet"``, a local
file and a seeded random initialisation are all told apart without trusting file names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import keras
import numpy as np

from tumorlib.contracts.cli import progress_verbosity
from tumorlib.data import pipeline as data_lib
from tumorlib.images.preprocessing import DEFAULT_IMAGE_SIZE
from tumorlib.model.classifier import (
    DEFAULT_ALPHA,
    DEFAULT_WEIGHTS,
    build_backbone,
    describe_weights,
)

# Relative to the current directory, like runs/ and models/: an installed package has no repo.
DEFAULT_CACHE_DIR = Path("data") / "features"
CACHE_FORMAT = 1
RANDOM_INIT_SEED = 0
# How long a non-chief worker waits for the chief's cache entry before computing its own.
WORKER_WAIT_S = 900.0

logger = logging.getLogger(__name__)


def feature_extractor(backbone: keras.Model) -> keras.Model:
    """Normalised images -> globally average-pooled backbone features ``[N, F]``.

    The same pooling as :func:`tumorlib.model.classifier.build_model`, so a head trained on these
    features can be placed on the backbone unchanged.
    """
    inputs = keras.Input(shape=backbone.input_shape[1:], name="image")
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(backbone(inputs, training=False))
    return keras.Model(inputs, pooled, name="feature_extractor")


def weights_fingerprint(backbone: keras.Model) -> str:
    """SHA-256 over the backbone's weight values: identifies the exact starting point."""
    digest = hashlib.sha256()
    for weight in backbone.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(weight.path.encode())
        digest.update(str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def dataset_fingerprint(
    split: str, config: str, data_dir_: str | os.PathLike | None = None
) -> dict[str, object]:
    """What identifies one split of one built dataset (raises clear errors if not built)."""
    data_lib.load_split(split, config, data_dir_)  # validates config, split and that it is built
    builder = data_lib.get_builder(config, data_dir_)
    info = builder.info.splits[split]
    return {
        "name": data_lib.DATASET_NAME,
        "config": config,
        "split": split,
        "version": str(builder.info.version),
        "num_examples": int(info.num_examples),
        "num_bytes": int(info.num_bytes),
        "data_dir": str(Path(builder.data_dir_root).resolve()),
    }


def cache_key(dataset: dict[str, object], backbone: dict[str, object]) -> str:
    payload = json.dumps(
        {"format": CACHE_FORMAT, "dataset": dataset, "backbone": backbone}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def compute_features(
    extractor: keras.Model,
    split: str,
    config: str = "clean",
    *,
    image_size: int,
    data_dir_: str | os.PathLike | None = None,
    batch_size: int = 64,
    verbose: int | str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``extractor`` over a split (no augmentation, source order), with a progress bar."""
    examples = data_lib.load_split(split, config, data_dir_)
    pipeline = data_lib.make_pipeline(
        examples, training=False, image_size=image_size, batch_size=batch_size, cache=False
    )
    features = extractor.predict(pipeline.map(lambda x, y: x), verbose=progress_verbosity(verbose))
    labels = np.concatenate(
        list(examples.map(lambda e: e["label"]).batch(4096).as_numpy_iterator())
    )
    return features.astype(np.float32), labels.astype(np.int64)


def cached_features(
    split: str,
    config: str = "clean",
    *,
    image_size: int = DEFAULT_IMAGE_SIZE,
    alpha: float = DEFAULT_ALPHA,
    weights: str | os.PathLike | None = DEFAULT_WEIGHTS,
    data_dir_: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike = DEFAULT_CACHE_DIR,
    backbone: keras.Model | None = None,
    verbose: int | str = "auto",
    wait_s: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(features [N, F] float32, labels [N] int64)`` of a split, from the cache if present.

    ``wait_s`` > 0 (a non-chief training worker): wait that long for another process (the chief)
    to write the entry before computing it here, so the backbone pass runs once per cluster.

    ``backbone`` may be passed to reuse an already-built one (it must match ``image_size``,
    ``alpha`` and ``weights``); otherwise it is built with
    :func:`tumorlib.model.classifier.build_backbone` — for ``weights=None`` under the fixed seed
    :data:`RANDOM_INIT_SEED` (this resets Keras's global seed), so separate processes, e.g.
    distributed tuning workers, draw the same random backbone and share one cache entry.
    Labels are class indices in :data:`tumorlib.contracts.classes.CLASS_NAMES` order; rows follow
    the split's source order, like :func:`tumorlib.data.pipeline.load_split`.
    """
    dataset = dataset_fingerprint(split, config, data_dir_)
    if backbone is None:
        if weights is None:
            keras.utils.set_random_seed(RANDOM_INIT_SEED)
        backbone = build_backbone(image_size, alpha, weights)
    described = {
        "architecture": "MobileNetV2",
        "alpha": float(alpha),
        "image_size": int(image_size),
        "weights": describe_weights(weights, alpha, image_size),
        "weights_sha256": weights_fingerprint(backbone),
    }
    key = cache_key(dataset, {k: v for k, v in described.items() if k != "weights"})
    path = Path(cache_dir) / f"{data_lib.DATASET_NAME}-{config}-{split}-{key}.npz"
    deadline = time.monotonic() + wait_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    if wait_s and not path.exists():
        logger.warning("no cached features from the chief after %.0f s; computing here", wait_s)
    if path.exists():
        with np.load(path) as cached:
            return cached["features"], cached["labels"]
    features, labels = compute_features(
        feature_extractor(backbone),
        split,
        config,
        image_size=image_size,
        data_dir_=data_dir_,
        verbose=verbose,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, features=features, labels=labels)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache entry
    path.with_suffix(".json").write_text(
        json.dumps({"dataset": dataset, "backbone": described}, indent=2, sort_keys=True) + "\n"
    )
    return features, labels
