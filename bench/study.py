"""Study benchmark: a whole DICOM series through the study path vs its slices as one batch.

    python bench/study.py [--slices 100] [--rounds 3] [--size 256] [--model-base-path DIR]

Model: the serving benchmark's stand-in (``bench/serving.py``: MobileNetV2 alpha=0.35 at 224 px,
random weights, the real model's compute) exported into a temporary folder, or the newest export
under ``--model-base-path`` when given; loaded once, in-process (``serving.clients.backend.
InProcessBackend``), and shared by both paths.

Input: a synthetic ``--slices``-slice MR series (``tests/fixtures/studies.py``: 16-bit
``--size`` x ``--size`` single-frame DICOM files with positions and fake patient tags, shuffled
instance numbers), in memory.

Each round times both paths once, alternating which goes first, so drift in the machine's load
hits both alike; the figures are medians over rounds, in slices per second.

- **study path** — counted: :func:`tumorlib.studies.readers.read_series` with ``decode=False``, as
the
  CLI, page and PACS client call it (DICOM parsing, the input policy's header checks, ordering by
  position), and :func:`serving.clients.study.classify_series` (each chunk of slices decoded —
  windowing, PNG encoding — on a thread pool while the model predicts the chunk before;
  ``Backend.predict`` on each chunk; the aggregation rule).
- **baseline** — the same slices already as the PNG bytes the reader produces, in one
  ``Backend.predict`` call (the backend chunks as it always does).

Not counted: generating the files, exporting and loading the model, one warm-up of each path,
Grad-CAM, writing the DICOM SR / Secondary Captures, the page's rendering.

Target (issue 14): study-path throughput >= 0.8x the baseline.
The last line is exactly ``study ratio=X target=0.8``.

Measured figures: README, "Benchmarks".
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.audit import serving_bench  # noqa: E402  (after sys.path; loads bench/serving.py)

TARGET_RATIO = 0.8
log = logging.getLogger("bench.study")


def synthetic_series(n: int, size: int) -> list[tuple[str, bytes]]:
    """``n`` single-frame DICOM files of one series, instance numbers shuffled."""
    from tests.fixtures.studies import make_dicom_series, phantom

    return make_dicom_series(phantom(n, size), shuffle_instance_numbers=True)


def study_path(files, backend, version) -> tuple[int, float, float]:
    """read_series + classify_series; returns (slices answered, seconds, of which reading)."""
    from serving.clients.study import classify_series
    from tumorlib.studies.readers import read_series

    start = time.perf_counter()
    series = read_series(files, decode=False)  # as the CLI, page and PACS client read
    read = time.perf_counter() - start
    results = [classify_series(s, backend, version) for s in series]
    seconds = time.perf_counter() - start
    return sum(len(r.slices) for r in results), seconds, read


def batch_path(images: list[bytes], backend, version) -> tuple[int, float]:
    """The same PNG bytes in one ``Backend.predict`` call; returns (slices answered, seconds)."""
    start = time.perf_counter()
    answers = backend.predict(images, version)
    return len(answers), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--size", type=int, default=256, help="pixels per side of each slice")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model-base-path", help="an export to use instead of the stand-in")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from serving.clients.backend import InProcessBackend, load_model
    from serving.common.versions import find_latest_version
    from tumorlib.studies.readers import read_series

    files = synthetic_series(args.slices, args.size)
    images = [s.image for series in read_series(files) for s in series.slices if s.image]
    log.info("%d DICOM files (%d x %d, 16-bit), %d PNG slices after reading, %.1f MB in all",
             len(files), args.size, args.size, len(images),
             sum(len(d) for _, d in files) / 2**20)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        if args.model_base_path:
            base, model = Path(args.model_base_path), f"export under {args.model_base_path}"
        else:
            base = serving_bench().stand_in_export(Path(tmp))
            model = "stand-in MobileNetV2 a=0.35/224 (random weights)"
        version = find_latest_version(base)
        if version is None:
            parser.error(f"no exported version under {base}")
        backend = InProcessBackend(load_model(str(base), version))
        study_path(files, backend, version)  # warm-up: tracing, first allocations
        batch_path(images, backend, version)
        rates: dict[str, list[float]] = {"study": [], "batch": []}
        reading: list[float] = []
        for r in range(args.rounds):
            order = ("study", "batch") if r % 2 == 0 else ("batch", "study")
            for name in order:
                if name == "study":
                    n, seconds, read = study_path(files, backend, version)
                    reading.append(read / seconds)
                else:
                    n, seconds = batch_path(images, backend, version)
                rates[name].append(n / seconds)
            log.info("round %d: study %.1f slices/s, batch %.1f slices/s",
                     r + 1, rates["study"][-1], rates["batch"][-1])  # fmt: skip
    study, batch = statistics.median(rates["study"]), statistics.median(rates["batch"])
    ratio = study / batch
    log.info("model: %s, version %s, in-process; %d rounds", model, version, args.rounds)
    log.info("median: study path %.1f slices/s, one batched predict %.1f slices/s", study, batch)
    log.info("reading headers (read_series) took a median %.0f%% of the study path's time",
             100 * statistics.median(reading))  # fmt: skip
    print(f"study ratio={ratio:.3f} target={TARGET_RATIO}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
