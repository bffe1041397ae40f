"""The main job, end to end on the embedded default: ``tumorlib main`` (``scripts/main``).

build the dataset (every config) -> train one model (MobileNetV2 α 1.0 at 224 px on SARTAJ's
``clean`` split plus the TCGA-LGG archive's training patients, epochs sampled per
:mod:`tumorlib.training.sampling`; ``--sartaj-only`` leaves the archive out) -> evaluate
(``multi_sequence``/test per source and sequence, ``clean``/test, ``original``/test) -> safety:
abstention thresholds, the study rule, the input gate -> export to models/brain_mri/<version>/,
then the served model checked on the second source and the archive's test patients, and the model
card -> open the upload page on the in-process model.

It orchestrates by calling the library's functions and the export (each step can also be run on
its own: ``tumorlib --help`` lists them). It sits above ``serving`` for that reason: the library
never imports deployment. The safety steps run before the export because the export embeds what
they write (the abstention thresholds and the gate's statistics) into the SavedModel;
``--skip-safety`` exports without them. Nothing assumes a checkout: the shipped hyperparameters
are package data, other defaults are relative to the current folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import NoReturn

from brain_mri.lgg import ARCHIVE_NAME
from tumorlib.contracts.cli import EXPECTED_ERRORS, CommandError, run_command
from tumorlib.contracts.serving_contract import MODEL_BASE_PATH, MODEL_NAME
from tumorlib_cli import page
from tumorlib_cli.build import (
    add_dataset_arguments,
    build_dataset,
    buildable_configs,
    default_manual_dir,
)

# The head chosen by the KerasTuner search on clean/validation (docs/tuning.md), shipped as
# package data; the main job trains with it unless told otherwise.
DEFAULT_HPARAMS = resources.files("tuning") / "best_hparams.json"
STEPS = ("build", "train", "evaluate", "safety", "export")
# What a failing step raises; reported as "<step> failed: ..." and exit code 1.
STEP_ERRORS: tuple[type[BaseException], ...] = (*EXPECTED_ERRORS, OSError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tumorlib main",
        description="Build the dataset, train, evaluate, export and open the upload page.",
    )
    add_dataset_arguments(parser)
    parser.add_argument("--run", help="reuse this trained run folder instead of training")
    parser.add_argument("--run-name", default="", help="name of the new run folder")
    parser.add_argument(
        "--image-size", type=int, default=None, help="input size of the model (default 224)"
    )
    parser.add_argument(
        "--alpha",
        type=float,
        choices=(0.35, 1.0),
        default=None,
        help="MobileNetV2 width (default 1.0; the weights must be in Keras's cache or online)",
    )
    parser.add_argument(
        "--sartaj-only",
        action="store_true",
        help="train on SARTAJ only, without the TCGA-LGG archive (CC BY-NC-SA 4.0: "
        "non-commercial use); the archive's test patients are still measured",
    )
    parser.add_argument("--seed", type=int, default=None, help="training seed (default 42)")
    parser.add_argument(
        "--hparams",
        default=None,
        help="head hyperparameters JSON for training (default: the shipped search result, "
        "tuning/best_hparams.json; 'none': tumorlib.training.train's untuned defaults)",
    )
    parser.add_argument(
        "--stop-after",
        choices=STEPS,
        help="stop after this step (default: run everything and open the app)",
    )
    parser.add_argument(
        "--skip-safety",
        action="store_true",
        help="skip abstention, study rule and input gate; the export then has no abstain or "
        "in_distribution outputs (use only to save time on a throw-away run)",
    )
    parser.add_argument(
        "--model-base-path",
        default=str(MODEL_BASE_PATH),
        help=f"where the export's versions go (default {MODEL_BASE_PATH})",
    )
    parser.add_argument(
        "--app-port", type=int, default=page.DEFAULT_PORT, help="port of the upload page"
    )
    return parser


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


@contextmanager
def failing_as(what: str) -> Iterator[None]:
    """Turn a step's expected failure into one ``error: <what> failed: ...`` line (exit 1)."""
    try:
        yield
    except STEP_ERRORS as err:
        raise CommandError(f"{what} failed: {err}") from err


