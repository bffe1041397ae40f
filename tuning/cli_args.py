"""The command line of ``python -m tuning.search``: flags, their validators and cross-checks.

The validators are argparse ``type=`` functions, public so that ``bench/tuning.py`` checks its
flags the same way. Nothing heavy is imported, so ``--help`` and flag errors answer at once.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tuning.results import BEST_HPARAMS_FILE

TUNER_KINDS: tuple[str, ...] = ("hyperband", "bayesian", "random")
OBJECTIVES: dict[str, str] = {"val_accuracy": "max", "val_loss": "min"}
# Width multipliers for which keras.applications.MobileNetV2 has ImageNet weights.
MOBILENET_ALPHAS: tuple[float, ...] = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
DEFAULT_DIRECTORY = Path("runs") / "tuning"
DEFAULT_PROJECT = "head"
DEFAULT_MAX_TRIALS = 20  # bayesian / random


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def image_size_arg(text: str) -> int:
    value = positive_int(text)
    if value < 32:
        raise argparse.ArgumentTypeError(f"MobileNetV2 needs images of at least 32 px, got {value}")
    return value


def alpha_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value not in MOBILENET_ALPHAS:
        choices = ", ".join(str(a) for a in MOBILENET_ALPHAS)
        raise argparse.ArgumentTypeError(f"alpha must be one of {choices}, got {value}")
    return value


def weights_arg(text: str) -> str | None:
    if text == "imagenet":
        return text
    if text.lower() == "none":
        return None
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(
            f"weights must be 'imagenet', 'none' or a path to a weights file; no file at {text!r}"
        )
    return text


def project_name(text: str) -> str:
    if not text or text in (".", "..") or "/" in text or os.sep in text:
        raise argparse.ArgumentTypeError(
            f"project name must be a plain folder name (no '/'), got {text!r}"
        )
    return text


def add_feature_flags(parser: argparse.ArgumentParser) -> None:
    """Where the features come from: dataset, cache, backbone, and how the head is fitted."""
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="TFDS data dir (default: $TFDS_DATA_DIR/data)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="feature cache (default: tumorlib.training.features')",
    )
    parser.add_argument(
        "--image-size", type=image_size_arg, default=224, help="backbone input size"
    )
    parser.add_argument(
        "--alpha", type=alpha_arg, default=0.35, help="MobileNetV2 width multiplier"
    )
    parser.add_argument(
        "--weights",
        type=weights_arg,
        default="imagenet",
        help="backbone weights: 'imagenet' (Keras cache), a local weights file, or 'none'",
    )
    parser.add_argument("--batch-size", type=positive_int, default=32, help="head batch size")
    parser.add_argument(
        "--no-class-weight",
        dest="class_weight",
        action="store_false",
        help="do not weight classes by their inverse frequency in the train split",
    )


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
        type=positive_int,
        default=None,
        help=(
            f"trials in all (bayesian/random: default {DEFAULT_MAX_TRIALS}; hyperband: an optional "
            "cap, default the full Hyperband schedule). Raise it to extend a finished search."
        ),
    )
    parser.add_argument(
        "--max-epochs",
        type=positive_int,
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
        type=non_negative_int,
        default=3,
        help="stop a trial after this many epochs without val_loss improving (0 = off)",
    )
    parser.add_argument("--directory", type=Path, default=DEFAULT_DIRECTORY, help="search folder")
    parser.add_argument(
        "--project-name", type=project_name, default=DEFAULT_PROJECT, help="subfolder of a search"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    parser.add_argument(
        "--overwrite", action="store_true", help="start afresh instead of resuming the project"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"best-hyperparameters JSON (default: <directory>/<project-name>/{BEST_HPARAMS_FILE})",
    )
    add_feature_flags(parser)
    parser.add_argument(
        "--top", type=positive_int, default=10, help="how many best trials to print"
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
