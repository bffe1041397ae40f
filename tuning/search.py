"""``python -m tuning.search``: KerasTuner search for the classification head.

The search runs on cached pooled backbone features of the ``clean`` config's *train* split and is
scored on its *validation* split (``val_accuracy`` by default, or ``val_loss``); the test split is
never read. Results live in ``<directory>/<project-name>/`` (KerasTuner's oracle and trials, plus
``search_settings.json``, ``search_summary.json`` and ``trials.png``); the best hyperparameters
are written as JSON for ``python -m tumorlib.train --hparams FILE``.

Resuming: KerasTuner keeps every finished trial on disk, so running the same command again
continues the search (raise ``--max-trials`` to ask for more) instead of starting over; pass
``--overwrite`` to start afresh. A project is only resumed with the settings it was started with
(tuner, objective, features), since mixing them would compare unlike scores.

Distributed: with ``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP`` and ``KERASTUNER_ORACLE_PORT``
set, the process whose tuner id contains ``chief`` serves the oracle and the others run trials
(see docs/tuning.md). Only the chief writes the results, once all workers are done.

Example::

    python -m tuning.search --tuner hyperband --max-epochs 27 --data-dir /tmp/tfdsdata
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tumorlib.contracts.cli import EXPECTED_ERRORS, run_command
from tuning.cli_args import parse_args
from tuning.results import finished_trials, print_report, write_results
from tuning.tuners import is_chief, is_distributed, make_tuner

logger = logging.getLogger(__name__)

SETTINGS_FILE = "search_settings.json"
# Settings that must match to resume a project (max_trials may grow; verbosity may change).
RESUME_KEYS: tuple[str, ...] = (
    "tuner",
    "objective",
    "max_epochs",
    "factor",
    "image_size",
    "alpha",
    "weights",
    "feature_dim",
    "dataset_version",
)


class SearchSettingsMismatchError(ValueError):
    """An existing project was started with other settings; resuming it would mix results."""


@dataclass
class FeatureData:
    """Pooled features and one-hot labels of the train and validation splits."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    dataset_version: str = "unknown"

    @property
    def feature_dim(self) -> int:
        return int(self.x_train.shape[1])


def load_features(args: argparse.Namespace) -> FeatureData:
    """Cached pooled backbone features of clean/train and clean/validation (never test)."""
    import keras

    from tumorlib.data import pipeline as tdata
    from tumorlib.training.features import cached_features

    kwargs: dict[str, Any] = {
        "image_size": args.image_size,
        "alpha": args.alpha,
        "weights": args.weights,
        "data_dir_": args.data_dir,
    }
    if args.cache_dir is not None:
        kwargs["cache_dir"] = args.cache_dir
    x_train, y_train = cached_features("train", "clean", **kwargs)
    x_val, y_val = cached_features("validation", "clean", **kwargs)
    from tumorlib.contracts.classes import NUM_CLASSES

    def one_hot(y: np.ndarray) -> np.ndarray:
        y = np.asarray(y)
        return y.astype("float32") if y.ndim == 2 else keras.utils.to_categorical(y, NUM_CLASSES)

    version = str(tdata.get_builder("clean", args.data_dir).info.version)
    return FeatureData(
        np.asarray(x_train, "float32"),
        one_hot(y_train),
        np.asarray(x_val, "float32"),
        one_hot(y_val),
        dataset_version=version,
    )


def search_settings(args: argparse.Namespace, data: FeatureData) -> dict[str, Any]:
    """What defines a project: resuming with different values is refused."""
    from tumorlib.data.pipeline import DATASET_NAME

    return {
        "tuner": args.tuner,
        "objective": args.objective,
        "max_epochs": args.max_epochs,
        "factor": args.factor if args.tuner == "hyperband" else None,
        "max_trials": args.max_trials,
        "image_size": args.image_size,
        "alpha": args.alpha,
        "weights": "none" if args.weights is None else str(args.weights),
        "feature_dim": data.feature_dim,
        "dataset_version": data.dataset_version,
        "dataset": {
            "name": DATASET_NAME,
            "config": "clean",
            "train": "train",
            "score": "validation",
        },
        "seed": args.seed,
        "class_weight": bool(args.class_weight),
        "batch_size": args.batch_size,
        "patience": args.patience,
    }


