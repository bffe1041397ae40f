"""One training phase as a custom loop: how ``--strategy multi_worker`` trains.

Why not ``Model.fit``: with Keras 3.15 / TF 2.21, ``fit`` under a ``MultiWorkerMirroredStrategy``
of two or more workers fails ("Attempt to convert a value (PerReplica ...) to a Tensor",
keras-team/keras#20585). A loop written the way TensorFlow's "custom training loop with
MultiWorkerMirroredStrategy" tutorial writes it works: ``experimental_distribute_dataset`` over the
same tf.data pipelines, a ``tf.function`` step run with ``strategy.run`` under a ``GradientTape``,
``tf.nn.compute_average_loss`` over the global batch, ``strategy.reduce`` for what is logged.

It keeps the fit path's numbers and files: the compiled optimizer and loss (label-smoothed
cross-entropy; class weights as sample weights), the logged loss and accuracy as Keras computes
them (the loss class-weighted; accuracy not: ``compile(metrics=...)`` is unweighted),
EarlyStopping (restoring the best weights), ReduceLROnPlateau and ModelCheckpoint with the same
settings, and the CSV history in CSVLogger's columns. ``BackupAndRestore`` becomes a
``tf.train.CheckpointManager`` per phase holding weights, optimizer, epoch, plateau state and best
weights: every worker restores from the *chief's* copy, so a restarted job resumes all workers at
the same epoch. Every worker saves (to its scratch folder), as the tutorial says it must.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from tumorlib.contracts.classes import NUM_CLASSES
from tumorlib.contracts.runs import CHECKPOINT_DIR, LOG_DIR
from tumorlib.training.checkpoints import backup_dir

logger = logging.getLogger(__name__)

# Slots of the checkpointed state vector.
EPOCH, BEST, WAIT, BEST_EPOCH, LR_BEST, LR_WAIT, LR = range(7)
LR_FACTOR, LR_MIN, LR_MIN_DELTA = 0.3, 1e-6, 1e-4  # ReduceLROnPlateau as the fit path sets it
CSV_COLUMNS = ("epoch", "accuracy", "learning_rate", "loss", "val_accuracy", "val_loss")


@dataclass
class Phase:
    """What one phase needs besides the model (compiled in the strategy's scope) and data."""

    name: str
    epochs: int
    patience: int
    label_smoothing: float
    class_weights: dict[int, float] | None  # None: the batches carry their loss weights
    write_dir: Path  # where this process writes: the run folder (chief) or its scratch folder
    chief_dir: Path  # the run folder: every worker restores the chief's checkpoint from it


def _step(model: Any, strategy: tf.distribute.Strategy, phase: Phase, train: bool) -> Callable:
    """A ``tf.function`` running one global batch on every replica; returns reduced sums
    ``[sum w*loss, sum correct, n]`` (w: in training the batch's own weights, else the class
    weights; in evaluation 1)."""
    import keras

    loss_fn = keras.losses.CategoricalCrossentropy(
        label_smoothing=phase.label_smoothing, reduction=None
    )
    by_class = phase.class_weights or dict.fromkeys(range(NUM_CLASSES), 1.0)
    weights = tf.constant([by_class[i] for i in range(NUM_CLASSES)], tf.float32)

    def replica(x: tf.Tensor, y: tf.Tensor, given: tf.Tensor | None = None) -> tf.Tensor:
        if not train:
            w = tf.ones(tf.shape(y)[:1])
        elif given is not None:
            w = given
        else:
            w = tf.gather(weights, tf.argmax(y, -1))
        n_local = tf.cast(tf.shape(y)[0], tf.float32)
        ctx = tf.distribute.get_replica_context()
        n_global = tf.cast(ctx.all_reduce(tf.distribute.ReduceOp.SUM, n_local), tf.int64)
        with tf.GradientTape() as tape:
            probs = model(x, training=train)
            per_example = loss_fn(y, probs)
            loss = tf.nn.compute_average_loss(
                per_example, sample_weight=w, global_batch_size=n_global
            )
        if train:
            grads = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        correct = tf.cast(tf.equal(tf.argmax(y, -1), tf.argmax(probs, -1)), tf.float32)
        return tf.stack([tf.reduce_sum(per_example * w), tf.reduce_sum(correct), n_local])

    @tf.function(reduce_retracing=True)
    def step(*batch: tf.Tensor) -> tf.Tensor:
        sums = strategy.run(replica, args=batch)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, sums, axis=None)

    return step


def _epoch(step: Callable, dataset: Any) -> np.ndarray:
    total = np.zeros(3)
    for batch in dataset:  # (x, y) or (x, y, loss weights)
        total += step(*batch).numpy()
    return total


