"""The two phases of training, each a Keras ``fit`` with the same callbacks.

1. **Head** on the frozen ImageNet backbone: by default on cached pooled features of the
   un-augmented train split (:mod:`tumorlib.training.features`) — the same optimisation as running
   the frozen backbone every epoch, minutes cheaper on a CPU — or through the backbone on images.
2. **Fine-tune** the top ``fine_tune_layers`` backbone layers at a lower learning rate on
   augmented images, BatchNorm layers frozen and in inference mode.

Both use EarlyStopping (restoring the best weights), ModelCheckpoint, ReduceLROnPlateau,
TensorBoard and CSVLogger, and the class weights of the train split. Under a ``tf.distribute``
strategy (:mod:`tumorlib.training.distribute`) compiling happens in the strategy's scope, pipelines
batch by the global size and shard by element, and ``BackupAndRestore`` lets a restarted job resume
from its last finished epoch. ``multi_worker`` trains each phase with
:mod:`tumorlib.training.custom_loop` instead of ``fit`` (Keras 3's ``fit`` fails there), with the
same callbacks' semantics and files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from tumorlib.contracts.classes import NUM_CLASSES
from tumorlib.contracts.cli import progress_verbosity
from tumorlib.contracts.runs import CHECKPOINT_DIR, HISTORY_FILE, LOG_DIR
from tumorlib.training.checkpoints import backup_dir
from tumorlib.training.sampling import Epochs
from tumorlib.training.train_config import TrainConfig

logger = logging.getLogger(__name__)

NO_PLAN = Epochs()  # every slice once per epoch, the class weights of the train split

PHASES = ("head", "fine_tune")


def callbacks(
    run_dir: Path, phase: str, patience: int, monitor: str = "val_loss", plateau: bool = True
) -> list:
    """Early stopping, best checkpoint, LR schedule, TensorBoard, CSV log and backup of a phase
    (``plateau=False``: the optimizer follows a schedule of its own, no ReduceLROnPlateau)."""
    import keras

    checkpoint = run_dir / CHECKPOINT_DIR / f"{phase}_best.keras"
    resuming = backup_dir(run_dir, phase).exists()
    rate = (
        keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, factor=0.3, patience=max(1, patience // 2), min_lr=1e-6, verbose=1
        )
        if plateau
        else _scheduled_rate_logger()
    )
    return [
        # First, so a restored epoch counter is in place before the others start.
        keras.callbacks.BackupAndRestore(str(backup_dir(run_dir, phase))),
        keras.callbacks.EarlyStopping(
            monitor=monitor, patience=patience, restore_best_weights=True, verbose=1
        ),
        keras.callbacks.ModelCheckpoint(
            checkpoint, monitor=monitor, save_best_only=True, verbose=0
        ),
        rate,
        keras.callbacks.TensorBoard(log_dir=str(run_dir / LOG_DIR / phase)),
        keras.callbacks.CSVLogger(str(run_dir / LOG_DIR / f"history_{phase}.csv"), append=resuming),
    ]


def _scheduled_rate_logger():
    """A callback that logs the rate a schedule has reached (Keras logs NaN for schedules), so
    the CSV log and TensorBoard show it; it runs before them."""
    import keras

    class ScheduledRate(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                rate = self.model.optimizer.learning_rate
                logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))

    return ScheduledRate()


def compile_model(model, learning_rate, label_smoothing: float, strategy=None) -> None:
    """Adam + label-smoothed categorical cross-entropy + accuracy, in ``strategy``'s scope;
    ``learning_rate`` is a number or a Keras schedule."""
    import contextlib

    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        _compile(model, learning_rate, label_smoothing)


def _compile(model, learning_rate, label_smoothing: float) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
    )


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


def pipelines(config: TrainConfig, augment_train: bool, strategy=None, epochs: Epochs = NO_PLAN):
    """Train and validation image pipelines (validation never augmented), global batches.

    ``epochs`` (:mod:`tumorlib.training.sampling`): each epoch draws with its acceptance
    probabilities, and its per-example loss weights ride along as sample weights."""
    from tumorlib.data.pipeline import load_split, make_pipeline
    from tumorlib.training import distribute

    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    kw: dict[str, Any] = dict(
        image_size=config.image_size, batch_size=config.batch_size * replicas, seed=config.seed
    )
    train = make_pipeline(
        load_split("train", config.dataset_config, config.data_dir),
        training=augment_train,
        acquisition=config.acquisition_augment if augment_train else 0.0,
        keep=epochs.keep,
        weights=epochs.weights,
        **kw,
    )
    val = make_pipeline(
        load_split("validation", config.dataset_config, config.data_dir), training=False, **kw
    )
    if config.strategy == "default":
        return train, val
    return distribute.shard_by_data(train), distribute.shard_by_data(val)


def _feature_backbone(model, config: TrainConfig):
    """The backbone features are computed with: the model's own, or outside any strategy a plain
    copy of it (a distributed model's ``predict`` would need every worker to take part)."""
    from tumorlib.model.classifier import backbone_of, build_backbone

    backbone = backbone_of(model)
    if config.strategy == "default":
        return backbone
    plain = build_backbone(config.image_size, config.alpha, None)
    plain.set_weights(backbone.get_weights())
    return plain


def train_head_on_features(
    model,
    config: TrainConfig,
    run_dir: Path,
    weights: dict,
    strategy=None,
    chief: bool = True,
    epochs: Epochs = NO_PLAN,
) -> None:
    """Phase one on cached pooled features; the fitted head is the model's head afterwards.

    ``epochs``' acceptance probabilities times its loss weights become per-example weights: the
    same objective, in expectation, as drawing epochs with those probabilities.

    Under a multi-worker strategy the chief computes the features and the others wait for its
    cache file (computing their own only if it never appears, e.g. without a shared cache dir).
    """
    from tumorlib.model.classifier import head_of
    from tumorlib.training import features as features_lib

    kwargs: dict[str, Any] = dict(
        image_size=config.image_size,
        alpha=config.alpha,
        weights=config.weights,
        data_dir_=config.data_dir,
        backbone=_feature_backbone(model, config),
        verbose=progress_verbosity(config.verbose),
        wait_s=0.0 if chief else features_lib.WORKER_WAIT_S,
    )
    if config.feature_cache_dir:
        kwargs["cache_dir"] = config.feature_cache_dir
    logger.info("Phase 1: pooled backbone features (computed once, then cached)")
    x_train, y_train = features_lib.cached_features("train", config.dataset_config, **kwargs)
    x_val, y_val = features_lib.cached_features("validation", config.dataset_config, **kwargs)
    head = head_of(model)
    compile_model(head, config.head_learning_rate, config.label_smoothing, strategy)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    logger.info("Phase 1: head on features (%d train, %d validation)", len(x_train), len(x_val))
    batch = config.batch_size * replicas
    train_in: dict[str, Any] = dict(x=x_train, y=one_hot(y_train), batch_size=batch, shuffle=True)
    if epochs.weights is not None:
        keep = 1.0 if epochs.keep is None else epochs.keep
        sample_weight = np.asarray(keep * epochs.weights, np.float32)
        train_in["sample_weight"] = sample_weight / sample_weight.mean()
    val_in: Any = (x_val, one_hot(y_val))
    if config.strategy == "multi_worker":  # Keras cannot split NumPy input across workers
        train_ds = _feature_dataset(
            x_train, y_train, batch, config.seed, train_in.get("sample_weight")
        )
        val_ds = _feature_dataset(x_val, y_val, batch, None)
        class_weights = None if "sample_weight" in train_in else weights
        _custom_fit(head, train_ds, val_ds, config, run_dir, "head", class_weights, strategy)
        return
    head.fit(
        **train_in,
        validation_data=val_in,
        epochs=config.head_epochs,
        class_weight=None if epochs.weights is not None else weights,
        callbacks=callbacks(run_dir, "head", config.head_patience),
        verbose=progress_verbosity(config.verbose),
    )


def _feature_dataset(
    x: np.ndarray, y: np.ndarray, batch: int, seed: int | None, weights: np.ndarray | None = None
):
    """In-memory features as a sharded tf.data pipeline (shuffled when ``seed`` is given), with
    each example's loss weight when ``weights`` is given."""
    import tensorflow as tf

    from tumorlib.training import distribute

    columns = (x, one_hot(y)) if weights is None else (x, one_hot(y), weights)
    ds = tf.data.Dataset.from_tensor_slices(columns)
    if seed is not None:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return distribute.shard_by_data(ds.batch(batch))


def train_head_on_images(
    model,
    config: TrainConfig,
    run_dir: Path,
    weights: dict,
    strategy=None,
    chief: bool = True,
    epochs: Epochs = NO_PLAN,
) -> None:
    """Phase one through the frozen backbone on un-augmented images (``--phase1 images``)."""
    train_ds, val_ds = pipelines(config, augment_train=False, strategy=strategy, epochs=epochs)
    compile_model(model, config.head_learning_rate, config.label_smoothing, strategy)
    logger.info("Phase 1: head on the frozen backbone (images)")
    class_weights = None if epochs.weights is not None else weights  # else in the batches
    _fit_phase(model, train_ds, val_ds, config, run_dir, "head", class_weights, strategy)


def fine_tune(
    model,
    config: TrainConfig,
    run_dir: Path,
    weights: dict,
    strategy=None,
    epochs: Epochs = NO_PLAN,
) -> None:
    """Phase two: unfreeze the top backbone layers (already done by the caller), fit on
    augmented images (drawn and weighted as ``epochs`` says, if it says anything). With
    ``fine_tune_schedule="cosine"`` the learning rate falls along a cosine over all
    ``fine_tune_epochs`` (to 3 % of the start) instead of dropping on plateaus."""
    rate = config.fine_tune_learning_rate
    if config.fine_tune_schedule == "cosine":
        import keras

        steps = config.fine_tune_epochs * _batches_per_epoch(config, strategy, epochs)
        rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=steps, alpha=0.03)
    compile_model(model, rate, config.label_smoothing, strategy)
    train_ds, val_ds = pipelines(config, augment_train=True, strategy=strategy, epochs=epochs)
    logger.info(
        "Phase 2: fine-tuning the top %d backbone layers (BatchNorm frozen)",
        config.fine_tune_layers,
    )
    class_weights = None if epochs.weights is not None else weights  # else in the batches
    _fit_phase(model, train_ds, val_ds, config, run_dir, "fine_tune", class_weights, strategy)


