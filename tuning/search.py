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
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TUNER_KINDS: tuple[str, ...] = ("hyperband", "bayesian", "random")
OBJECTIVES: dict[str, str] = {"val_accuracy": "max", "val_loss": "min"}
# Width multipliers for which keras.applications.MobileNetV2 has ImageNet weights.
MOBILENET_ALPHAS: tuple[float, ...] = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
DEFAULT_DIRECTORY = Path("runs") / "tuning"
DEFAULT_PROJECT = "head"
DEFAULT_MAX_TRIALS = 20  # bayesian / random
SETTINGS_FILE = "search_settings.json"
SUMMARY_FILE = "search_summary.json"
BEST_HPARAMS_FILE = "best_hparams.json"
PLOT_FILE = "trials.png"
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


# --------------------------------------------------------------------------------------- flags
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _image_size(text: str) -> int:
    value = _positive_int(text)
    if value < 32:
        raise argparse.ArgumentTypeError(f"MobileNetV2 needs images of at least 32 px, got {value}")
    return value


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value not in MOBILENET_ALPHAS:
        choices = ", ".join(str(a) for a in MOBILENET_ALPHAS)
        raise argparse.ArgumentTypeError(f"alpha must be one of {choices}, got {value}")
    return value


def _weights(text: str) -> str | None:
    if text == "imagenet":
        return text
    if text.lower() == "none":
        return None
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(
            f"weights must be 'imagenet', 'none' or a path to a weights file; no file at {text!r}"
        )
    return text


