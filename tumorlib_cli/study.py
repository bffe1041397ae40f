"""Studies on the command line: ``tumorlib study classify PATH...`` and ``tumorlib study evaluate``.

Why: a radiologist reads a series, so the tool should answer for one. ``classify`` reads DICOM
folders, zips, multi-frame files and NIfTI volumes (:mod:`tumorlib.studies.readers`, the input
policy's study limits), sends every accepted slice through the same backend as the page and
``tumorlib predict`` (:func:`serving.clients.study.classify_series`), and prints one verdict per
series with its counts, key slices and warnings; ``--json`` keeps every slice's outcome,
``--dicom-out`` writes a DICOM SR and Secondary Captures next to the study
(``serving.pacs.results``). ``evaluate`` chooses the aggregation rule on a run's validation
pseudo-studies and reports it on test (:mod:`tumorlib.studies.pseudo_studies`). Patient tags never
reach the terminal or the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from serving.clients.backend import DEFAULT_TIMEOUT_S, Backend, BackendError, Settings, make_backend
from serving.clients.study import classify_series
from tumorlib.contracts.cli import CommandError, run_command
from tumorlib.contracts.display import printable
from tumorlib.contracts.runs import STUDY_RULE_FILE
from tumorlib.contracts.serving_contract import (
    DISCLAIMER,
    MODEL_BASE_PATH,
    MODEL_NAME,
)
from tumorlib.studies.readers import PLANES, collect_files, read_series
from tumorlib.studies.study import StudyResult, verdict_words
from tumorlib_cli import evidence

MAX_KEY_SLICES_SHOWN = 5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tumorlib study",
        description=f"Classify a series (DICOM or NIfTI) as one study. {DISCLAIMER}",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    classify = sub.add_parser(
        "classify", help="one verdict per series in DICOM files/folders/zips or NIfTI volumes"
    )
    classify.add_argument("paths", nargs="+", help="files, folders (recursive) or zips")
    classify.add_argument("--serving-url", help="TF Serving REST URL, e.g. http://127.0.0.1:8501")
    classify.add_argument("--model-name", default=MODEL_NAME)
    classify.add_argument("--model-base-path", default=str(MODEL_BASE_PATH))
    classify.add_argument(
        "--axis",
        type=parse_axis,
        default=None,
        help=f"NIfTI slicing plane: {', '.join(PLANES)} or an array axis 0-2 "
        "(default: the acquisition plane)",
    )
    classify.add_argument("--json", dest="json_out", help="write every slice's outcome as JSON")
    classify.add_argument("--dicom-out", help="write a DICOM SR and Secondary Captures here")
    classify.add_argument("--no-progress", action="store_true")
    evidence.add_arguments(classify)  # --similar K, --report DIR (key slices; the series' PDF)
    evaluate = sub.add_parser(
        "evaluate", help="choose the rule on validation pseudo-studies; report it on test"
    )
    evaluate.add_argument("--run", required=True, help="run folder with safety/*_predictions.npz")
    evaluate.add_argument("--out", default="reports/studies", help="report folder")
    evaluate.add_argument(
        "--bootstrap-rounds",
        type=int,
        default=200,
        help="rounds for the test figures' 95%% intervals (0: none)",
    )
    evaluate.add_argument(
        "--no-save-rule",
        action="store_true",
        help="do not write the chosen rule into the run (study_rule.json, shipped by the export)",
    )
    return parser


def parse_axis(value: str) -> str | int:
    """``--axis``: a plane name or an array axis 0-2 (a usage error otherwise)."""
    if value in PLANES:
        return value
    if value in ("0", "1", "2"):
        return int(value)
    raise argparse.ArgumentTypeError(f"expected {', '.join(PLANES)} or 0-2, got {value!r}")


def classify(args: argparse.Namespace, backend: Backend | None = None) -> int | None:
    """Read, classify and print every series; JSON and DICOM results when asked."""
    series = read_series(collect_files(args.paths), axis=args.axis, decode=False)
    try:
        if backend is None:
            settings = Settings(
                args.serving_url, args.model_name, Path(args.model_base_path), DEFAULT_TIMEOUT_S
            )
            backend = make_backend(settings)
        version = backend.health().version
        results = [_classify_one(s, backend, version, not args.no_progress) for s in series]
    except BackendError as err:
        raise CommandError(err.message) from None
    for i, result in enumerate(results, start=1):
        lines = describe(result, i, len(results))
        try:
            lines += evidence.study_evidence(args, backend, result, i, version)
        except BackendError as err:
            raise CommandError(err.message) from None
        print("\n".join(lines))
    print(DISCLAIMER)
    if args.json_out:
        path = Path(args.json_out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([result_json(r) for r in results], indent=2) + "\n")
        print(f"written: {path}", file=sys.stderr)
    if args.dicom_out:
        write_dicom(results, backend, version, Path(args.dicom_out))
    return None


def _classify_one(series, backend: Backend, version: int | None, progress: bool) -> StudyResult:
    from tqdm import tqdm

    todo = sum(1 for s in series.slices if s.problem is None)
    with tqdm(total=todo, desc="slices", unit="img", disable=not progress) as bar:
        return classify_series(series, backend, version, progress=bar.update)


def write_dicom(
    results: list[StudyResult], backend: Backend, version: int | None, out_dir: Path
) -> None:
    """One folder of DICOM results per series (the folder itself when there is one series)."""
    try:
        from serving.pacs.results import DicomResultsError, write_study_results
    except ImportError:
        raise CommandError("DICOM results are not available in this installation") from None
    for i, result in enumerate(results, start=1):
        if result.series.kind != "dicom":
            print(f"series {i}: not DICOM, no DICOM results written", file=sys.stderr)
            continue
        folder = out_dir if len(results) == 1 else out_dir / f"series-{i}"
        try:
            paths = write_study_results(result, backend, version, folder)
        except DicomResultsError:
            raise
        except (ValueError, TypeError, AttributeError, KeyError) as err:
            # Never the library's message: it may quote a header value (a malformed birth date).
            raise CommandError(
                f"series {i}: the DICOM results could not be built ({type(err).__name__}): the "
                "series' headers are not valid enough to copy"
            ) from None
        print(f"series {i}: {len(paths)} DICOM file(s) written to {folder}", file=sys.stderr)


def describe(result: StudyResult, number: int, total: int) -> list[str]:
    """A few lines a person reads: the series, the verdict and why, the key slices, warnings."""
    series, v = result.series, result.verdict
    title = printable(series.description or series.kind)  # from the file: escaped
    lines = [
        f"Series {number}/{total}: {printable(series.modality or '?', 16)} '{title}', "
        f"{v.n_slices} slices "
        f"({v.n_classified} classified, {v.n_uncertain} uncertain, {v.n_not_brain_mri} not a "
        f"brain MRI, {v.n_failed} refused or failed)",
        f"  Verdict: {verdict_words(v.verdict)}. {v.reason}",
    ]
    by_index = {o.ref.index: o for o in result.slices}
    shown = []
    for index in v.key_slices[:MAX_KEY_SLICES_SHOWN]:
        o = by_index[index]
        name = o.class_name or "?"
        shown.append(f"{o.ref.label or index} ({name} {o.confidence or 0:.2f})")
    if shown:
        lines.append("  Key slices: " + "; ".join(shown))
    problems = sorted({o.message for o in result.slices if o.message})
    for message in problems[:3]:
        lines.append(f"  Refused: {printable(message, 400)}")
    for warning in series.warnings:
        lines.append(f"  Warning: {printable(warning, 400)}")
    return lines


def result_json(result: StudyResult) -> dict[str, Any]:
    """Everything but patient data: series facts, the verdict, every slice's outcome."""
    series = result.series
    return {
        "series": {
            "kind": series.kind,
            "study_instance_uid": series.study_instance_uid,
            "series_instance_uid": series.series_instance_uid,
            "modality": series.modality,
            "description": series.description,
            "n_slices": series.n_slices,
            "warnings": series.warnings,
        },
        "model": {"name": result.model_name, "version": result.model_version},
        "verdict": asdict(result.verdict),
        "slices": [asdict(o) for o in result.slices],
        "disclaimer": DISCLAIMER,
    }


def evaluate(args: argparse.Namespace) -> None:
    from tumorlib.studies.pseudo_study_report import evaluate_run, summary_lines

    report = evaluate_run(
        args.run,
        Path(args.out),
        save_rule=not args.no_save_rule,
        bootstrap_rounds=args.bootstrap_rounds,
    )
    print("\n".join(summary_lines(report)))
    print(f"written: {Path(args.out)} (pseudo_studies.json, pseudo_studies.png)")
    if not args.no_save_rule:
        print(
            f"rule saved: {Path(args.run) / STUDY_RULE_FILE} "
            f"(export the run again to ship it: tumorlib export {args.run})"
        )


def main(argv: list[str] | None = None, backend: Backend | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.action == "evaluate":
        return run_command(lambda: evaluate(args))
    return run_command(lambda: classify(args, backend))


if __name__ == "__main__":
    sys.exit(main())
