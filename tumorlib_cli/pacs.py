"""``tumorlib pacs``: classify a study straight from a PACS and store the results back into it.

Why: a radiologist reads studies in the PACS viewer, not files on a laptop. ``tumorlib pacs
classify`` fetches a study's MR series over DICOMweb, classifies each as a volume, and stores a
Structured Report (the verdict, coded) and Grad-CAM Secondary Captures of the key slices in the
same study, where the viewer (OHIF, the PACS's own) shows them next to the images
(``docs/pacs.md``). ``tumorlib pacs studies`` lists studies without patient attributes.

The password is read from ``$TUMORLIB_PACS_PASSWORD`` only, never from the command line (where
``ps`` and shell history would keep it). Nothing printed carries a patient attribute; what the PACS
says (descriptions) is escaped; the URL is shown without credentials. ``--timeout`` bounds each
call to the PACS or the model server, retries included; ``--deadline`` the whole command.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from serving.clients.backend import (
    DEFAULT_TIMEOUT_S,
    BackendError,
    Settings,
    make_backend,
    rest_client,
)
from serving.common.deadline import Deadline
from serving.pacs.dicomweb import DEFAULT_DEADLINE_S, PASSWORD_ENV, USER_ENV, Pacs, PacsError
from serving.pacs.dicomweb import DEFAULT_TIMEOUT_S as PACS_TIMEOUT_S
from serving.pacs.round_trip import SeriesReport, choose_series, classify_study
from tumorlib.contracts.cli import CommandError, run_command
from tumorlib.contracts.serving_contract import DISCLAIMER, MODEL_BASE_PATH, MODEL_NAME
from tumorlib.studies.study import verdict_words


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tumorlib pacs",
        description=(
            "Classify studies from a PACS over DICOMweb and store the results (SR, Grad-CAM "
            f"captures and the PDF report) back into the study. {DISCLAIMER}"
        ),
        epilog=f"Credentials: ${USER_ENV} (or --user) and ${PASSWORD_ENV}.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    studies = commands.add_parser("studies", help="list studies (no patient attributes)")
    _pacs_arguments(studies)
    studies.add_argument("--patient-id", help="only this patient's studies (not printed)")
    studies.add_argument("--accession", help="only the study with this accession number")
    studies.add_argument("--modality", default="MR", help="modality in study (default MR)")
    studies.add_argument("--limit", type=int, default=50)

    classify = commands.add_parser("classify", help="classify a study, store results in it")
    _pacs_arguments(classify)
    classify.add_argument("--study", required=True, help="StudyInstanceUID")
    classify.add_argument("--series", help="SeriesInstanceUID (default: every MR series)")
    classify.add_argument(
        "--no-store", action="store_true", help="classify only; store nothing in the PACS"
    )
    classify.add_argument(
        "--no-report",
        action="store_true",
        help="store no PDF report (an Encapsulated PDF beside the SR)",
    )
    model = classify.add_mutually_exclusive_group()
    model.add_argument("--model-base-path", default=str(MODEL_BASE_PATH))
    model.add_argument("--serving-url", help="TF Serving REST URL, e.g. http://127.0.0.1:8501")
    classify.add_argument("--model-name", default=MODEL_NAME)
    return parser


def _pacs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", required=True, help="DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web"
    )
    parser.add_argument("--user", help=f"HTTP basic user (default ${USER_ENV})")
    parser.add_argument(
        "--timeout",
        type=positive_seconds,
        default=PACS_TIMEOUT_S,
        help=f"seconds per call, retries included (default {PACS_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--deadline",
        type=positive_seconds,
        default=DEFAULT_DEADLINE_S,
        help=f"seconds for the whole command (default {DEFAULT_DEADLINE_S:g})",
    )


def positive_seconds(text: str) -> float:
    """A number of seconds above zero (a usage error otherwise)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _pacs(args: argparse.Namespace) -> Pacs:
    args.command_deadline = getattr(args, "command_deadline", None) or Deadline(args.deadline)
    return Pacs(args.url, user=args.user, timeout_s=args.timeout, deadline=args.command_deadline)


def list_studies(args: argparse.Namespace) -> None:
    studies = _pacs(args).find_studies(
        patient_id=args.patient_id,
        accession_number=args.accession,
        modality=args.modality,
        limit=args.limit,
    )
    for study in studies:
        modalities = "/".join(study.modalities) or "?"
        series = "?" if study.n_series is None else study.n_series
        print(f"{study.study_uid}\t{modalities}\t{series} series\t{study.description}")
    print(f"{len(studies)} studies", file=sys.stderr)


def classify(args: argparse.Namespace) -> None:
    pacs = _pacs(args)
    settings = Settings(
        args.serving_url, args.model_name, Path(args.model_base_path), DEFAULT_TIMEOUT_S
    )
    # The PACS answers (lets us in, has the study and an MR series) before a model is loaded.
    chosen = choose_series(pacs, args.study, args.series)
    try:
        make_client = functools.partial(rest_client, deadline=args.command_deadline)
        backend = make_backend(settings, make_client=make_client)
        reports = classify_study(
            pacs, args.study, backend, None, store=not args.no_store, chosen=chosen,
            report=not args.no_report,
        )  # fmt: skip
    except BackendError as err:
        raise CommandError(err.message) from None
    for report in reports:
        print(describe(report))
    print(DISCLAIMER)


def describe(report: SeriesReport) -> str:
    """One series' outcome in words (UIDs, counts, verdict; never patient attributes)."""
    verdict = report.result.verdict
    name = verdict_words(verdict.verdict)
    lines = [
        f"series {report.series_uid} ({report.description or 'no description'}): {name}",
        f"  {verdict.reason}",
        f"  {verdict.n_slices} slices: {verdict.n_classified} classified, {verdict.n_uncertain} "
        f"uncertain, {verdict.n_not_brain_mri} not brain MRI, {verdict.n_failed} failed",
    ]
    if report.stored:
        captures = len(report.stored) - 1 - (report.pdf_uid is not None)
        pdf = " and the PDF report (Encapsulated PDF)" if report.pdf_uid else ""
        lines.append(f"  stored in the study: 1 SR and {captures} Grad-CAM capture(s){pdf}")
    lines += [f"  note: {note}" for note in report.notes]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    try:
        if args.command == "studies":
            list_studies(args)
        else:
            classify(args)
    except PacsError as err:
        raise CommandError(str(err)) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
