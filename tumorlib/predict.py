"""Batch prediction: ``python -m tumorlib.predict PATH... [--output results.csv]``.

Why: a radiology team evaluating the tool wants to run a folder of exported slices, not upload
them one by one. Files and folders (searched recursively) of JPEG, PNG and DICOM go through the
same backends as the upload page — the exported SavedModel in this process
(:class:`serving.inprocess.InProcessModel`, the default) or TF Serving over REST
(:class:`serving.client.TFServingClient`, with ``--serving-url``) — so a CSV from here and an
answer on the page agree.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tumorlib.classes import CLASS_NAMES, DISPLAY_NAMES

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DICOM_SUFFIXES = (".dcm", ".dicom")
SUPPORTED_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES
MAX_FILE_BYTES = 50 * 1024 * 1024


class Backend(Protocol):
    """What both serving backends offer (see ``serving/``)."""

    def predict(self, images: Sequence[bytes], version: int | None = None) -> list[Any]: ...

    def metadata(self, version: int | None = None) -> dict: ...


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
    """Read a file into one item (or one per DICOM frame); unreadable files become error items."""
    from tumorlib.dicom_io import DicomError, dicom_to_png, is_dicom

    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return [Item(str(path), error=f"file too large ({size} bytes > {MAX_FILE_BYTES})")]
        data = path.read_bytes()
    except OSError as err:
        return [Item(str(path), error=f"cannot read file: {err.strerror or err}")]
    if path.suffix.lower() in DICOM_SUFFIXES or is_dicom(data):
        try:
            pngs = dicom_to_png(data, frame=None if all_frames else frame)
        except DicomError as err:
            return [Item(str(path), error=f"DICOM: {err}")]
        first = 0 if all_frames else frame
        return [Item(str(path), frame=first + i, data=png) for i, png in enumerate(pngs)]
    return [Item(str(path), data=data)]


def abstention_threshold(backend: Backend, override: float | None) -> float | None:
    """``--abstain-threshold`` if given, else the exported model's ``abstention.threshold``."""
    if override is not None:
        return override
    try:
        meta = backend.metadata()
    except Exception:  # metadata is optional for a prediction; the column stays empty
        return None
    value = (meta.get("abstention") or {}).get("threshold")
    return float(value) if value is not None else None


def predict_items(
    backend: Backend, items: list[Item], *, batch_size: int = 16, progress: bool = True
) -> list[Any]:
    """One prediction (or ``None`` with ``item.error`` set) per item, batched.

    A batch that fails (e.g. one undecodable image) is retried image by image, so only the bad
    file gets an error.
    """
    from tqdm import tqdm

    results: list[Any] = [None] * len(items)
    todo = [i for i, item in enumerate(items) if item.data is not None]
    with tqdm(total=len(todo), desc="predict", unit="img", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            try:
                preds = backend.predict([items[i].data for i in chunk])
                for i, pred in zip(chunk, preds):
                    results[i] = pred
            except (ValueError, TypeError, RuntimeError):
                for i in chunk:
                    try:
                        results[i] = backend.predict([items[i].data])[0]
                    except (ValueError, TypeError, RuntimeError) as err:
                        if _is_unavailable(err):
                            raise
                        items[i].error = f"prediction failed: {err}"
            bar.update(len(chunk))
    return results


def _is_unavailable(err: Exception) -> bool:
    return type(err).__name__ in ("TFServingUnavailable",)


def csv_rows(items: list[Item], predictions: list[Any], threshold: float | None) -> list[dict]:
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
        abstain = getattr(pred, "abstain", None)
        if abstain is None and threshold is not None:
            abstain = confidence < threshold
        row["abstain"] = "" if abstain is None else str(bool(abstain)).lower()
        in_dist = getattr(pred, "in_distribution", None)
        row["in_distribution"] = "" if in_dist is None else str(bool(in_dist)).lower()
        score = getattr(pred, "gate_score", None)
        row["gate_score"] = "" if score is None else f"{float(score):.3f}"
        row["error"] = ""
        rows.append(row)
    return rows


FIELDS = (
    ["path", "frame"]
    + [f"p_{n}" for n in CLASS_NAMES]
    + ["class_name", "display_name", "confidence", "abstain", "in_distribution", "gate_score"]
    + ["error"]
)


def write_csv(rows: list[dict], out) -> None:
    writer = csv.DictWriter(out, fieldnames=FIELDS, restval="")
    writer.writeheader()
    writer.writerows(rows)


def make_backend(serving_url: str | None, model_base_path: str, model_name: str) -> Backend:
    if serving_url:
        from serving.client import TFServingClient

        return TFServingClient(base_url=serving_url, model_name=model_name)
    from serving.inprocess import InProcessModel

    return InProcessModel(model_base_path)


def main(argv: list[str] | None = None, backend: Backend | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tumorlib.predict",
        description="Classify JPEG/PNG/DICOM files or folders into a CSV (decision support only).",
    )
    parser.add_argument("paths", nargs="+", help="files or folders (searched recursively)")
    parser.add_argument("--output", "-o", help="CSV file to write (default: standard output)")
    parser.add_argument("--serving-url", help="TF Serving REST URL, e.g. http://127.0.0.1:8501")
    parser.add_argument("--model-name", default="brain_mri")
    parser.add_argument("--model-base-path", default="models/brain_mri")
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
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    try:
        paths = collect_paths(args.paths)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not paths:
        print("error: no JPEG/PNG/DICOM files found", file=sys.stderr)
        return 2
    try:
        backend = backend or make_backend(args.serving_url, args.model_base_path, args.model_name)
        items = [
            it for p in paths for it in load_items(p, all_frames=args.all_frames, frame=args.frame)
        ]
        threshold = abstention_threshold(backend, args.abstain_threshold)
        predictions = predict_items(
            backend, items, batch_size=args.batch_size, progress=not args.no_progress
        )
    except (FileNotFoundError, RuntimeError) as err:  # model missing, server down
        print(f"error: {err}", file=sys.stderr)
        return 1
    rows = csv_rows(items, predictions, threshold)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        with open(args.output, "w", newline="") as out:
            write_csv(rows, out)
    else:
        write_csv(rows, sys.stdout)
    failed = sum(1 for r in rows if r.get("error"))
    abstained = sum(1 for r in rows if r.get("abstain") == "true")
    print(
        f"{len(rows)} images: {len(rows) - failed} classified, {abstained} marked uncertain "
        f"(refer to a radiologist), {failed} failed"
        + (f"; written to {args.output}" if args.output else ""),
        file=sys.stderr,
    )
    if threshold is None:
        print("note: no abstention threshold known; the abstain column is empty", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
