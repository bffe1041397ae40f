"""Audit benchmark: prediction throughput with the audit record on vs off, same model, one run.

    python bench/audit.py [--duration 20] [--rounds 3] [--batch-size 16] [--url URL]

Uses the newest export under ``--model-base-path`` when there is one; otherwise exports the
serving benchmark's stand-in (MobileNetV2 alpha=0.35 at 224 px, random weights: the real model's
compute; ``bench/serving.py``) into a temporary folder. Images: real JPEGs from ``../shared/data``
when the archive is there, else generated ones.

Rounds alternate off/on (``serving.clients.backend.InProcessBackend.predict`` on batches, then
``AuditLog.record`` of every answer when on), so drift in the machine's load hits both alike.
Recording goes to a SQLite file in a temporary folder (or ``--url``); after the timed rounds
the writer is flushed and the rows are counted: every recorded prediction must be there.

Target (issue: audit): throughput with recording >= 0.95x without.
The last line is exactly ``audit ratio=X target=0.95``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tumorlib.contracts.serving_contract import MODEL_BASE_PATH  # noqa: E402  (after sys.path)

TARGET_RATIO = 0.95
log = logging.getLogger("bench.audit")


def serving_bench():
    """bench/serving.py as a module (image loading and the stand-in export live there)."""
    spec = importlib.util.spec_from_file_location("bench_serving", REPO_ROOT / "bench/serving.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rounds(backend, audit, images, *, duration: float, batch: int, record: bool) -> tuple:
    """Predict batches for ``duration`` seconds; returns (images answered, records made)."""
    from serving.audit import Input

    done = records = 0
    start = time.perf_counter()
    while time.perf_counter() - start < duration:
        chunk = images[(done % len(images)) :][:batch] or images[:batch]
        answers = backend.predict(chunk, None)
        if record:
            answered = [(a, Input(d)) for a, d in zip(answers, chunk) if not isinstance(a, str)]
            records += len(audit.record(backend, None, answered, source="bench"))
        done += len(chunk)
    return done, time.perf_counter() - start, records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--model-base-path", default=str(MODEL_BASE_PATH))
    parser.add_argument("--url", help="audit database URL (default: SQLite in a temp folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from serving.audit import AuditLog, AuditSettings
    from serving.clients.backend import InProcessBackend, load_model
    from serving.common.versions import find_latest_version

    bench = serving_bench()
    images, source = bench.load_images(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.model_base_path)
        if find_latest_version(base) is None:
            log.info("no export under %s: exporting the stand-in model", base)
            base = bench.stand_in_export(Path(tmp))
        version = find_latest_version(base)
        backend = InProcessBackend(load_model(str(base), version), max_images=args.batch_size)
        url = args.url or f"sqlite:///{Path(tmp) / 'audit.sqlite'}"
        audit = AuditLog(AuditSettings(url=url, spool_path=Path(tmp) / "spool.jsonl"))
        backend.predict(images[: args.batch_size], None)  # warm-up: tracing, first allocation
        audit.store.migrate()
        totals = {False: [0, 0.0], True: [0, 0.0]}
        recorded = 0
        for r in range(args.rounds):
            for record in (False, True):
                n, seconds, made = rounds(
                    backend, audit, images, duration=args.duration, batch=args.batch_size,
                    record=record,
                )  # fmt: skip
                totals[record][0] += n
                totals[record][1] += seconds
                recorded += made
                log.info("round %d audit %s: %.1f img/s", r + 1, "on " if record else "off",
                         n / seconds)  # fmt: skip
        flushed = audit.flush(60)
        rows = len(audit.store.rows("prediction"))
        audit.close()
    off = totals[False][0] / totals[False][1]
    on = totals[True][0] / totals[True][1]
    ratio = on / off
    log.info("model %s version %s; images: %s; batch %d", base, version, source, args.batch_size)
    log.info("throughput: audit off %.1f img/s, on %.1f img/s", off, on)
    log.info("records: %d made, %d in the database (flushed: %s)", recorded, rows, flushed)
    if rows != recorded:
        log.error("lost or duplicated records: %d made, %d stored", recorded, rows)
    print(f"audit ratio={ratio:.3f} target={TARGET_RATIO}")
    return 0 if rows == recorded else 1


if __name__ == "__main__":
    sys.exit(main())
