"""Batch prediction: ``tumorlib predict PATH... [--output results.csv]``.

Why: a radiology team evaluating the tool wants to run a folder of exported slices, not upload
them one by one. Files and folders (searched recursively) of JPEG, PNG and DICOM go through the
page's own backends (:mod:`serving.clients.backend`) — the newest export in this process (the
default) or TF Serving over REST (``--serving-url``) — chunked the same way and with a bad file
isolated the same way, so a CSV from here and an answer on the page agree.

Each row: the file (and DICOM frame), the four temperature-scaled probabilities, the class, the
confidence, ``abstain`` (confidence below the validation-chosen threshold: "uncertain — refer to a
radiologist") and ``in_distribution`` (the input gate's verdict) when the model provides them,
and an ``error`` for a file that could not be read — one bad file never stops the batch. DICOM
patient identifiers never reach the CSV or the terminal.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from serving.clients.backend import (
    DEFAULT_TIMEOUT_S,
    MAX_CHUNK_IMAGES,
    Backend,
    BackendError,
    Settings,
    make_backend,
)
from serving.clients.prediction import Prediction
from tumorlib.contracts.classes import CLASS_NAMES, DISPLAY_NAMES
from tumorlib.contracts.cli import EXIT_FAILURE, CommandError, run_command
from tumorlib.contracts.display import csv_cell
from tumorlib.contracts.serving_contract import (
    DISCLAIMER,
    MODEL_BASE_PATH,
    MODEL_NAME,
    UNCERTAIN_MESSAGE,
)
from tumorlib.inputs.dicom import DICOM_SUFFIXES
from tumorlib.inputs.policy import (
    DICOM_UNUSABLE,
    MAX_DICOM_BYTES,
    MAX_IMAGE_BYTES,
    InputRejected,
    check_dicom_size,
    check_image,
    check_size,
)
from tumorlib_cli import audit, evidence

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SUPPORTED_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES
FIELDS = (
    ["path", "frame"]
    + [f"p_{n}" for n in CLASS_NAMES]
    + ["class_name", "display_name", "confidence", "abstain", "in_distribution", "gate_score"]
    + ["familiar", "familiarity_score"]
    + ["error"]
)


@dataclass
class Item:
    """One image to classify: where it came from and its encoded bytes (or why it has none)."""

    path: str
    frame: int | str = ""
    data: bytes | None = None
    error: str = ""


def collect_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders searched recursively for supported suffixes, sorted."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
            )
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return found


def load_items(path: Path, *, all_frames: bool = False, frame: int = 0) -> list[Item]:
    """Read a file into one item (or one per DICOM frame); refused files become error items.

    The input policy (:mod:`tumorlib.inputs.policy`) decides, in the page's and the server's
    words: the size from ``stat`` before reading, the header before anything is sent.
    """
    from tumorlib.inputs.dicom import DicomError, dicom_to_png, is_dicom

    try:
        size = path.stat().st_size
        check_size(size, max_bytes=max(MAX_IMAGE_BYTES, MAX_DICOM_BYTES))
        with open(path, "rb") as file:
            dicom = path.suffix.lower() in DICOM_SUFFIXES or is_dicom(file.read(132))
        if dicom:
            check_dicom_size(size)
        else:
            check_size(size)
        data = path.read_bytes()
        if not dicom:
            check_image(data)
            return [Item(str(path), data=data)]
        pngs = dicom_to_png(data, frame=None if all_frames else frame)
    except InputRejected as err:
        return [Item(str(path), error=err.message)]
    except DicomError as err:
        return [Item(str(path), error=DICOM_UNUSABLE.format(problem=err))]
    except OSError as err:
        return [Item(str(path), error=f"cannot read file: {err.strerror or err}")]
    first = 0 if all_frames else frame
    return [Item(str(path), frame=first + i, data=png) for i, png in enumerate(pngs)]


def predict_items(
    backend: Backend, items: list[Item], *, progress: bool = True
) -> list[Prediction | None]:
    """One prediction (or ``None`` with ``item.error`` set) per item.

    The backend chunks the requests and retries a failed chunk image by image, so only the bad
    file gets an error; a server that is down raises :class:`BackendError`.
    """
    from tqdm import tqdm

    results: list[Prediction | None] = [None] * len(items)
    todo = [i for i, item in enumerate(items) if item.data is not None]
    images = [item.data for item in items if item.data is not None]
    with tqdm(total=len(todo), desc="predict", unit="img", disable=not progress) as bar:
        answers = backend.predict(images, None, progress=bar.update)
    for i, answer in zip(todo, answers):
        if isinstance(answer, str):
            items[i].error = f"prediction failed: {answer}"
        else:
            results[i] = answer
    return results


def csv_rows(
    items: list[Item], predictions: list[Prediction | None], threshold: float | None
) -> list[dict]:
    """One CSV row per item; ``abstain`` from the model, else from ``threshold``."""
    rows = []
    for item, pred in zip(items, predictions):
        row: dict[str, Any] = {"path": item.path, "frame": item.frame}
        if pred is None:
            row["error"] = item.error or "no prediction"
            rows.append(row)
            continue
        probs = pred.probabilities
        confidence = max(probs.values())
        row.update({f"p_{name}": f"{probs[name]:.6f}" for name in CLASS_NAMES})
        row["class_name"] = pred.class_name
        row["display_name"] = DISPLAY_NAMES.get(pred.class_name, pred.class_name)
        row["confidence"] = f"{confidence:.6f}"
        abstain = getattr(pred, "abstain", None)  # stand-ins and older exports may lack it
        if abstain is None and threshold is not None:
            abstain = confidence < threshold
        row["abstain"] = "" if abstain is None else str(bool(abstain)).lower()
        in_dist = getattr(pred, "in_distribution", None)
        row["in_distribution"] = "" if in_dist is None else str(bool(in_dist)).lower()
        score = getattr(pred, "gate_score", None)
        row["gate_score"] = "" if score is None else f"{float(score):.3f}"
        familiar = getattr(pred, "familiar", None)
        row["familiar"] = "" if familiar is None else str(bool(familiar)).lower()
        familiarity = getattr(pred, "familiarity_score", None)
        row["familiarity_score"] = "" if familiarity is None else f"{float(familiarity):.3f}"
        row["error"] = ""
        rows.append(row)
    return rows


def write_csv(rows: list[dict], out: IO[str], extra: list[str] | None = None) -> None:
    """The CSV, every cell neutralised (file names and messages are not formulas)."""
    writer = csv.DictWriter(out, fieldnames=FIELDS + (extra or []), restval="")
    writer.writeheader()
    writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tumorlib predict",
        description=f"Classify JPEG/PNG/DICOM files or folders into a CSV. {DISCLAIMER}",
    )
    parser.add_argument("paths", nargs="+", help="files or folders (searched recursively)")
    parser.add_argument("--output", "-o", help="CSV file to write (default: standard output)")
    parser.add_argument("--serving-url", help="TF Serving REST URL, e.g. http://127.0.0.1:8501")
    parser.add_argument("--model-name", default=MODEL_NAME)
    parser.add_argument("--model-base-path", default=str(MODEL_BASE_PATH))
    parser.add_argument(
        "--abstain-threshold",
        type=float,
        default=None,
        help="override the exported model's abstention threshold",
    )
    parser.add_argument(
        "--all-frames", action="store_true", help="every frame of multi-frame DICOM"
    )
    parser.add_argument("--frame", type=int, default=0, help="DICOM frame to use (default 0)")
    parser.add_argument("--batch-size", type=int, default=MAX_CHUNK_IMAGES, help="images/request")
    parser.add_argument("--no-progress", action="store_true")
    audit.add_arguments(parser)  # --no-audit, --audit-sop-uid (docs/audit.md)
    evidence.add_arguments(parser)  # --similar K, --report DIR
    return parser


def run_batch(args: argparse.Namespace, backend: Backend | None = None) -> int | None:
    """Predict every file named in ``args`` and write the CSV; a summary goes to stderr.

    Every row is written even when files fail; the exit code is then 1, so a script notices.
    """
    paths = collect_paths(args.paths)
    if not paths:
        raise CommandError("no JPEG/PNG/DICOM files found")
    try:
        if backend is None:
            settings = Settings(
                args.serving_url, args.model_name, Path(args.model_base_path), DEFAULT_TIMEOUT_S
            )
            backend = make_backend(settings, max_images=args.batch_size)
        items = [
            it for p in paths for it in load_items(p, all_frames=args.all_frames, frame=args.frame)
        ]
        threshold = args.abstain_threshold
        if threshold is None:  # the exported model's own; unknown when its metadata is not
            threshold = backend.safety(None).threshold
        predictions = predict_items(backend, items, progress=not args.no_progress)
        audit_ids = audit.record_batch(args, backend, items, predictions)  # never fails
        rows = csv_rows(items, predictions, threshold)
        reports = evidence.add_evidence(args, backend, items, predictions, rows, audit_ids)
    except BackendError as err:  # model missing, server down
        raise CommandError(err.message) from None
    extra = evidence.extra_fields(args)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        with open(args.output, "w", newline="") as out:
            write_csv(rows, out, extra)
    else:
        write_csv(rows, sys.stdout, extra)
    failed = sum(1 for r in rows if r.get("error"))
    abstained = sum(1 for r in rows if r.get("abstain") == "true")
    print(
        f"{len(rows)} images: {len(rows) - failed} classified, {abstained} marked "
        f'"{UNCERTAIN_MESSAGE}", {failed} failed'
        + (f"; written to {args.output}" if args.output else "")
        + (f"; {reports} PDF report(s) in {args.report}" if args.report else "")
        + f". {DISCLAIMER}",
        file=sys.stderr,
    )
    if threshold is None:
        print("note: no abstention threshold known; the abstain column is empty", file=sys.stderr)
    if failed:
        err = sys.stderr
        print(f"error: {failed} of {len(rows)} images failed (see the error column)", file=err)
        return EXIT_FAILURE
    return None


def main(argv: list[str] | None = None, backend: Backend | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: run_batch(args, backend))


if __name__ == "__main__":
    sys.exit(main())
