"""How training and the dataset build scale: replicas, and the de-duplication as images grow.

1. **Replicas**: training examples/s of MobileNetV2 (alpha 0.35, fine-tuning the top 100 layers,
   the recipe's phase two) with one replica (the default strategy) and with two
   (``MirroredStrategy`` over two logical CPU devices), per-replica batch fixed, so the global
   batch doubles. Each runs in its own process (logical devices are process-wide) on in-memory
   images of the real input shape: this measures the compute and the all-reduce, not JPEG decode.
   On a CPU, one replica already uses every core for its convolutions, so two replicas can only
   split the same cores; the honest expectation is ~1.0, and the target (below) asks only that
   distributing costs < 20 %. On N GPUs the same command measures the real speed-up.
2. **De-duplication cost**: ``brain_mri.dedup.group_duplicates`` (the local build's all-pairs
   blocked cosine search + components) on the archive's own thumbnails, and on 4x and 16x as
   many (each extra copy a slightly shifted, noisy version of an archive thumbnail, re-normalised,
   so near-duplicate structure grows like a bigger archive's). Also printed: how many block pairs
   the Beam build's search would spread over workers (``brain_mri.beam_build.BLOCK``).

The last line is machine-readable: ``scaling ratio=X target=0.8`` (X = 2-replica / 1-replica
examples/s).

    .venv/bin/python -m bench.scaling --manual-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TARGET_RATIO = 0.8


def replica_rate(replicas: int, image_size: int, per_replica: int, steps: int) -> float:
    """Examples/s of training steps in this process with ``replicas`` logical CPU devices."""
    import tensorflow as tf

    if replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * replicas
        )
    import keras

    from tumorlib.model.classifier import build_model, set_phase
    from tumorlib.training.phases import compile_model

    strategy = (
        tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
        if replicas > 1
        else tf.distribute.get_strategy()
    )
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_model(image_size=image_size, weights=None)
    set_phase(model, "fine_tune", 100)
    compile_model(model, 3e-4, 0.1, strategy)
    batch = per_replica * replicas
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch * 4, image_size, image_size, 3)).astype("float32")
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, batch * 4)]
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch, drop_remainder=True).repeat()
    model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)  # warm-up: tracing, first allocations
    t0 = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps * batch / (time.perf_counter() - t0)


def synthetic_thumbnails(thumbs: np.ndarray, factor: int, seed: int = 0) -> np.ndarray:
    """``factor`` x as many thumbnails: the originals plus shifted, noisy, re-normalised copies."""
    rng = np.random.default_rng(seed)
    side = int(np.sqrt(thumbs.shape[1]))
    out = [thumbs]
    for k in range(1, factor):
        grid = np.roll(thumbs.reshape(-1, side, side), shift=(k % 3, k // 3 % 3), axis=(1, 2))
        grid = grid.reshape(len(thumbs), -1) + rng.normal(0, 0.02, thumbs.shape)
        grid -= grid.mean(axis=1, keepdims=True)
        out.append(grid / np.linalg.norm(grid, axis=1, keepdims=True))
    return np.concatenate(out).astype(np.float32)


def dedup_costs(manual_dir: Path, factors: list[int]) -> list[dict]:
    """Seconds of the grouping at each size; prints how it grows."""
    from brain_mri import beam_build, dedup, sartaj

    source = sartaj.find_archive(manual_dir)
    images = list(sartaj.iter_images(source))
    thumbs = np.stack([dedup.thumbnail(i.data) for i in images])
    rows = []
    for factor in factors:
        t = synthetic_thumbnails(thumbs, factor)
        hashes = [str(i) for i in range(len(t))]
        t0 = time.perf_counter()
        groups = dedup.group_duplicates(hashes, t)
        seconds = time.perf_counter() - t0
        blocks = -(-len(t) // beam_build.BLOCK)
        rows.append({"factor": factor, "images": len(t), "seconds": round(seconds, 2),
                     "groups": int(groups.max()) + 1,
                     "beam_block_pairs": blocks * (blocks + 1) // 2})  # fmt: skip
        growth = "" if len(rows) == 1 else f"  x{seconds / rows[-2]['seconds']:.1f} time"
        print(f"  dedup {factor:>2}x: {len(t):>6} images {seconds:7.2f} s, "
              f"{rows[-1]['groups']} groups, {rows[-1]['beam_block_pairs']} Beam block pairs"
              f"{growth}", flush=True)  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manual-dir", default="../shared/data", help="the archive's folder")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--per-replica-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--factors", default="1,4,16")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        rate = replica_rate(args.child, args.image_size, args.per_replica_batch, args.steps)
        print(json.dumps({"rate": rate}))
        return 0
    rates = {}
    for replicas in (1, 2):
        out = subprocess.run(
            [sys.executable, "-m", "bench.scaling", "--child", str(replicas),
             "--image-size", str(args.image_size), "--per-replica-batch",
             str(args.per_replica_batch), "--steps", str(args.steps)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        rates[replicas] = json.loads(out.strip().splitlines()[-1])["rate"]
        print(f"  {replicas} replica(s): {rates[replicas]:7.1f} examples/s "
              f"(global batch {args.per_replica_batch * replicas})", flush=True)  # fmt: skip
    factors = [int(f) for f in args.factors.split(",")]
    costs = dedup_costs(Path(args.manual_dir), factors)
    ratio = rates[2] / rates[1]
    if args.json:
        Path(args.json).write_text(json.dumps({"rates": rates, "dedup": costs}, indent=2))
    print(f"scaling ratio={ratio:.2f} target={TARGET_RATIO:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
