"""tf.data input pipelines over the ``brain_mri`` TFDS dataset.

Images are read from TFDS *undecoded* (``SkipDecoding``) and turned into model input by
:func:`tumorlib.images.preprocessing.preprocess_bytes`-equivalent steps — the same decode/resize/normalise
that the exported SavedModel runs on uploaded bytes. The pipeline is, per split::

    bytes -> decode -> resize -> cache -> [shuffle -> augment (train only)] -> normalise
          -> batch -> prefetch

Caching after the resize keeps the expensive JPEG decode to the first epoch; augmentation happens
after the cache so every epoch sees new random transforms. With ``keep`` (per-example acceptance
probabilities, :mod:`tumorlib.training.sampling`) the train pipeline draws each epoch on the graph:
shuffle -> repeat -> keep each example with its probability -> the epoch's size.
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from brain_mri.planning import CONFIGS
from tumorlib.contracts.classes import NUM_CLASSES
from tumorlib.images.preprocessing import DEFAULT_IMAGE_SIZE, augment, decode_image, normalize, resize

DATASET_NAME = "brain_mri"
__all__ = ["CONFIGS", "DATASET_NAME", "build", "get_builder", "load_pipeline", "load_split"]
# The module `tfds build datasets/brain_mri` imports the builder as; the package `brain_mri`.
BUILDER_MODULE = f"{DATASET_NAME}.{DATASET_NAME}_dataset_builder"
# Relative: resolved against the current directory (run commands from the project folder).
DEFAULT_DATA_DIR = Path("data") / "tensorflow_datasets"


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """Where built datasets live: ``path``, else ``$TFDS_DATA_DIR``, else :data:`DEFAULT_DATA_DIR`.

    The default is ``data/tensorflow_datasets`` relative to the current directory, not to this
    file, so an installed package (outside any checkout) still writes somewhere sensible.
    """
    if path is not None:
        return Path(path)
    return Path(os.environ.get("TFDS_DATA_DIR", DEFAULT_DATA_DIR))


def builder_dir() -> Path:
    """The ``brain_mri`` dataset folder (builder, checksums, ``dummy_data``), wherever installed."""
    return Path(str(importlib.resources.files(DATASET_NAME)))


def builder_class() -> type:
    """The ``Builder`` class of the ``brain_mri`` package.

    Imported under the module name that ``tfds build datasets/brain_mri`` uses
    (``brain_mri.brain_mri_dataset_builder``), so both routes share one class. A plain import
    (not ``tfds.core.community.builder_cls_from_module``, which imports with TFDS's registration
    switched off) also registers ``brain_mri`` by name, as
    ``DatasetBuilderTestCase.test_registered`` and ``tfds.builder("brain_mri")`` expect.
    """
    return importlib.import_module(BUILDER_MODULE).Builder


def get_builder(config: str = "clean", data_dir_: str | os.PathLike | None = None):
    """The ``brain_mri`` builder for ``config`` reading from/writing to the data directory."""
    if config not in CONFIGS:
        raise ValueError(f"unknown config {config!r}; expected one of {', '.join(CONFIGS)}")
    return builder_class()(config=config, data_dir=str(data_dir(data_dir_)))


def build(
    config: str = "clean",
    manual_dir: str | os.PathLike | None = None,
    data_dir_: str | os.PathLike | None = None,
):
    """Build (or reuse) a config of the dataset and return its builder."""
    builder = get_builder(config, data_dir_)
    download_config = tfds.download.DownloadConfig(
        manual_dir=str(manual_dir) if manual_dir is not None else None
    )
    builder.download_and_prepare(download_config=download_config)
    return builder


def load_split(
    split: str,
    config: str = "clean",
    data_dir_: str | os.PathLike | None = None,
) -> tf.data.Dataset:
    """Examples of one split as dicts with *encoded* image bytes (``image`` is ``tf.string``).

    Raises ``FileNotFoundError`` with the build command when the dataset is not built yet, and
    ``ValueError`` for an unknown split.
    """
    builder = get_builder(config, data_dir_)
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"dataset {DATASET_NAME}/{config} is not built in {builder.data_dir_root}; run "
            f"`tfds build datasets/{DATASET_NAME} --manual_dir ../shared/data "
            f"--data_dir {builder.data_dir_root}`"
        )
    available = list(builder.info.splits.keys())
    if split not in available:
        raise ValueError(
            f"unknown split {split!r} for {DATASET_NAME}/{config}; "
            f"available: {', '.join(available)}"
        )
    return builder.as_dataset(
        split=split,
        shuffle_files=False,
        decoders={"image": tfds.decode.SkipDecoding()},
    )


def make_pipeline(
    examples: tf.data.Dataset,
    *,
    training: bool,
    image_size: int = DEFAULT_IMAGE_SIZE,
    batch_size: int = 32,
    seed: int = 0,
    cache: bool | str = True,
    shuffle_buffer: int = 4096,
    acquisition: float = 0.0,
    keep: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Batches of ``(images, one_hot_labels)`` from undecoded examples.

    ``training`` switches on shuffling and augmentation; evaluation pipelines keep the source
    order, so predictions line up with :func:`load_split`'s examples. ``cache`` is ``True`` for
    memory, a path for a file cache, or ``False``. All randomness derives from ``seed``.
    ``acquisition``: probability of acquisition changes in the augmentation (training only).
    ``keep``: each example's acceptance probability, in source order; an epoch is then
    ``round(sum(keep))`` examples drawn with them, shuffled, new draws every epoch.
    ``weights``: each example's loss weight, in source order; batches are then
    ``(images, one_hot_labels, weights)``, which Keras takes as sample weights.
    """
    autotune = tf.data.AUTOTUNE
    extras = {
        name: np.asarray(values, np.float32)
        for name, values in (("keep", keep), ("weight", weights))
        if values is not None
    }

    def decode_resize(example, *extra):
        image = resize(decode_image(example["image"]), image_size)  # uint8: a compact cache
        label = tf.one_hot(example["label"], NUM_CLASSES)
        return (image, label, *extra)

    if extras:  # per-example values travel with the example through cache and shuffle
        examples = tf.data.Dataset.zip(examples, tf.data.Dataset.from_tensor_slices(extras))
    ds = examples.map(decode_resize, num_parallel_calls=autotune, deterministic=True)
    if cache:
        ds = ds.cache() if cache is True else ds.cache(str(cache))
    if keep is not None:
        ds = _sampled_epoch(ds, np.asarray(keep), seed)
    elif training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if training:
        # One independent [2]-int seed per example, new every epoch yet fixed by `seed`.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda item, s: (augment(item[0], s, acquisition), *item[1:]),
            num_parallel_calls=autotune,
            deterministic=True,
        )

    def finish(image, label, *extra):
        """Normalised image and label, and the loss weight when there is one."""
        out = (normalize(image), label)
        return out + (extra[0]["weight"],) if weights is not None else out

    ds = ds.map(finish, num_parallel_calls=autotune)
    return ds.batch(batch_size).prefetch(autotune)


def _sampled_epoch(ds: tf.data.Dataset, keep: np.ndarray, seed: int) -> tf.data.Dataset:
    """One epoch of ``(image, label)``: the whole split shuffled (so a memory cache fills in the
    first epoch), repeated, each example kept with its probability, cut at the expected size."""
    ds = ds.shuffle(len(keep), seed=seed, reshuffle_each_iteration=True).repeat()
    draws = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)
    scale = float(2**24)

    def kept(item, draw):
        uniform = tf.cast(tf.bitwise.bitwise_and(draw, 2**24 - 1), tf.float32) / scale
        return uniform < item[2]["keep"]

    ds = tf.data.Dataset.zip(ds, draws).filter(kept).map(lambda item, _: item)
    return ds.take(max(1, int(round(float(keep.sum())))))


def load_pipeline(
    split: str,
    config: str = "clean",
    *,
    training: bool | None = None,
    data_dir_: str | os.PathLike | None = None,
    **kwargs,
) -> tf.data.Dataset:
    """:func:`load_split` + :func:`make_pipeline`; ``training`` defaults to ``split == 'train'``."""
    if training is None:
        training = split == "train"
    return make_pipeline(load_split(split, config, data_dir_), training=training, **kwargs)