def _batches_per_epoch(config: TrainConfig, strategy, epochs: Epochs) -> int:
    """How many global batches one training epoch has (sampled epochs: their expected size)."""
    import math

    from tumorlib.evaluation.predictions import split_labels

    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if epochs.keep is not None:
        n = max(1, int(round(float(np.sum(epochs.keep)))))
    else:
        n = len(split_labels("train", config.dataset_config, config.data_dir))
    return math.ceil(n / (config.batch_size * replicas))


def _fit_phase(
    model,
    train_ds,
    val_ds,
    config: TrainConfig,
    run_dir: Path,
    phase: str,
    weights: dict | None,
    strategy,
) -> None:
    """One phase on image pipelines: ``Model.fit`` with the phase's callbacks, or the custom loop
    under ``multi_worker``."""
    head = phase == "head"
    epochs = config.head_epochs if head else config.fine_tune_epochs
    patience = config.head_patience if head else config.fine_tune_patience
    if config.strategy == "multi_worker":
        _custom_fit(model, train_ds, val_ds, config, run_dir, phase, weights, strategy)
        return
    plateau = head or config.fine_tune_schedule == "plateau"
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        class_weight=weights,
        verbose=progress_verbosity(config.verbose),
        callbacks=callbacks(run_dir, phase, patience, plateau=plateau),
    )


def _custom_fit(
    model,
    train_ds,
    val_ds,
    config: TrainConfig,
    run_dir: Path,
    phase: str,
    weights: dict | None,
    strategy,
) -> None:
    """A phase under ``multi_worker``: the custom loop (``fit`` fails there with Keras 3)."""
    from tumorlib.training import custom_loop

    head = phase == "head"
    spec = custom_loop.Phase(
        name=phase,
        epochs=config.head_epochs if head else config.fine_tune_epochs,
        patience=config.head_patience if head else config.fine_tune_patience,
        label_smoothing=config.label_smoothing,
        class_weights=weights,
        write_dir=run_dir,
        chief_dir=Path(config.runs_dir) / config.run_name,
    )
    custom_loop.fit(model, train_ds, val_ds, strategy, spec)


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
        # A resumed phase may log an epoch twice (killed between the log and the backup).
        frame = frame.drop_duplicates("epoch", keep="last").reset_index(drop=True)
        frame.insert(0, "phase", phase)
        frame["epoch"] = frame["epoch"] + offset
        offset = int(frame["epoch"].max()) + 1
        frames.append(frame)
    out = run_dir / HISTORY_FILE
    if frames:
        pd.concat(frames, ignore_index=True).to_csv(out, index=False)
    return out
