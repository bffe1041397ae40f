"""The main job, end to end on the embedded default: ``tumorlib main`` (``scripts/main``).

build the dataset (both configs) -> train (two members, 320 and 384 px, combined into one
ensemble with left-right flip TTA; docs/training.md says why) -> evaluate (clean/test,
original/test) -> safety: abstention threshold, input gate, model card -> export to
models/brain_mri/<version>/ -> open the upload page on the in-process model.

It orchestrates by calling the library's functions and the export (each step can also be run on
its own: ``tumorlib --help`` lists them). It sits above ``serving`` for that reason: the library
never imports deployment. The safety steps run before the export because the export embeds what
they write (the abstention threshold and the gate's statistics) into the SavedModel;
``--skip-safety`` exports without them. Nothing assumes a checkout: the shipped hyperparameters
are package data, other defaults are relative to the current folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import NoReturn

from tumorlib.contracts.cli import EXPECTED_ERRORS, CommandError, run_command
from tumorlib.contracts.serving_contract import MODEL_BASE_PATH, MODEL_NAME
from tumorlib_cli import page
from tumorlib_cli.build import add_dataset_arguments, build_dataset

# The head chosen by the KerasTuner search on clean/validation (docs/tuning.md), shipped as
# package data; the main job trains with it unless told otherwise.
DEFAULT_HPARAMS = resources.files("tuning") / "best_hparams.json"
# The shipped recipe: one member per input size (same head hyperparameters and seed), averaged
# with flip TTA by tumorlib.training.ensemble_run. Chosen on clean/validation (docs/training.md).
DEFAULT_MEMBER_SIZES = (320, 384)
# The second stage of each member (docs/training.md, "Acquisition stage"): continue fine-tuning
# from the member's own weights with acquisition changes in half of the augmented slices — other
# sequences, bias field, noise, blur, frames, burnt-in text — so the classifier holds on what other
# hospitals send. Chosen on clean/validation and measured on the second source.
ACQUISITION_STAGE = {
    "acquisition_augment": 0.5,
    "head_epochs": 0,
    "fine_tune_epochs": 8,
    "fine_tune_learning_rate": 1e-4,
    "fine_tune_patience": 3,
}
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
        "--member-sizes",
        type=_sizes,
        default=DEFAULT_MEMBER_SIZES,
        help="input sizes of the trained members, comma-separated (default "
        f"{','.join(map(str, DEFAULT_MEMBER_SIZES))}: an ensemble with flip TTA; one size: a "
        "single model, e.g. 224 for a quick run)",
    )
    parser.add_argument(
        "--hparams",
        default=None,
        help="head hyperparameters JSON for training (default: the shipped search result, "
        "tuning/best_hparams.json; 'none': tumorlib.training.train's untuned defaults)",
    )
    parser.add_argument(
        "--no-acquisition-stage",
        action="store_true",
        help="skip each member's second stage (fine-tuning with acquisition changes); faster, "
        "less robust to other hospitals' scans",
    )
    parser.add_argument(
        "--stop-after",
        choices=STEPS,
        help="stop after this step (default: run everything and open the app)",
    )
    parser.add_argument(
        "--skip-safety",
        action="store_true",
        help="skip abstention, input gate and model card; the export then has no abstain or "
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


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 320,384, got {text!r}") from None
    if not sizes or min(sizes) < 32:
        raise argparse.ArgumentTypeError(f"sizes must be at least 32, got {text!r}")
    return sizes


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


@contextmanager
def failing_as(what: str) -> Iterator[None]:
    """Turn a step's expected failure into one ``error: <what> failed: ...`` line (exit 1)."""
    try:
        yield
    except STEP_ERRORS as err:
        raise CommandError(f"{what} failed: {err}") from err


def train_config(size: int, run_name: str, data_dir_: str, hparams: str | None):
    """The :class:`TrainConfig` of one member: shipped (or given, or no) hyperparameters."""
    from tumorlib.training.train_config import TrainConfig, hparams_to_config, load_hparams

    values: dict = {"data_dir": data_dir_, "image_size": size, "run_name": run_name}
    if hparams is None or hparams.lower() != "none":
        with resources.as_file(DEFAULT_HPARAMS if hparams is None else Path(hparams)) as path:
            values.update(hparams_to_config(load_hparams(path)))
            values["hparams_file"] = str(Path(path).resolve())
    config = TrainConfig(**values)
    config.validate()
    return config


