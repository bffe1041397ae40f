"""Throughput of the training input pipeline vs the stock Keras route, in one process.

Ours: ``tumorlib.data.pipeline.make_pipeline`` on ``brain_mri/<config>`` train (undecoded TFDS
records -> decode -> resize -> cache -> shuffle -> seeded graph augmentation -> normalise -> batch
-> prefetch), timed on warm epochs (the first epoch fills the cache and is not timed).

Baseline: the same training images written out as files in the class-folder layout and read
with ``keras.utils.image_dataset_from_directory`` (aspect kept by padding, like ours) plus Keras
preprocessing layers doing the same augmentation at the same magnitudes (rotation +/-15 deg, zoom
+/-10 %, horizontal flip, brightness +/-10 %, contrast +/-15 %) and the same [-1, 1] rescaling,
mapped with AUTOTUNE parallelism and prefetched. It is also given one untimed warm-up epoch (so
the files sit in the OS page cache).

Same image size and batch size for both; repetitions alternate between the two so that load
from other processes hits both alike; medians are compared. The last line is machine-readable:
``input_pipeline ratio=X target=3``.

    .venv/bin/python -m bench.input_pipeline --data-dir /tmp/tfdsdata
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import keras
import tensorflow as tf
import tensorflow_datasets as tfds

from tumorlib.contracts.classes import CLASS_NAMES, NUM_CLASSES
from tumorlib.data import pipeline as data
from tumorlib.images import preprocessing

TARGET_RATIO = 3.0


def extract_split(examples: tf.data.Dataset, out_dir: Path) -> int:
    """Write a split's original image bytes as ``out_dir/<class>/<n>.jpg``; returns the count."""
    for name in CLASS_NAMES:
        (out_dir / name).mkdir(parents=True, exist_ok=True)
    count = 0
    for ex in tfds.as_numpy(examples):
        label = CLASS_NAMES[int(ex["label"])]
        (out_dir / label / f"{count:05d}.jpg").write_bytes(ex["image"])
        count += 1
    return count


def keras_baseline(image_dir: Path, image_size: int, batch_size: int, seed: int):
    """``image_dataset_from_directory`` + Keras preprocessing layers, as a Keras tutorial does."""
    ds = keras.utils.image_dataset_from_directory(
        image_dir,
        labels="inferred",
        label_mode="categorical",
        class_names=list(CLASS_NAMES),
        image_size=(image_size, image_size),
        batch_size=batch_size,
        shuffle=True,
        seed=seed,
        pad_to_aspect_ratio=True,
        verbose=False,
    )
    augment = keras.Sequential(
        [
            keras.layers.RandomRotation(preprocessing.MAX_ROTATION_DEGREES / 360.0, seed=seed),
            keras.layers.RandomZoom(preprocessing.MAX_ZOOM, seed=seed),
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomBrightness(
                preprocessing.MAX_BRIGHTNESS, value_range=(0, 255), seed=seed
            ),
            keras.layers.RandomContrast(preprocessing.MAX_CONTRAST, seed=seed),
            keras.layers.Rescaling(1.0 / 127.5, offset=-1.0),
        ]
    )
    autotune = tf.data.AUTOTUNE
    ds = ds.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=autotune)
    return ds.prefetch(autotune)


def epoch_rate(ds: tf.data.Dataset, image_size: int) -> tuple[float, int]:
    """Iterate one epoch; returns (images per second, images seen)."""
    n = 0
    start = time.perf_counter()
    for images, labels in ds:
        assert images.shape[1:] == (image_size, image_size, 3)
        assert labels.shape[-1] == NUM_CLASSES
        n += int(images.shape[0])
    return n / (time.perf_counter() - start), n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="TFDS data dir with brain_mri built")
    parser.add_argument("--manual-dir", default=None, help="build from this archive if needed")
    parser.add_argument("--config", default="clean", choices=data.CONFIGS)
    parser.add_argument("--image-size", type=int, default=preprocessing.DEFAULT_IMAGE_SIZE)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per pipeline")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    return parser


def measure(
    examples: tf.data.Dataset, args: argparse.Namespace
) -> tuple[int, dict[str, list[float]]]:
    """Images in the split and the timed images/s of each pipeline, alternating repetitions."""
    with tempfile.TemporaryDirectory(prefix="bench_images_") as tmp:
        image_dir = Path(tmp)
        count = extract_split(examples, image_dir)
        print(
            f"train split: {count} images, extracted to {image_dir}; "
            f"image_size={args.image_size} batch_size={args.batch_size}",
            flush=True,
        )

        ours = data.make_pipeline(
            examples,
            training=True,
            image_size=args.image_size,
            batch_size=args.batch_size,
            seed=args.seed,
        )
        baseline = keras_baseline(image_dir, args.image_size, args.batch_size, args.seed)

        rate, n = epoch_rate(ours, args.image_size)
        print(f"  ours     warm-up (fills the cache): {rate:8.1f} images/s", flush=True)
        rate, m = epoch_rate(baseline, args.image_size)
        print(f"  baseline warm-up:                   {rate:8.1f} images/s", flush=True)
        if n != count or m != count:
            raise RuntimeError(f"pipelines saw {n} and {m} images, expected {count}")

        results: dict[str, list[float]] = {"ours": [], "baseline": []}
        for rep in range(1, args.repeats + 1):
            for name, ds in (("ours", ours), ("baseline", baseline)):
                rate, _ = epoch_rate(ds, args.image_size)
                results[name].append(rate)
                print(f"  rep {rep}/{args.repeats} {name:<8} {rate:8.1f} images/s", flush=True)
    return count, results


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    builder = data.get_builder(args.config, args.data_dir)
    if not builder.is_prepared():
        if args.manual_dir is None:
            parser.error(
                f"{data.DATASET_NAME}/{args.config} is not built in {builder.data_dir_root}; "
                "pass --data-dir of a built copy or --manual-dir of the archive"
            )
        data.build(args.config, args.manual_dir, args.data_dir)
    examples = data.load_split("train", args.config, args.data_dir)
    count, results = measure(examples, args)

    medians = {name: statistics.median(rates) for name, rates in results.items()}
    ratio = medians["ours"] / medians["baseline"]
    print(
        f"median images/s: ours {medians['ours']:.1f}, "
        f"keras image_dataset_from_directory + layers {medians['baseline']:.1f}"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {
                    "images": count,
                    "image_size": args.image_size,
                    "batch_size": args.batch_size,
                    "config": args.config,
                    "rates": results,
                    "medians": medians,
                    "ratio": ratio,
                    "target": TARGET_RATIO,
                },
                indent=2,
            )
        )
    print(f"input_pipeline ratio={ratio:.2f} target={TARGET_RATIO:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
