"""Served cost of the v2 model against the v1 architecture: images per second through the graph.

    python bench/model_cost.py [--run RUN] [--rounds 5] [--seconds 8] [--batch-size 32]

Baseline: the architecture v1 served — two MobileNetV2-0.35 members at 320 and 384 px averaged
with their mirror images (four backbone passes per slice), the input gate and the familiarity
flag tapping the first member. Ours: one MobileNetV2-1.0 at 224 px, one backbone pass that the
gate and the familiarity flag tap too. Both are the serving modules TF Serving runs
(:class:`serving.export.module.ServingModule`), built in this process and called on the same
batches of real JPEGs (``../shared``; generated ones otherwise) in alternating timed rounds.
Throughput does not depend on the weights, so both are built with random ones and gate
statistics fitted on their own features of random images; ``--run`` measures a trained run as
ours instead. The last line is exactly ``model ratio=X target=1.8`` (ours over the baseline,
medians).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.gate import _stand_in_gates, throughput  # noqa: E402  (after sys.path)
from bench.serving import load_images  # noqa: E402

TARGET_RATIO = 1.8
V1_SIZES = (320, 384)  # the v1 members' input sizes
V1_ALPHA = 0.35
HEAD_UNITS = 512  # tuning/best_hparams.json


def v1_model():
    """Two random-weight MobileNetV2-0.35 members (320, 384 px) with flip TTA, as v1 served."""
    from tumorlib.model.classifier import build_model
    from tumorlib.model.ensemble import build_ensemble

    members = [
        build_model(image_size=s, alpha=V1_ALPHA, weights=None, head_units=HEAD_UNITS)
        for s in V1_SIZES
    ]
    return build_ensemble(members, tta=True), max(V1_SIZES)


def v2_model(run: Path | None):
    """One MobileNetV2-1.0 at 224 px (random weights), or a trained run's model."""
    from tumorlib.contracts.runs import load_run
    from tumorlib.model.classifier import build_model
    from tumorlib.model.loading import load_run_model

    if run is not None:
        loaded = load_run(run)
        return load_run_model(loaded), loaded.image_size
    return build_model(image_size=224, alpha=1.0, weights=None, head_units=HEAD_UNITS), 224


def serving_module(model, image_size: int, root: Path):
    """The module TF Serving would run: gate and familiarity on, temperature 1."""
    from serving.export.module import ServingModule
    from serving.export.safety import Safety

    gate, familiarity = _stand_in_gates(model, image_size)
    metadata = root / "metadata.json"
    metadata.write_text("{}")
    return ServingModule(
        model,
        image_size=image_size,
        temperature=1.0,
        metadata_file=metadata,
        safety=Safety(None, gate, None, familiarity),
    )


def main(argv: list[str] | None = None) -> int:
    import tensorflow as tf

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, help="a trained v2 run folder as ours")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per timed round")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args(argv)

    images, source = load_images(args.images)
    batches = [
        tf.constant(images[i : i + args.batch_size])
        for i in range(0, len(images) - args.batch_size + 1, args.batch_size)
    ]
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        root = Path(tmp)
        (root / "v1").mkdir()
        (root / "v2").mkdir()
        modules = {
            "v1": serving_module(*v1_model(), root / "v1"),
            "v2": serving_module(*v2_model(args.run), root / "v2"),
        }
        for module in modules.values():  # trace and warm up outside the timed rounds
            module.serve(batches[0])
        rates: dict[str, list[float]] = {name: [] for name in modules}
        for r in range(args.rounds):
            order = ("v1", "v2") if r % 2 == 0 else ("v2", "v1")
            for name in order:
                rates[name].append(throughput(modules[name].serve, batches, args.seconds))
            print(f"round {r + 1}: v1 {rates['v1'][-1]:.1f} img/s, v2 {rates['v2'][-1]:.1f} "
                  "img/s", flush=True)  # fmt: skip
    v1, v2 = statistics.median(rates["v1"]), statistics.median(rates["v2"])
    print(f"images: {source}; batch {args.batch_size}; {args.rounds} rounds of {args.seconds} s")
    print("v1: 2 x MobileNetV2-0.35 (320, 384 px) x flip = 4 backbone passes, gate tap")
    ours = f"run {args.run}" if args.run else "MobileNetV2-1.0 at 224 px, random weights"
    print(f"v2: {ours}, 1 backbone pass, gate tap")
    print(f"median throughput: v1 {v1:.1f} img/s, v2 {v2:.1f} img/s")
    print(f"model ratio={v2 / v1:.2f} target={TARGET_RATIO}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
