"""``--similar K`` and ``--report DIR`` for ``tumorlib predict`` and ``tumorlib study``.

The evidence a radiologist can check, from the same backend and version as the answers: the
``K`` nearest confirmed cases of each answered slice (CSV columns) and a PDF report per slice or
per series (:mod:`serving.reporting`). Report files are numbered (``report-0001.pdf``), never
named after an input — a file name can carry a patient's name — and the PDFs hold no patient
identifier; the CSV's ``report`` column ties each row to its file.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from serving.clients.prediction import NOT_BRAIN_MRI, SimilarCases

SIMILAR_FIELDS = ["similar_cases", "neighbour_majority", "neighbours_agree"]
REPORT_FIELDS = ["report"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--similar",
        type=int,
        default=0,
        metavar="K",
        help="add the K most similar confirmed training slices (label:similarity) per image",
    )
    parser.add_argument(
        "--report", metavar="DIR", help="write a PDF report per answered image into DIR"
    )


def extra_fields(args: argparse.Namespace) -> list[str]:
    return (SIMILAR_FIELDS if args.similar > 0 else []) + (REPORT_FIELDS if args.report else [])


def similar_cells(found: SimilarCases | str | None) -> dict[str, str]:
    """The CSV cells of one image's similar cases (an error's words in the first)."""
    if found is None:
        return {}
    if isinstance(found, str):
        return {"similar_cases": found}
    cases = "; ".join(f"{c.label}:{c.similarity:.3f}" for c in found.cases)
    agrees = found.agrees
    return {
        "similar_cases": cases,
        "neighbour_majority": found.majority_label or "",
        "neighbours_agree": "" if agrees is None else str(agrees).lower(),
    }


def add_evidence(
    args: argparse.Namespace,
    backend: Any,
    items: list,
    predictions: list,
    rows: list[dict],
    audit_ids: list[str] | None,
) -> int:
    """Fill the similar-case and report cells of ``rows``; returns the reports written."""
    from serving.reporting.build import case_pdf

    k, folder = int(args.similar), Path(args.report) if args.report else None
    if k <= 0 and folder is None:
        return 0
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    ids = iter(audit_ids or [])
    written = 0
    for item, prediction, row in zip(items, predictions, rows):
        if prediction is None:
            continue
        audit_id = next(ids, None)
        if prediction.verdict == NOT_BRAIN_MRI:
            found: SimilarCases | str | None = None
        else:
            found = backend.similar(item.data, max(k, 1), None) if k or folder else None
        if k > 0:
            row.update(similar_cells(found if not isinstance(found, SimilarCases)
                                     else found.first(k)))  # fmt: skip
        if folder is not None:
            written += 1
            path = folder / f"report-{written:04d}.pdf"
            similar = found if isinstance(found, SimilarCases) else None
            path.write_bytes(
                case_pdf(backend, item.data, prediction, None, k=k or 5, audit_id=audit_id,
                         title=f"Image {written}", similar=similar)
            )  # fmt: skip
            row["report"] = str(path)
    return written


def study_evidence(
    args: argparse.Namespace, backend: Any, result: Any, number: int, version: int | None
) -> list[str]:
    """``tumorlib study --similar K / --report DIR``: lines naming each key slice's nearest
    confirmed cases, and the series' PDF (numbered) written into ``DIR``."""
    lines: list[str] = []
    k = int(getattr(args, "similar", 0) or 0)
    images = {s.ref.index: s.image for s in result.series.slices}
    for index in result.verdict.key_slices if k > 0 else ():
        found = backend.similar(images.get(index, b""), k, version)
        cells = similar_cells(found)
        words = cells.get("similar_cases", "")
        agree = {"true": " (agree)", "false": " (disagree)"}.get(cells.get("neighbours_agree", ""))
        lines.append(f"  similar to key slice {index + 1}: {words}{agree or ''}")
    if getattr(args, "report", None):
        from serving.reporting.build import study_pdf

        folder = Path(args.report)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"study-report-{number:02d}.pdf"
        path.write_bytes(study_pdf(backend, result, version, k=k or 5))
        lines.append(f"  report: {path}")
    return lines
