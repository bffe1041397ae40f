"""Which devices and machines train: the ``tf.distribute`` strategy, and who writes what.

``--strategy default`` is TensorFlow's default strategy (one process, one device): nothing
changes. ``mirrored`` copies the model onto every local GPU (or every logical CPU device when
there is no GPU and more than one CPU device was configured, as the tests do) and all-reduces
gradients. ``multi_worker`` does the same across processes/machines; each reads its role from
``TF_CONFIG`` (``{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": i}}``), as
Keras's multi-worker tutorial documents, and trains with :mod:`tumorlib.training.custom_loop` (Keras
3's ``fit`` fails under two or more workers, keras-team/keras#20585).

The batch size a run is given is per replica; the pipelines batch by the global size
(per replica x replicas), so the loss curve of N replicas matches one device at the global size.
Only the chief writes into the run folder; the other workers write the same files into a
private scratch folder (:func:`write_dir`), removed when training ends.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

logger = logging.getLogger(__name__)

STRATEGIES: tuple[str, ...] = ("default", "mirrored", "multi_worker")


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy called ``name`` (see :data:`STRATEGIES`)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        cpus = tf.config.list_logical_devices("CPU")
        devices = [d.name for d in gpus] if gpus else [d.name for d in cpus]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "--strategy multi_worker needs TF_CONFIG (cluster and task) in the environment; "
                "see docs/distributed.md"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")


def task() -> tuple[str | None, int]:
    """``(task type, index)`` from ``TF_CONFIG``; ``(None, 0)`` outside a cluster."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    info = config.get("task", {})
    return info.get("type"), int(info.get("index", 0))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The chief writes the run folder: a ``chief`` task, else worker 0, else the only process."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, index = task()
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return (
        task_type is None
        or task_type == "chief"
        or (task_type == "worker" and index == 0 and "chief" not in cluster)
    )


def write_dir(run_dir: Path, strategy: tf.distribute.Strategy) -> Path:
    """Where this process writes run files: the run folder (chief) or a per-worker scratch one.

    The scratch path is fixed by run name and task index, so a restarted worker finds its own
    ``BackupAndRestore`` state again.
    """
    if is_chief(strategy):
        return run_dir
    task_type, index = task()
    return Path(tempfile.gettempdir()) / f"tumorlib-{run_dir.name}-{task_type}{index}"


def remove_scratch(directory: Path, run_dir: Path) -> None:
    """Delete a worker's scratch folder (never the run folder itself)."""
    if directory != run_dir:
        shutil.rmtree(directory, ignore_errors=True)


def global_batch_size(per_replica: int, strategy: tf.distribute.Strategy) -> int:
    return per_replica * strategy.num_replicas_in_sync


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Auto-shard by element, not by file: a split here has few files (often one)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def set_mixed_precision(enabled: bool) -> None:
    """``mixed_float16`` on a GPU; a clear refusal without one (CPUs gain nothing from it)."""
    import keras

    if not enabled:
        return
    if not tf.config.list_physical_devices("GPU"):
        raise ValueError(
            "--mixed-precision needs a GPU (float16 compute is slower than float32 on a CPU); "
            "this machine has none"
        )
    keras.mixed_precision.set_global_policy("mixed_float16")
    logger.info("Mixed precision: mixed_float16 (variables float32, compute float16)")