def _project_name(text: str) -> str:
    if not text or text in (".", "..") or "/" in text or os.sep in text:
        raise argparse.ArgumentTypeError(
            f"project name must be a plain folder name (no '/'), got {text!r}"
        )
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tuning.search",
        description=(
            "KerasTuner search for the classification head on cached backbone features of the "
            "clean config (train split; scored on validation, never test)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--tuner", choices=TUNER_KINDS, default="hyperband", help="search algorithm"
    )
    parser.add_argument(
        "--max-trials",
        type=_positive_int,
        default=None,
        help=(
            f"trials in all (bayesian/random: default {DEFAULT_MAX_TRIALS}; hyperband: an optional "
            "cap, default the full Hyperband schedule). Raise it to extend a finished search."
        ),
    )
    parser.add_argument(
        "--max-epochs",
        type=_positive_int,
        default=20,
        help="epochs per trial (hyperband: the most any model is trained)",
    )
    parser.add_argument(
        "--factor", type=int, default=3, help="hyperband: reduction factor between rounds (>= 2)"
    )
    parser.add_argument(
        "--objective", choices=tuple(OBJECTIVES), default="val_accuracy", help="validation metric"
    )
    parser.add_argument(
        "--patience",
        type=_non_negative_int,
        default=3,
        help="stop a trial after this many epochs without val_loss improving (0 = off)",
    )
    parser.add_argument("--directory", type=Path, default=DEFAULT_DIRECTORY, help="search folder")
    parser.add_argument(
        "--project-name", type=_project_name, default=DEFAULT_PROJECT, help="subfolder of a search"
    )
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="random seed")
    parser.add_argument(
        "--overwrite", action="store_true", help="start afresh instead of resuming the project"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"best-hyperparameters JSON (default: <directory>/<project-name>/{BEST_HPARAMS_FILE})",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="TFDS data dir (default: $TFDS_DATA_DIR/data)"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="feature cache (default: tumorlib.features')"
    )
    parser.add_argument("--image-size", type=_image_size, default=224, help="backbone input size")
    parser.add_argument("--alpha", type=_alpha, default=0.35, help="MobileNetV2 width multiplier")
    parser.add_argument(
        "--weights",
        type=_weights,
        default="imagenet",
        help="backbone weights: 'imagenet' (Keras cache), a local weights file, or 'none'",
    )
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="head batch size")
    parser.add_argument(
        "--no-class-weight",
        dest="class_weight",
        action="store_false",
        help="do not weight classes by their inverse frequency in the train split",
    )
    parser.add_argument(
        "--top", type=_positive_int, default=10, help="how many best trials to print"
    )
    parser.add_argument(
        "--verbose", type=int, choices=(0, 1, 2), default=1, help="Keras/KerasTuner verbosity"
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check the flags; any problem exits with an argparse error message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.factor < 2:
        parser.error(f"--factor must be >= 2, got {args.factor}")
    if args.tuner == "hyperband" and args.max_epochs < 2:
        parser.error("--max-epochs must be >= 2 for hyperband (it trains models for 1..N epochs)")
    if args.data_dir is not None and not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder")
    if args.output is not None and args.output.is_dir():
        parser.error(f"--output {args.output} is a folder; give a file name such as hparams.json")
    if args.max_trials is None and args.tuner != "hyperband":
        args.max_trials = DEFAULT_MAX_TRIALS
    return args


# ------------------------------------------------------------------------------------ features
def load_features(args: argparse.Namespace) -> FeatureData:
    """Cached pooled backbone features of clean/train and clean/validation (never test)."""
    import keras

    from tumorlib import data as tdata
    from tumorlib.features import cached_features

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
    from tumorlib.classes import NUM_CLASSES

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


# ------------------------------------------------------------------------------------- tuners
def is_distributed() -> bool:
    return "KERASTUNER_ORACLE_IP" in os.environ


def is_chief() -> bool:
    return is_distributed() and "chief" in os.environ.get("KERASTUNER_TUNER_ID", "")


def _tuner_classes() -> dict[str, type]:
    """KerasTuner's tuners, minus their unconditional ``tensorboard`` import.

    On the TensorFlow backend KerasTuner 1.4.8 imports the ``tensorboard`` package in every trial
    only to attach its HParams plugin to ``TensorBoard`` callbacks. The search passes none, and
    ``tensorboard`` is not a dependency of this project (TensorFlow 2.21 no longer pulls it in), so
    the hook is skipped unless a ``TensorBoard`` callback is actually given.
    """
    import keras_tuner

    class SkipHParamsHook:
        def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
            if any(type(cb).__name__ == "TensorBoard" for cb in callbacks):
                super()._configure_tensorboard_dir(callbacks, trial, execution)

    return {
        "hyperband": type("Hyperband", (SkipHParamsHook, keras_tuner.Hyperband), {}),
        "bayesian": type(
            "BayesianOptimization", (SkipHParamsHook, keras_tuner.BayesianOptimization), {}
        ),
        "random": type("RandomSearch", (SkipHParamsHook, keras_tuner.RandomSearch), {}),
    }


def make_tuner(
    kind: str,
    hypermodel,
    *,
    objective: str = "val_accuracy",
    max_trials: int | None = None,
    max_epochs: int = 20,
    factor: int = 3,
    directory: str | os.PathLike = DEFAULT_DIRECTORY,
    project_name: str = DEFAULT_PROJECT,
    seed: int = 0,
    overwrite: bool = False,
):
    """A KerasTuner tuner of ``kind`` (hyperband, bayesian or random) over ``hypermodel``.

    With ``overwrite=False`` an existing project in ``directory/project_name`` is reloaded and
    its finished trials are kept (KerasTuner's own resume).
    """
    import keras_tuner

    if kind not in TUNER_KINDS:
        raise ValueError(f"unknown tuner {kind!r}; expected one of {', '.join(TUNER_KINDS)}")
    if objective not in OBJECTIVES:
        raise ValueError(
            f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}"
        )
    classes = _tuner_classes()
    common: dict[str, Any] = {
        "hypermodel": hypermodel,
        "objective": keras_tuner.Objective(objective, direction=OBJECTIVES[objective]),
        "seed": seed,
        "directory": str(directory),
        "project_name": project_name,
        "overwrite": overwrite,
    }
    if kind == "hyperband":
        tuner = classes["hyperband"](max_epochs=max_epochs, factor=factor, **common)
        if max_trials is not None:
            # HyperbandOracle takes no max_trials, but the base Oracle honours the attribute:
            # `create_trial` stops once that many trials exist.
            tuner.oracle.max_trials = max_trials
        return tuner
    if max_trials is None:
        max_trials = DEFAULT_MAX_TRIALS
    if kind == "bayesian":
        return classes["bayesian"](max_trials=max_trials, **common)
    return classes["random"](max_trials=max_trials, **common)


def search_settings(args: argparse.Namespace, data: FeatureData) -> dict[str, Any]:
    """What defines a project: resuming with different values is refused."""
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
            "name": "brain_mri",
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


# ------------------------------------------------------------------------------------ results
def finished_trials(oracle) -> list:
    """Completed trials, best first."""
    from keras_tuner.engine.trial import TrialStatus

    done = [t for t in oracle.trials.values() if t.status == TrialStatus.COMPLETED]
    reverse = oracle.objective.direction == "max"
    return sorted(done, key=lambda t: t.score, reverse=reverse)


def trials_table(oracle, top: int = 10) -> str:
    """The best ``top`` trials as a text table (rank, trial, score, best epoch, hyperparameters)."""
    import pandas as pd

    from tuning.hypermodel import HPARAM_KEYS

    rows = []
    for rank, trial in enumerate(finished_trials(oracle)[:top], start=1):
        values = trial.hyperparameters.values
        row = {"rank": rank, "trial": trial.trial_id, oracle.objective.name: trial.score}
        row["best_epoch"] = (trial.best_step or 0) + 1
        if "tuner/epochs" in values:  # Hyperband: the epoch budget of this trial
            row["epochs"] = values["tuner/epochs"]
        row.update({k: values.get(k) for k in HPARAM_KEYS})
        rows.append(row)
    if not rows:
        return "(no completed trials)"
    table = pd.DataFrame(rows)
    return table.to_string(
        index=False,
        formatters={
            oracle.objective.name: "{:.4f}".format,
            "learning_rate": "{:.2e}".format,
            "dropout": "{:.2f}".format,
            "label_smoothing": "{:.2f}".format,
        },
    )


