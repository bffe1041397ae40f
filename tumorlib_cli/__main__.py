"""``tumorlib``: one command, with a sub-command for each of the project's entry points.

``tumorlib <command> [args...]`` hands ``args`` to that module's own ``main(argv)``, so every
sub-command keeps its flags and its help (``tumorlib train --help``) and all share one set of
exit codes (0 ok, 1 the work failed, 2 bad command line). Modules are imported only when their
command runs, so ``tumorlib --version`` and ``tumorlib --help`` answer without TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from tumorlib import __version__
from tumorlib.contracts.cli import EXIT_OK

# command: (module whose main(argv) runs it, one line for `tumorlib --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "main": ("tumorlib_cli.main_job", "the main job: build, train, evaluate, safety, export, page"),
    "build": ("tumorlib_cli.build", "build both configs of the brain_mri dataset"),
    "train": ("tumorlib.training.train", "train a classifier into a run folder"),
    "ensemble": ("tumorlib.training.ensemble_run", "combine finished runs into one ensemble run"),
    "evaluate": (
        "tumorlib.evaluation.evaluate",
        "evaluate a run on a split (metrics, plots, summary)",
    ),
    "abstention": ("tumorlib.safety.abstention_report", "choose the abstention threshold of a run"),
    "gate": ("tumorlib.safety.input_gate", "fit and evaluate the input gate of a run"),
    "card": ("tumorlib.evaluation.model_card", "write a run's model card (Markdown and HTML)"),
    "tune": ("tuning.search", "search the head's hyperparameters with KerasTuner"),
    "export": ("serving.export.exporter", "export a run as a TF Serving SavedModel version"),
    "serve": ("serving.server.local", "serve exported models over TF Serving's REST and gRPC APIs"),
    "predict": ("tumorlib_cli.predict", "classify files or folders into a CSV"),
    "app": ("tumorlib_cli.page", "start the upload page (http://127.0.0.1:8502)"),
    "audit": ("tumorlib_cli.audit", "audit records: migrate, performance, drift, export, purge"),
    "study": ("tumorlib_cli.study", "classify a DICOM series or NIfTI volume; pseudo-studies"),
    "source-check": ("tumorlib_cli.source_check", "measure the served model on other sources"),
    "pacs": ("tumorlib_cli.pacs", "classify a study from a PACS (DICOMweb), store results back"),
}


def version_line() -> str:
    return f"tumorlib {__version__}"


def build_parser() -> argparse.ArgumentParser:
    width = max(map(len, COMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="tumorlib",
        usage="tumorlib [--version] [--help] COMMAND [ARGS...]",
        description="Brain MRI tumour classification: dataset, training, safety, serving, page.",
        epilog=f"commands:\n{listing}\n\n`tumorlib COMMAND --help` shows a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_line())
    parser.add_argument("command", choices=COMMANDS, metavar="COMMAND", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:  # only the first word is ours; the rest belongs to the sub-command
        command = build_parser().parse_args(args[:1]).command
    except SystemExit as exit_:  # --help, --version, or a bad/missing command (2)
        return int(exit_.code or 0)
    rest = args[1:]
    if "--version" in rest:
        print(version_line())
        return EXIT_OK
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