def check_resume(project_dir: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The stored settings of an existing project, or ``None``; a clear error on a mismatch."""
    import json

    path = project_dir / SETTINGS_FILE
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    changed = {
        k: (stored.get(k), settings.get(k)) for k in RESUME_KEYS if stored.get(k) != settings.get(k)
    }
    if changed:
        details = "; ".join(f"{k}: was {old!r}, now {new!r}" for k, (old, new) in changed.items())
        raise SearchSettingsMismatchError(
            f"project {project_dir} was started with other settings ({details}). Pass "
            "--overwrite to start afresh, or choose another --project-name."
        )
    return stored


def _tuner_for(args: argparse.Namespace, data: FeatureData, overwrite: bool):
    """The tuner over the head hypermodel, class-weighted unless ``--no-class-weight``."""
    import keras

    from tumorlib.training.class_weights import balanced_class_weights
    from tuning.hypermodel import HeadHyperModel

    keras.utils.set_random_seed(args.seed)
    class_weight = balanced_class_weights(data.y_train) if args.class_weight else None
    hypermodel = HeadHyperModel(
        data.feature_dim, class_weight=class_weight, batch_size=args.batch_size
    )
    return make_tuner(
        args.tuner,
        hypermodel,
        objective=args.objective,
        max_trials=args.max_trials,
        max_epochs=args.max_epochs,
        factor=args.factor,
        directory=args.directory,
        project_name=args.project_name,
        seed=args.seed,
        overwrite=overwrite,
    )


def run_search(args: argparse.Namespace, data: FeatureData) -> dict[str, Any] | None:
    """Create or resume the project, run the remaining trials, write and print the results.

    Returns the summary (``None`` on a distributed worker, which leaves results to the chief).
    """
    import keras

    from tumorlib.contracts.runs import write_json

    settings = search_settings(args, data)
    project_dir = Path(args.directory) / args.project_name
    worker = is_distributed() and not is_chief()
    overwrite = args.overwrite
    if worker and overwrite:
        logger.info("--overwrite is left to the chief; this worker joins the chief's search.")
        overwrite = False
    if not overwrite:
        stored = check_resume(project_dir, settings)
        if stored is not None and not worker:
            logger.info(
                "Resuming the search in %s (pass --overwrite to start afresh).", project_dir
            )

    tuner = _tuner_for(args, data, overwrite)
    if not worker:
        write_json(project_dir / SETTINGS_FILE, settings)
        done = len(finished_trials(tuner.oracle))
        if done:
            logger.info("%d finished trial(s) kept; they are not run again.", done)

    callbacks = []
    if args.patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=args.patience))
    started = time.perf_counter()
    tuner.search(
        data.x_train,
        data.y_train,
        validation_data=(data.x_val, data.y_val),
        epochs=args.max_epochs,
        callbacks=callbacks,
        verbose=args.verbose,
    )
    elapsed = time.perf_counter() - started
    if worker:
        print(f"Worker {os.environ.get('KERASTUNER_TUNER_ID')} done; the chief writes the results.")
        return None
    summary = write_results(tuner, args, settings, elapsed)
    print_report(tuner.oracle, summary, elapsed, args.top)
    return summary


def main(argv: list[str] | None = None) -> int:
    """The command: 0 done, 1 the search failed, 2 bad flags (argparse)."""
    args = parse_args(argv)

    def body() -> None:
        run_search(args, load_features(args))

    return run_command(body, EXPECTED_ERRORS + (RuntimeError,))


if __name__ == "__main__":
    sys.exit(main())
