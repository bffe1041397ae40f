"""The main job, end to end on the embedded default: ``python -m tumorlib.main`` (``scripts/main``).

build the dataset (both configs) -> train (two members, 320 and 384 px, combined into one
ensemble with left-right flip TTA; docs/training.md says why) -> evaluate (clean/test,
original/test)
-> safety: abstention threshold, input gate, model card -> export to
models/brain_mri/<version>/ -> open the upload page on the in-process model.

Each step is the project's own command-line entry point called in-process, so this file only
orchestrates; every step can also be run on its own (the README lists the commands). The safety
steps run before the export because the export embeds what they write (the abstention threshold
and the gate's statistics) into the SavedModel; ``--skip-safety`` exports without them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from brain_mri.report import format_report

from tumorlib.data import CONFIGS, REPO_ROOT, build, data_dir

DEFAULT_MANUAL_DIR = REPO_ROOT.parent / "shared" / "data"
DEFAULT_MODEL_BASE_PATH = Path("models/brain_mri")
APP = REPO_ROOT / "streamlit_app" / "app.py"
# The head chosen by the KerasTuner search on clean/validation (docs/tuning.md); the main job
# trains with it unless told otherwise.
DEFAULT_HPARAMS = REPO_ROOT / "tuning" / "best_hparams.json"
# The shipped recipe: one member per input size (same head hyperparameters and seed), averaged
# with flip TTA by tumorlib.ensemble. Chosen on clean/validation (docs/training.md).
DEFAULT_MEMBER_SIZES = (320, 384)
STEPS = ("build", "train", "evaluate", "safety", "export")


class StepFailed(RuntimeError):
    """A step of the main job returned a failure; its own message has been printed."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tumorlib.main",
        description="Build the dataset, train, evaluate, export and open the upload page.",
    )
    parser.add_argument(
        "--manual-dir",
        help=f"folder holding the archive (default {DEFAULT_MANUAL_DIR} if present, else download)",
    )
    parser.add_argument("--data-dir", help="TFDS data dir (default data/tensorflow_datasets)")
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
        default=str(DEFAULT_HPARAMS),
        help="head hyperparameters for training (default: the shipped search result "
        f"{DEFAULT_HPARAMS.relative_to(REPO_ROOT)}; 'none': tumorlib.train's untuned defaults)",
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
        default=str(DEFAULT_MODEL_BASE_PATH),
        help=f"where the export's versions go (default {DEFAULT_MODEL_BASE_PATH})",
    )
    parser.add_argument("--app-port", type=int, default=8502, help="port of the upload page")
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


def build_dataset(manual_dir: str | None, data_dir_: str | None) -> None:
    """Build both configs (a built config is reused) and print their statistics."""
    if manual_dir is None and DEFAULT_MANUAL_DIR.is_dir():
        manual_dir = str(DEFAULT_MANUAL_DIR)
    for config in CONFIGS:
        builder = build(config, manual_dir, data_dir_)
        print(format_report(config, dict(builder.info.metadata)))


def _check(code: int, what: str) -> None:
    if code != 0:
        raise StepFailed(f"{what} failed (exit code {code})")


def safety_steps(run_dir: Path, data_dir_: str) -> None:
    """Abstention threshold, input gate, then the model card that reports both.

    Each writes into the run folder; a failure stops the job before the export, so no model
    reaches the page without the checks the operator asked for.
    """
    from tumorlib import abstention, input_gate, model_card

    run, data = str(run_dir), ["--data-dir", data_dir_]
    step("4/6 abstention threshold (chosen on clean/validation, checked on clean/test)")
    _check(abstention.main([run, *data]), "abstention")
    step("4/6 input gate (fitted on clean/train, thresholds on clean/validation)")
    _check(input_gate.main([run, *data]), "input gate")
    step("4/6 model card")
    _check(model_card.main([run, *data]), "model card")


def train_recipe(args: argparse.Namespace, data_dir_: str) -> Path:
    """Train one member per size; with several sizes, combine them into an ensemble run."""
    from tumorlib import ensemble, train

    name = args.run_name or "shipped-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    sizes = args.member_sizes
    members = []
    for i, size in enumerate(sizes, start=1):
        step(f"2/6 training member {i}/{len(sizes)}: {size} px")
        train_args = ["--data-dir", data_dir_, "--image-size", str(size),
                      "--run-name", name if len(sizes) == 1 else f"{name}-{size}px"]  # fmt: skip
        if args.hparams and args.hparams.lower() != "none":
            train_args += ["--hparams", args.hparams]
        members.append(train.train(train.config_from_args(train_args)))
    if len(members) == 1:
        return members[0]
    step(f"2/6 ensemble of {len(members)} members with flip TTA (calibrated on validation)")
    return ensemble.make_ensemble_run(members, run_name=name, tta=True, data_dir=data_dir_)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    data_dir_ = str(data_dir(args.data_dir))
    try:
        step(f"1/6 dataset -> {data_dir_}")
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

        from tumorlib import evaluate

        for config in CONFIGS:
            step(f"3/6 evaluation on {config}/test")
            _check(
                evaluate.main([str(run_dir), "--config", config, "--split", "test",
                               "--data-dir", data_dir_]),
                f"evaluation on {config}/test",
            )  # fmt: skip
        if args.stop_after == "evaluate":
            return 0

        if args.skip_safety:
            step("4/6 safety steps skipped (--skip-safety): no abstention, gate or model card")
        else:
            safety_steps(run_dir, data_dir_)
        if args.stop_after == "safety":
            return 0

        from serving import export

        step("5/6 export")
        _check(export.main([str(run_dir), "--model-base-path", args.model_base_path]), "export")
        if args.stop_after == "export":
            return 0
    except StepFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    step("6/6 upload page (in-process model; Ctrl-C to stop)")
    url = f"http://127.0.0.1:{args.app_port}"
    print(f"Open {url}")
    print(
        "To use TF Serving instead: start it (python -m serving.local, or tensorflow_model_server "
        "--rest_api_port=8501 --model_base_path=$PWD/models/brain_mri --model_name=brain_mri) and "
        "set TUMORLIB_SERVING_URL=http://127.0.0.1:8501 or enter the URL in the page's sidebar."
    )
    # The page loads the newest version from where this job exported it.
    env = dict(os.environ, TUMORLIB_MODEL_BASE_PATH=str(Path(args.model_base_path).resolve()))
    command = [sys.executable, "-m", "streamlit", "run", str(APP),
               "--server.port", str(args.app_port)]  # fmt: skip
    try:
        return subprocess.call(command, cwd=REPO_ROOT, env=env)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