def train_config(args: argparse.Namespace, run_name: str, data_dir_: str):
    """The :class:`TrainConfig` of the shipped recipe: the library's defaults, the shipped (or
    given, or no) head hyperparameters, and what the command line overrides."""
    from tumorlib.training.train_config import TrainConfig, hparams_to_config, load_hparams

    values: dict = {"data_dir": data_dir_, "run_name": run_name}
    hparams = args.hparams
    if hparams is None or hparams.lower() != "none":
        with resources.as_file(DEFAULT_HPARAMS if hparams is None else Path(hparams)) as path:
            values.update(hparams_to_config(load_hparams(path)))
            values["hparams_file"] = str(Path(path).resolve())
    for name in ("image_size", "alpha", "seed"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.sartaj_only:
        values["dataset_config"] = "clean"
    config = TrainConfig(**values)
    config.validate()
    return config


def train_recipe(args: argparse.Namespace, data_dir_: str) -> Path:
    """Train the one model the export serves (one backbone pass per slice)."""
    from tumorlib.training import train

    name = args.run_name or "shipped-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    config = train_config(args, name, data_dir_)
    step(
        f"2/6 training: MobileNetV2 α {config.alpha} at {config.image_size} px on "
        f"brain_mri/{config.dataset_config}"
    )
    with failing_as("training"):
        return train.train(config)


def evaluation_steps(run_dir: Path, data_dir_: str, configs: tuple[str, ...]) -> None:
    """Test-split metrics on every built config: multi_sequence per source and sequence, and the
    original one shows the leakage it has."""
    from tumorlib.evaluation import evaluate

    for config in configs:
        step(f"3/6 evaluation on {config}/test")
        with failing_as(f"evaluation on {config}/test"):
            evaluate.evaluate(run_dir, config=config, split="test", data_dir=data_dir_)


def safety_steps(run_dir: Path, data_dir_: str) -> None:
    """Abstention thresholds, the study rule and the input gate, each chosen on the validation
    split of the run's own dataset config.

    Each writes into the run folder; a failure stops the job before the export, so no model
    reaches the page without the checks the operator asked for.
    """
    from tumorlib.contracts.runs import PSEUDO_STUDIES_DIR, SAFETY_DIR
    from tumorlib.safety import abstention_report, input_gate
    from tumorlib.studies import pseudo_study_report

    step("4/6 abstention thresholds (chosen on validation, checked on test)")
    with failing_as("abstention"):
        report = abstention_report.run_abstention(run_dir, data_dir_=data_dir_)
    chosen, test = report["chosen_on_validation"], report["test"]
    print(
        f"threshold {chosen['threshold']:.4f} (validation coverage {chosen['coverage']:.3f}); "
        f"test coverage {test['coverage']:.3f}, accepted accuracy {test['accepted_accuracy']:.4f}"
    )
    step("4/6 study rule (chosen on validation pseudo-studies, checked on test)")
    with failing_as("study rule"):
        studies = pseudo_study_report.evaluate_run(
            run_dir, run_dir / SAFETY_DIR / PSEUDO_STUDIES_DIR
        )
    print("\n".join(pseudo_study_report.summary_lines(studies)))
    step("4/6 input gate (brain-MRI check and familiarity; train split, thresholds on validation)")
    with failing_as("input gate"):
        input_gate.run_gate(run_dir, data_dir_=data_dir_)


def export_step(run_dir: Path, model_base_path: str) -> Path:
    from serving.export import exporter as export

    step("5/6 export")
    with failing_as("export"):
        target = export.export_run(run_dir, model_base_path=model_base_path)
    print(f"exported {run_dir} -> {target} (version {target.name})")
    return target


def served_checks(run_dir: Path, model_base_path: str, data_dir_: str) -> None:
    """The exported model, every check on, on data it never saw: the second source and the test
    split, per source and sequence (SARTAJ; the TCGA-LGG archive's test patients) — ``tumorlib
    source-check``. Skipped, with a line saying so, where that data is not here."""
    from serving.clients.backend import DEFAULT_TIMEOUT_S, Settings
    from tumorlib.contracts.runs import SAFETY_DIR
    from tumorlib.data.second_source import default_archive, load_second_source
    from tumorlib.evaluation.model_card_sources import SOURCE_CHECKS_DIR
    from tumorlib_cli import source_check

    settings = Settings(None, MODEL_NAME, Path(model_base_path), DEFAULT_TIMEOUT_S)
    out = run_dir / SAFETY_DIR / SOURCE_CHECKS_DIR
    step("5/6 the served model on the second source and the test split, per source")
    checks = []
    if default_archive() is not None:
        slices = source_check.second_source_slices(load_second_source())
        checks.append(("second_source", slices, "second-source"))
    try:  # per source and sequence: SARTAJ's test slices and the archive's test patients
        slices = source_check.split_slices("multi_sequence/test", data_dir_)
        checks.append(("test", slices, "multi_sequence/test"))
    except CommandError:
        print("multi_sequence is not built here: the archive's test patients are not checked")
    for folder, slices, name in checks:
        with failing_as(f"served check on {name}"):
            report = source_check.check_served(slices, name, settings, out / folder)
        print(source_check.summary_line(report))


def card_step(run_dir: Path, data_dir_: str) -> None:
    from tumorlib.evaluation import model_card

    step("5/6 model card")
    with failing_as("model card"):
        md_path, html_path = model_card.write_card(run_dir, data_dir=data_dir_)
    print(f"wrote {md_path} and {html_path}")


def open_page(model_base_path: str, port: int) -> NoReturn:
    """The upload page on the newest export, through the same launcher as ``tumorlib app`` (this
    process becomes the page)."""
    step("6/6 upload page (in-process model; Ctrl-C to stop)")
    print(f"Open http://127.0.0.1:{port}")
    print(
        "To use TF Serving instead: start it (tumorlib serve, or tensorflow_model_server "
        f"--rest_api_port=8501 --model_base_path=$PWD/{MODEL_BASE_PATH} "
        f"--model_name={MODEL_NAME}) and set TUMORLIB_SERVING_URL=http://127.0.0.1:8501; the "
        "sidebar then offers it."
    )
    # The page loads the newest version from where this job exported it.
    env = dict(os.environ, TUMORLIB_MODEL_BASE_PATH=str(Path(model_base_path).resolve()))
    page.launch(port, env=env)


def run_job(args: argparse.Namespace) -> int:
    """Every step in order, stopping after ``--stop-after``."""
    from tumorlib.data.pipeline import data_dir

    data_dir_ = str(data_dir(args.data_dir))
    if not sys.stdout.isatty():  # a log file: no redrawn progress bars from TFDS
        import tensorflow_datasets as tfds

        tfds.disable_progress_bar()
    step(f"1/6 dataset -> {data_dir_}")
    configs = buildable_configs(args.manual_dir)
    if "multi_sequence" not in configs and not (args.sartaj_only or args.run):
        raise CommandError(
            f"the TCGA-LGG archive ({ARCHIVE_NAME}) is not in the manual dir "
            f"({args.manual_dir or default_manual_dir()}): put it there (see "
            "../shared/data/README.md), or pass --sartaj-only to train on SARTAJ alone"
        )
    with failing_as("dataset build"):
        build_dataset(args.manual_dir, data_dir_, configs)
    if args.stop_after == "build":
        return 0
    if args.run:
        run_dir = Path(args.run)
        step(f"2/6 training skipped: reusing {run_dir}")
    else:
        run_dir = train_recipe(args, data_dir_)
    if args.stop_after == "train":
        return 0
    evaluation_steps(run_dir, data_dir_, configs)
    if args.stop_after == "evaluate":
        return 0
    if args.skip_safety:
        step("4/6 safety steps skipped (--skip-safety): no abstention, study rule or gate")
    else:
        safety_steps(run_dir, data_dir_)
    if args.stop_after == "safety":
        return 0
    export_step(run_dir, args.model_base_path)
    served_checks(run_dir, args.model_base_path, data_dir_)
    card_step(run_dir, data_dir_)
    if args.stop_after == "export":
        return 0
    open_page(args.model_base_path, args.app_port)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: run_job(args))


if __name__ == "__main__":
    sys.exit(main())