def train_recipe(args: argparse.Namespace, data_dir_: str) -> Path:
    """Train one member per size; with several sizes, combine them into an ensemble run."""
    from tumorlib.training import ensemble_run as ensemble
    from tumorlib.training import train

    name = args.run_name or "shipped-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    sizes = args.member_sizes
    members: list[Path] = []
    stage = not args.no_acquisition_stage
    for i, size in enumerate(sizes, start=1):
        step(f"2/6 training member {i}/{len(sizes)}: {size} px")
        run_name = name if len(sizes) == 1 and not stage else f"{name}-{size}px"
        with failing_as(f"training at {size} px"):
            member = train.train(train_config(size, run_name, data_dir_, args.hparams))
        if stage:
            step(f"2/6 member {i}/{len(sizes)}, second stage: fine-tuning with acquisition changes")
            final = name if len(sizes) == 1 else f"{run_name}-acquisition"
            config = dataclasses.replace(
                train_config(size, final, data_dir_, args.hparams),
                **ACQUISITION_STAGE,
                init_from=str(member),
            )
            config.validate()
            with failing_as(f"acquisition stage at {size} px"):
                member = train.train(config)
        members.append(member)
    if len(members) == 1:
        return members[0]
    step(f"2/6 ensemble of {len(members)} members with flip TTA (calibrated on validation)")
    with failing_as("ensemble"):
        return ensemble.make_ensemble_run([*members], run_name=name, tta=True, data_dir=data_dir_)


def evaluation_steps(run_dir: Path, data_dir_: str) -> None:
    """Test-split metrics on both configs (the original one shows the leakage it has)."""
    from tumorlib.data.pipeline import CONFIGS
    from tumorlib.evaluation import evaluate

    for config in CONFIGS:
        step(f"3/6 evaluation on {config}/test")
        with failing_as(f"evaluation on {config}/test"):
            evaluate.evaluate(run_dir, config=config, split="test", data_dir=data_dir_)


def safety_steps(run_dir: Path, data_dir_: str) -> None:
    """Abstention threshold, input gate, then the model card that reports both.

    Each writes into the run folder; a failure stops the job before the export, so no model
    reaches the page without the checks the operator asked for.
    """
    from tumorlib.contracts.runs import PSEUDO_STUDIES_DIR, SAFETY_DIR
    from tumorlib.evaluation import model_card
    from tumorlib.safety import abstention_report, input_gate
    from tumorlib.studies import pseudo_study_report

    step("4/6 abstention threshold (chosen on clean/validation, checked on clean/test)")
    with failing_as("abstention"):
        report = abstention_report.run_abstention(run_dir, data_dir_=data_dir_)
    chosen, test = report["chosen_on_validation"], report["test"]
    print(
        f"threshold {chosen['threshold']:.4f} (validation coverage {chosen['coverage']:.3f}); "
        f"test coverage {test['coverage']:.3f}, accepted accuracy {test['accepted_accuracy']:.4f}"
    )
    step("4/6 study rule (chosen on clean/validation pseudo-studies, checked on clean/test)")
    with failing_as("study rule"):
        studies = pseudo_study_report.evaluate_run(
            run_dir, run_dir / SAFETY_DIR / PSEUDO_STUDIES_DIR
        )
    print("\n".join(pseudo_study_report.summary_lines(studies)))
    step("4/6 input gate (brain-MRI check and familiarity; clean/train, thresholds on validation)")
    with failing_as("input gate"):
        input_gate.run_gate(run_dir, data_dir_=data_dir_)
    step("4/6 model card")
    with failing_as("model card"):
        md_path, html_path = model_card.write_card(run_dir, data_dir=data_dir_)
    print(f"wrote {md_path} and {html_path}")


def export_step(run_dir: Path, model_base_path: str) -> Path:
    from serving.export import exporter as export

    step("5/6 export")
    with failing_as("export"):
        target = export.export_run(run_dir, model_base_path=model_base_path)
    print(f"exported {run_dir} -> {target} (version {target.name})")
    return target


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
    step(f"1/6 dataset -> {data_dir_}")
    with failing_as("dataset build"):
        build_dataset(args.manual_dir, data_dir_)
    if args.stop_after == "build":
        return 0
    if args.run:
        run_dir = Path(args.run)
        step(f"2/6 training skipped: reusing {run_dir}")
    else:
        run_dir = train_recipe(args, data_dir_)
    if args.stop_after == "train":
        return 0
    evaluation_steps(run_dir, data_dir_)
    if args.stop_after == "evaluate":
        return 0
    if args.skip_safety:
        step("4/6 safety steps skipped (--skip-safety): no abstention, gate or model card")
    else:
        safety_steps(run_dir, data_dir_)
    if args.stop_after == "safety":
        return 0
    export_step(run_dir, args.model_base_path)
    if args.stop_after == "export":
        return 0
    open_page(args.model_base_path, args.app_port)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: run_job(args))


if __name__ == "__main__":
    sys.exit(main())
