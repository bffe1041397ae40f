"""Input-gate overhead: `serving_default` with the brain-MRI check and familiarity flag vs not.

    python bench/gate.py [--run RUN] [--rounds 7] [--seconds 8] [--batch-size 32]

Both serving modules are built in this process from the same Keras model (the graphs TF Serving
runs: :class:`serving.export.module.ServingModule`), one with the run's ``input_gate.npz`` and
``familiarity.npz``, one without, and called on the same batches of real JPEGs (``../shared``;
generated ones otherwise) in alternating timed rounds. Without ``--run``, the MobileNetV2-0.35/224
stand-in of ``bench/serving.py`` (random weights: the same compute) with statistics fitted on its
own features of random images. The ratio is the median gated throughput over the median plain
one (target >= 0.9: the gate may cost at most 10 %). The last line is exactly
``gate ratio=X target=0.9``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.serving import load_images, stand_in_run  # noqa: E402  (after sys.path)
from tumorlib.model.loading import load_run_model  # noqa: E402

TARGET_RATIO = 0.9


def _stand_in_gates(model, image_size: int):
    """Gate and familiarity statistics fitted on the stand-in's features of random images."""
    from tumorlib.safety.gate import fit_gate
    from tumorlib.safety.gate_features import DEFAULT_LAYERS, feature_extractor

    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (96, image_size, image_size, 3)).astype(np.float32)
    outs = feature_extractor(model, DEFAULT_LAYERS, probabilities=False)(images)
    feats = {name: outs[i].numpy() for i, name in enumerate(DEFAULT_LAYERS)}
    half = {k: v[:64] for k, v in feats.items()}, {k: v[64:] for k, v in feats.items()}
    return fit_gate(*half), fit_gate(*half)


def modules(run_path: Path | None, root: Path):
    """``(plain, gated, description)`` serving modules of one model."""
    from serving.export.module import ServingModule
    from serving.export.safety import NO_SAFETY, Safety, load_safety
    from tumorlib.contracts.runs import load_run

    run = load_run(run_path or stand_in_run(root))
    model = load_run_model(run)
    if run_path is None:
        gate, familiarity = _stand_in_gates(model, run.image_size)
        described = "stand-in MobileNetV2-0.35/224, statistics on random features"
    else:
        safety = load_safety(run)
        if safety.gate is None:
            raise SystemExit(f"{run_path} has no input gate; run `tumorlib gate {run_path}`")
        gate, familiarity = safety.gate, safety.familiarity
        described = f"{run_path} (image size {run.image_size})"
    metadata = root / "metadata.json"
    metadata.write_text("{}")

    def build(safety: Safety) -> ServingModule:
        return ServingModule(
            model,
            image_size=run.image_size,
            temperature=run.temperature,
            metadata_file=metadata,
            safety=safety,
        )

    gated = build(Safety(None, gate, None, familiarity))
    return build(NO_SAFETY), gated, described


def throughput(serve, batches: list, seconds: float) -> float:
    done, start, i = 0, time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        done += int(serve(batches[i % len(batches)])["class_index"].shape[0])
        i += 1
    return done / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    import tensorflow as tf

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--run", type=Path, help="run folder with input_gate.npz (default: stand-in)"
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per timed round")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args(argv)

    images, source = load_images(args.images)
    with tempfile.TemporaryDirectory(prefix="bench-gate-") as tmp:
        plain, gated, described = modules(args.run, Path(tmp))
        batches = [
            tf.constant(images[i : i + args.batch_size])
            for i in range(0, len(images) - args.batch_size + 1, args.batch_size)
        ]
        for module in (plain, gated):  # trace and warm up outside the timed rounds
            module.serve(batches[0])
        rates: dict[str, list[float]] = {"plain": [], "gated": []}
        for r in range(args.rounds):
            order = ("plain", "gated") if r % 2 == 0 else ("gated", "plain")
            for name in order:
                module = plain if name == "plain" else gated
                rates[name].append(throughput(module.serve, batches, args.seconds))
            print(f"round {r + 1}: plain {rates['plain'][-1]:.1f} img/s, gated "
                  f"{rates['gated'][-1]:.1f} img/s", flush=True)  # fmt: skip
    plain_median = statistics.median(rates["plain"])
    gated_median = statistics.median(rates["gated"])
    print(f"model: {described}; images: {source}; batch {args.batch_size}")
    print(f"median throughput: plain {plain_median:.1f} img/s, with gate + familiarity "
          f"{gated_median:.1f} img/s")  # fmt: skip
    print(f"gate ratio={gated_median / plain_median:.2f} target={TARGET_RATIO}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
