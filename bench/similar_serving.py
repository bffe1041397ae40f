"""Does the similar-cases index cost ``serving_default`` anything? Same run, exported twice.

    python bench/similar_serving.py --run RUN [--data-dir DIR] [--rounds 3] [--duration 15]

The run is exported without (``--no-similar``) and with the ``similar_cases`` signature and its
index (:mod:`serving.export.similar_cases`) into a temporary folder; then, in rounds that
alternate the two exports (so drift in the machine's load hits both alike), ``serving_default``
is measured in-process on batches of 32 and behind the local server with ``--clients``
concurrent single-image REST clients (``bench/serving.py``'s phases). Without ``--run`` the
serving benchmark's stand-in (MobileNetV2 alpha=0.35/224, random weights) is exported with a
synthetic index of ``--rows`` rows, injected through the same builder.

Target (issue 26): ``serving_default`` throughput with the index >= 0.95x without, REST medians.
The last line is exactly ``similar_serving ratio=X target=0.95``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

TARGET_RATIO = 0.95


def serving_bench():
    spec = importlib.util.spec_from_file_location("bench_serving", REPO_ROOT / "bench/serving.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_builder(rows: int):
    """A stand-in for ``build_case_index``: ``rows`` random unit rows of the model's width."""
    from serving.common.case_index import CaseIndex
    from tumorlib.model.embedding import embedding_size

    def build(model, run, **_):
        rng = np.random.default_rng(0)
        vectors = rng.normal(size=(rows, embedding_size(model))).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        item = {"label": "glioma", "source": "synthetic", "sequence": "unknown", "licence": "-"}
        thumbnail = bytes(3000)  # a thumbnail's typical size
        description = {"config": "synthetic", "split": "train"}
        return CaseIndex(vectors, [item] * rows, [thumbnail] * rows, description), ""

    return build


def export_both(root: Path, args, bench) -> tuple[Path, Path, str]:
    """(without, with) model base paths, and what was exported."""
    from serving.export import exporter, similar_cases

    if args.run:
        run, what = Path(args.run), f"run {args.run}"
    else:
        run, what = bench.stand_in_run(root), f"stand-in, synthetic index of {args.rows} rows"
        similar_cases.build_case_index = synthetic_builder(args.rows)
    start = time.perf_counter()
    plain = exporter.export_run(run, root / "plain" / "brain_mri", similar=False).parent
    middle = time.perf_counter()
    indexed = exporter.export_run(
        run, root / "indexed" / "brain_mri", similar=True, data_dir=args.data_dir
    )
    size = sum(p.stat().st_size for p in indexed.rglob("*") if p.is_file()) / 2**20
    plain_size = sum(p.stat().st_size for p in plain.rglob("*") if p.is_file()) / 2**20
    print(f"export without index {middle - start:.0f} s ({plain_size:.0f} MiB), with index "
          f"{time.perf_counter() - middle:.0f} s ({size:.0f} MiB)")  # fmt: skip
    if not (indexed / "assets" / "similar_cases").is_dir():
        raise SystemExit(f"no index was built for {run}: pass --data-dir with its dataset")
    return plain, indexed.parent, what


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--rows", type=int, default=3500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--keep", default=None, help="write the two exports here and keep them")
    args = parser.parse_args(argv)
    bench = serving_bench()
    images, origin = bench.load_images(64)
    results: dict[str, dict[str, list[float]]] = {
        name: {"in_process": [], "rest": []} for name in ("without", "with")
    }
    with tempfile.TemporaryDirectory(prefix="bench-similar-") as tmp:
        plain, indexed, what = export_both(Path(args.keep or tmp), args, bench)
        print(f"exports: {what}; images: {origin}")
        for round_ in range(args.rounds):
            pair = (("without", plain), ("with", indexed))
            # ABBA order: whatever drifts within a round (load beside us, the process's memory)
            # does not always hit the same export second.
            for name, base in pair if round_ % 2 == 0 else pair[::-1]:
                local = bench.bench_in_process(base, images, args.duration, 32, 1.0)
                served = bench.bench_server(base, images, args.duration, args.clients, 1.0)
                results[name]["in_process"].append(local["throughput"])
                results[name]["rest"].append(served["throughput"])
                print(f"round {round_ + 1} {name:7s} index: in-process {local['throughput']:6.1f} "
                      f"img/s, REST ({args.clients} clients) {served['throughput']:6.1f} img/s, "
                      f"errors {served['errors']}")  # fmt: skip
    medians = {n: {k: float(np.median(v)) for k, v in r.items()} for n, r in results.items()}
    for kind in ("in_process", "rest"):
        ratio = medians["with"][kind] / medians["without"][kind]
        print(f"{kind}: median {medians['without'][kind]:.1f} -> {medians['with'][kind]:.1f} "
              f"img/s ({ratio:.3f}x)")  # fmt: skip
    ratio = medians["with"]["rest"] / medians["without"]["rest"]
    print(f"similar_serving ratio={ratio:.3f} target={TARGET_RATIO}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