def _plateau(state: tf.Variable, epoch: int, val_loss: float, patience: int, opt: Any) -> bool:
    """EarlyStopping then ReduceLROnPlateau, as Keras's callbacks decide; True: stop now.

    The state lives in a variable so that a restored job keeps counting where it stopped.
    """
    s = state.numpy()
    stop, improved = False, val_loss < s[BEST]
    s[WAIT] += 1
    if improved:
        s[BEST], s[BEST_EPOCH], s[WAIT] = val_loss, epoch, 0
    elif s[WAIT] >= patience and epoch > 0:
        stop = True
    if val_loss - LR_MIN_DELTA < s[LR_BEST]:
        s[LR_BEST], s[LR_WAIT] = val_loss, 0
    else:
        s[LR_WAIT] += 1
        if s[LR_WAIT] >= max(1, patience // 2) and s[LR] > np.float32(LR_MIN):
            s[LR] = max(s[LR] * LR_FACTOR, LR_MIN)
            opt.learning_rate = s[LR]
            s[LR_WAIT] = 0
            logger.info("Epoch %d: learning rate reduced to %g", epoch + 1, s[LR])
    state.assign(s)
    return stop


def _checkpoint(model: Any, strategy: tf.distribute.Strategy, phase: Phase):
    """Checkpoint (weights, optimizer, state, best weights), restored from the chief's copy."""
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)  # slots exist before a restore
    inf, lr = math.inf, float(np.asarray(model.optimizer.learning_rate))
    state = tf.Variable([0, inf, 0, -1, inf, 0, lr], dtype=tf.float64, trainable=False)
    best = [tf.Variable(w, trainable=False) for w in model.get_weights()]
    ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer, state=state, best=best)
    latest = tf.train.latest_checkpoint(str(backup_dir(phase.chief_dir, phase.name)))
    if latest:
        ckpt.restore(latest).assert_existing_objects_matched()
        model.optimizer.learning_rate = float(state.numpy()[LR])
        logger.info(
            "Phase %s: restored from %s, resuming at epoch %d",
            phase.name, latest, int(state.numpy()[EPOCH]),
        )  # fmt: skip
    manager = tf.train.CheckpointManager(
        ckpt, str(backup_dir(phase.write_dir, phase.name)), max_to_keep=1
    )
    return manager, state, best


def _log_row(path: Path, row: dict[str, float]) -> None:
    """Append one CSVLogger-style row (header first when the file is new)."""
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def fit(model: Any, train: tf.data.Dataset, val: tf.data.Dataset, strategy, phase: Phase) -> int:
    """Train ``model`` for one phase; returns the epoch it started at (> 0 after a restore).

    Every worker runs this with the same data; only the chief's files land in the run folder.
    """
    manager, state, best = _checkpoint(model, strategy, phase)
    start = int(state.numpy()[EPOCH])
    train_step, val_step = _step(model, strategy, phase, True), _step(model, strategy, phase, False)
    train_in = strategy.experimental_distribute_dataset(train)
    val_in = strategy.experimental_distribute_dataset(val)
    history = phase.write_dir / LOG_DIR / f"history_{phase.name}.csv"
    best_file = phase.write_dir / CHECKPOINT_DIR / f"{phase.name}_best.keras"
    for epoch in range(start, phase.epochs):
        lr = float(state.numpy()[LR])
        t, v = _epoch(train_step, train_in), _epoch(val_step, val_in)
        row = {"epoch": epoch, "accuracy": t[1] / t[2], "learning_rate": lr, "loss": t[0] / t[2],
               "val_accuracy": v[1] / v[2], "val_loss": v[0] / v[2]}  # fmt: skip
        logger.info("Phase %s epoch %d: %s", phase.name, epoch + 1, row)
        improved = row["val_loss"] < state.numpy()[BEST]
        stop = _plateau(state, epoch, row["val_loss"], phase.patience, model.optimizer)
        if improved:
            for var, value in zip(best, model.get_weights()):
                var.assign(value)
            model.save(best_file)
        _log_row(history, row)
        state.assign(tf.tensor_scatter_nd_update(state, [[EPOCH]], [epoch + 1.0]))
        manager.save(checkpoint_number=epoch + 1)  # every worker saves (collective-safe)
        if stop:
            logger.info("Phase %s: early stopping after epoch %d", phase.name, epoch + 1)
            break
    if state.numpy()[BEST_EPOCH] >= 0:  # EarlyStopping(restore_best_weights=True)
        model.set_weights([var.numpy() for var in best])
    return start
