"""The two phases of training, each a Keras ``fit`` with the same callbacks.

1. **Head** on the frozen ImageNet backbone: by default on cached pooled features of the
   un-augmented train split (:mod:`tumorlib.features`) — the same optimisation as running the
   frozen backbone every epoch, minutes cheaper on a CPU — or through the backbone on images.
2. **Fine-tune** the top ``fine_tune_layers`` backbone layers at a lower learning rate on
   augmented images, BatchNorm layers frozen and in inference mode.

Both use EarlyStopping (restoring the best weights), ModelCheckpoint, ReduceLROnPlateau,
TensorBoard and CSVLogger, and the class weights of the train split.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from tumorlib.classes import NUM_CLASSES
from tumorlib.runs import CHECKPOINT_DIR, HISTORY_FILE, LOG_DIR
from tumorlib.train_config import TrainConfig

logger = logging.getLogger(__name__)

PHASES = ("head", "fine_tune")


def callbacks(run_dir: Path, phase: str, patience: int, monitor: str = "val_loss") -> list:
    """Early stopping, best checkpoint, LR schedule, TensorBoard and CSV log of one phase."""
    import keras

    checkpoint = run_dir / CHECKPOINT_DIR / f"{phase}_best.keras"
    return [
        keras.callbacks.EarlyStopping(
            monitor=monitor, patience=patience, restore_best_weights=True, verbose=1
        ),
        keras.callbacks.ModelCheckpoint(
            checkpoint, monitor=monitor, save_best_only=True, verbose=0
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, factor=0.3, patience=max(1, patience // 2), min_lr=1e-6, verbose=1
        ),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / LOG_DIR / phase)),
        keras.callbacks.CSVLogger(str(run_dir / LOG_DIR / f"history_{phase}.csv")),
    ]


def compile_model(model, learning_rate: float, label_smoothing: float) -> None:
    """Adam + label-smoothed categorical cross-entropy + accuracy."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


def pipelines(config: TrainConfig, augment_train: bool):
    """Train and validation image pipelines (validation never augmented)."""
    from tumorlib.data import load_split, make_pipeline

    kw: dict[str, Any] = dict(
        image_size=config.image_size, batch_size=config.batch_size, seed=config.seed
    )
    train = make_pipeline(
        load_split("train", config.dataset_config, config.data_dir), training=augment_train, **kw
    )
    val = make_pipeline(
        load_split("validation", config.dataset_config, config.data_dir), training=False, **kw
    )
    return train, val


def train_head_on_features(model, config: TrainConfig, run_dir: Path, weights: dict) -> None:
    """Phase one on cached pooled features; the fitted head is the model's head afterwards."""
    from tumorlib import features as features_lib
    from tumorlib.model import backbone_of, head_of

    kwargs: dict[str, Any] = dict(
        image_size=config.image_size,
        alpha=config.alpha,
        weights=config.weights,
        data_dir_=config.data_dir,
        backbone=backbone_of(model),
        verbose=config.verbose,
    )
    if config.feature_cache_dir:
        kwargs["cache_dir"] = config.feature_cache_dir
    logger.info("Phase 1: pooled backbone features (computed once, then cached)")
    x_train, y_train = features_lib.cached_features("train", config.dataset_config, **kwargs)
    x_val, y_val = features_lib.cached_features("validation", config.dataset_config, **kwargs)
    head = head_of(model)
    compile_model(head, config.head_learning_rate, config.label_smoothing)
    logger.info("Phase 1: head on features (%d train, %d validation)", len(x_train), len(x_val))
    head.fit(
        x_train,
        one_hot(y_train),
        validation_data=(x_val, one_hot(y_val)),
        epochs=config.head_epochs,
        batch_size=config.batch_size,
        class_weight=weights,
        callbacks=callbacks(run_dir, "head", config.head_patience),
        shuffle=True,
        verbose=config.verbose,
    )


def train_head_on_images(model, config: TrainConfig, run_dir: Path, weights: dict) -> None:
    """Phase one through the frozen backbone on un-augmented images (``--phase1 images``)."""
    train_ds, val_ds = pipelines(config, augment_train=False)
    compile_model(model, config.head_learning_rate, config.label_smoothing)
    logger.info("Phase 1: head on the frozen backbone (images)")
    model.fit(
        train_ds, validation_data=val_ds, epochs=config.head_epochs,
        class_weight=weights, verbose=config.verbose,
        callbacks=callbacks(run_dir, "head", config.head_patience),
    )  # fmt: skip


def fine_tune(model, config: TrainConfig, run_dir: Path, weights: dict) -> dict[str, int]:
    """Phase two: unfreeze the top backbone layers, fit on augmented images.

    Returns the trainable-layer counts of the phase, for the run's record.
    """
    from tumorlib.model import set_phase, trainable_layer_counts

    set_phase(model, "fine_tune", config.fine_tune_layers)
    counts = trainable_layer_counts(model)
    compile_model(model, config.fine_tune_learning_rate, config.label_smoothing)
    train_ds, val_ds = pipelines(config, augment_train=True)
    logger.info(
        "Phase 2: fine-tuning the top %d backbone layers (%d with weights; BatchNorm frozen)",
        config.fine_tune_layers,
        counts["backbone_trainable"],
    )
    model.fit(
        train_ds, validation_data=val_ds, epochs=config.fine_tune_epochs,
        class_weight=weights, verbose=config.verbose,
        callbacks=callbacks(run_dir, "fine_tune", config.fine_tune_patience),
    )  # fmt: skip
    return counts


def merge_histories(run_dir: Path) -> Path:
    """One ``history.csv`` over both phases (a ``phase`` column, a running ``epoch``)."""
    import pandas as pd

    frames = []
    offset = 0
    for phase in PHASES:
        path = run_dir / LOG_DIR / f"history_{phase}.csv"
        if not path.exists() or path.stat().st_size == 0:
            continue
        frame = pd.read_csv(path)
        frame.insert(0, "phase", phase)
        frame["epoch"] = frame["epoch"] + offset
        offset = int(frame["epoch"].max()) + 1
        frames.append(frame)
    out = run_dir / HISTORY_FILE
    if frames:
        pd.concat(frames, ignore_index=True).to_csv(out, index=False)
    return out