def plot_trials(oracle, path: Path) -> None:
    """Objective of every finished trial in the order they ended, and the best so far (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from keras_tuner.engine.trial import TrialStatus

    ended = [oracle.trials[i] for i in oracle.end_order if i in oracle.trials]
    ended = [t for t in ended if t.status == TrialStatus.COMPLETED and t.score is not None]
    scores = np.array([t.score for t in ended], dtype=float)
    best = (
        (
            np.maximum.accumulate(scores)
            if oracle.objective.direction == "max"
            else np.minimum.accumulate(scores)
        )
        if len(scores)
        else scores
    )
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(1, len(scores) + 1)
    ax.scatter(x, scores, s=18, label="trial", color="tab:blue")
    ax.plot(x, best, color="tab:orange", label="best so far")
    ax.set_xlabel("finished trial")
    ax.set_ylabel(f"{oracle.objective.name} (clean/validation)")
    ax.set_title("Head hyperparameter search")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_results(
    tuner, args: argparse.Namespace, settings: dict[str, Any], elapsed_s: float
) -> dict[str, Any]:
    """Write the best-hyperparameters JSON, the summary JSON and the PNG; return the summary."""
    from keras_tuner.engine.trial import TrialStatus

    from tumorlib.runs import write_json
    from tuning.hypermodel import hparams_dict

    project_dir = Path(tuner.project_dir)
    ranked = finished_trials(tuner.oracle)
    if not ranked:
        raise RuntimeError(f"no trial of {project_dir} finished; nothing to write")
    best = ranked[0]
    best_hparams = hparams_dict(best.hyperparameters)
    output = args.output or project_dir / BEST_HPARAMS_FILE
    write_json(Path(output), best_hparams)
    statuses: dict[str, int] = {}
    for trial in tuner.oracle.trials.values():
        statuses[trial.status] = statuses.get(trial.status, 0) + 1
    summary = {
        "best_hparams": best_hparams,
        "best_hparams_file": str(output),
        "best_trial": best.trial_id,
        "best_score": float(best.score),
        "objective": tuner.oracle.objective.name,
        "scored_on": "brain_mri/clean validation split",
        "trials_completed": statuses.get(TrialStatus.COMPLETED, 0),
        "trials_by_status": statuses,
        "elapsed_s_this_run": round(elapsed_s, 1),
        "settings": settings,
    }
    write_json(project_dir / SUMMARY_FILE, summary)
    plot_trials(tuner.oracle, project_dir / PLOT_FILE)
    return summary


# ---------------------------------------------------------------------------------------- run
def run_search(args: argparse.Namespace, data: FeatureData) -> dict[str, Any] | None:
    """Create or resume the project, run the remaining trials, write and print the results.

    Returns the summary (``None`` on a distributed worker, which leaves results to the chief).
    """
    import keras

    from tumorlib.runs import write_json
    from tuning.hypermodel import HeadHyperModel, balanced_class_weight

    settings = search_settings(args, data)
    project_dir = Path(args.directory) / args.project_name
    worker = is_distributed() and not is_chief()
    overwrite = args.overwrite
    if worker and overwrite:
        print("Note: --overwrite is left to the chief; this worker joins the chief's search.")
        overwrite = False
    if not overwrite:
        stored = check_resume(project_dir, settings)
        if stored is not None and not worker:
            print(f"Resuming the search in {project_dir} (pass --overwrite to start afresh).")

    keras.utils.set_random_seed(args.seed)
    class_weight = balanced_class_weight(data.y_train) if args.class_weight else None
    hypermodel = HeadHyperModel(
        data.feature_dim, class_weight=class_weight, batch_size=args.batch_size
    )
    tuner = make_tuner(
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
    if not worker:
        write_json(project_dir / SETTINGS_FILE, settings)
        done = len(finished_trials(tuner.oracle))
        if done:
            print(f"{done} finished trial(s) kept; they are not run again.")

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
    print()
    print(f"Best trials ({tuner.oracle.objective.name} on clean/validation):")
    print(trials_table(tuner.oracle, args.top))
    print()
    print(
        f"{summary['trials_completed']} trial(s) completed; this run took {elapsed:.1f} s. "
        f"Best {summary['objective']} = {summary['best_score']:.4f} "
        f"(trial {summary['best_trial']})."
    )
    print(f"Best hyperparameters -> {summary['best_hparams_file']}")
    print(f"Use them: python -m tumorlib.train --hparams {summary['best_hparams_file']}")
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        data = load_features(args)
        run_search(args, data)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"python -m tuning.search: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
