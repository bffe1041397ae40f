"""A model's probabilities over one dataset split, with the one evaluation pipeline.

Why one helper: training's calibration, evaluation, abstention and the ensemble's calibration
all need "run this model over clean/validation (or test), un-augmented, in source order" — and
must feed it exactly the pixels serving does. They all come here.
"""

from __future__ import annotations

import os

import numpy as np

from tumorlib.contracts.cli import progress_verbosity


def split_labels(split: str, config: str, data_dir: str | os.PathLike | None) -> np.ndarray:
    """Integer labels of a split in source order (no image decoding)."""
    from tumorlib.data.pipeline import load_split

    examples = load_split(split, config, data_dir)
    batches = examples.map(lambda e: e["label"]).batch(4096).as_numpy_iterator()
    return np.concatenate(list(batches)).astype(np.int64)


def predict_split(
    model,
    split: str,
    config: str = "clean",
    data_dir: str | os.PathLike | None = None,
    *,
    image_size: int,
    batch_size: int = 64,
    verbose: int | str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Raw (untempered) probabilities ``[N, C]`` and integer labels ``[N]`` of a split.

    Un-augmented, uncached, in the split's source order, so rows line up with
    :func:`tumorlib.data.pipeline.load_split`'s examples.
    """
    from tumorlib.data.pipeline import load_split, make_pipeline

    pipeline = make_pipeline(
        load_split(split, config, data_dir),
        training=False,
        image_size=image_size,
        batch_size=batch_size,
        cache=False,
    )
    probabilities = model.predict(pipeline.map(lambda x, y: x), verbose=progress_verbosity(verbose))
    return np.asarray(probabilities), split_labels(split, config, data_dir)


def split_groups(split: str, config: str, data_dir: str | os.PathLike | None) -> np.ndarray:
    """Near-duplicate group ids of a split in source order (no image decoding), aligned with
    :func:`split_labels`: the pseudo-studies (:mod:`tumorlib.studies.pseudo_studies`) take a
    tumour's
    slices from one group, as neighbouring slices of one scan would be."""
    from tumorlib.data.pipeline import load_split

    examples = load_split(split, config, data_dir)
    batches = examples.map(lambda e: e["duplicate_group"]).batch(4096).as_numpy_iterator()
    return np.concatenate(list(batches)).astype(np.int64)
