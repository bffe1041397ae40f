"""Benchmark: head-search trials per minute on cached features vs end-to-end on images.

Both sides run the same KerasTuner ``RandomSearch`` (same seed, so the same hyperparameters in
the same order, same epochs, same clean/train and clean/validation data, same head from
``tumorlib.model.classifier``); the only difference is the input:

* cached -- pooled MobileNetV2 features computed once
(:func:`tumorlib.training.features.cached_features`)
  and the head trained on them (what ``python -m tuning.search`` does);
* end to end -- :func:`tumorlib.model.classifier.build_model` (phase one: backbone frozen), trained
on the
  image pipeline, so the backbone runs over every image in every epoch of every trial.

The one-off cost of filling the feature cache is timed too (in a fresh cache folder) and shown
amortised over the cached trials. The image pipeline is decoded once before timing, so JPEG decode
is not charged to the end-to-end trials. Measured in one process, one run. The last line is
``tuning ratio=X target=20`` (X = steady-state trials/minute ratio).

Example: ``python bench/tuning.py --data-dir /tmp/tfdsdata``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python bench/tuning.py` from anywhere
    sys.path.insert(0, str(REPO))

TARGET = 20.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from tuning.cli_args import alpha_arg, image_size_arg, positive_int, weights_arg

    parser = argparse.ArgumentParser(
        prog="python bench/tuning.py",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="TFDS data dir")
    parser.add_argument("--image-size", type=image_size_arg, default=224)
    parser.add_argument("--alpha", type=alpha_arg, default=0.35)
    parser.add_argument("--weights", type=weights_arg, default="imagenet")
    parser.add_argument("--epochs", type=positive_int, default=5, help="epochs per trial")
    parser.add_argument("--cached-trials", type=positive_int, default=10)
    parser.add_argument("--image-trials", type=positive_int, default=1)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO / "reports" / "bench" / "tuning.json",
        help="where the measured numbers are written (JSON)",
    )
    args = parser.parse_args(argv)
    if args.data_dir is not None and not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder")
    return args


def image_hypermodel(args: argparse.Namespace, class_weight: dict[int, float]):
    """The same search space and compile, on ``build_model`` with the backbone frozen."""
    import keras_tuner

    from tumorlib.model.classifier import build_model
    from tuning.hypermodel import compile_for_search, declare_search_space

    class ImageHyperModel(keras_tuner.HyperModel):
        def build(self, hp):
            values = declare_search_space(hp)
            model = build_model(
                image_size=args.image_size,
                alpha=args.alpha,
                weights=args.weights,
                dropout=values["dropout"],
                head_units=values["head_units"],
            )
            # build_model starts in phase one: backbone frozen, run with training=False.
            return compile_for_search(model, values)

        def fit(self, hp, model, *fit_args, **kwargs):
            return model.fit(*fit_args, class_weight=class_weight, **kwargs)

    return ImageHyperModel(name="image_search")


def timed_search(tuner, *fit_args, epochs: int, **fit_kwargs) -> float:
    started = time.perf_counter()
    tuner.search(*fit_args, epochs=epochs, verbose=1, **fit_kwargs)
    return time.perf_counter() - started


def fill_feature_cache(args: argparse.Namespace, cache_dir: Path) -> tuple[dict, float]:
    """Pooled features and one-hot labels of train and validation, in a fresh cache; seconds."""
    from tumorlib.contracts.classes import NUM_CLASSES
    from tumorlib.training.features import cached_features

    started = time.perf_counter()
    feats = {}
    for split in ("train", "validation"):
        x, y = cached_features(
            split,
            "clean",
            image_size=args.image_size,
            alpha=args.alpha,
            weights=args.weights,
            data_dir_=args.data_dir,
            cache_dir=cache_dir,
        )
        y = np.asarray(y)
        feats[split] = (
            np.asarray(x, "float32"),
            y.astype("float32") if y.ndim == 2 else np.eye(NUM_CLASSES, dtype="float32")[y],
        )
    return feats, time.perf_counter() - started


def time_image_search(
    args: argparse.Namespace, class_weight: dict[int, float], work: Path
) -> tuple[float, float]:
    """End to end on images (backbone in every epoch of every trial): decode s, search s."""
    from tumorlib.data import pipeline as tdata
    from tuning.tuners import make_tuner

    def pipeline(split: str):
        return tdata.load_pipeline(
            split,
            "clean",
            training=False,  # same un-augmented images the features were computed from
            data_dir_=args.data_dir,
            image_size=args.image_size,
            batch_size=args.batch_size,
            cache=True,
        )

    train_ds, val_ds = pipeline("train"), pipeline("validation")
    started = time.perf_counter()
    for ds in (train_ds, val_ds):  # decode + resize once into the in-memory cache
        for _ in ds:
            pass
    decode_s = time.perf_counter() - started
    image_tuner = make_tuner(
        "random",
        image_hypermodel(args, class_weight),
        max_trials=args.image_trials,
        directory=work,
        project_name="images",
        seed=args.seed,
        overwrite=True,
    )
    return decode_s, timed_search(image_tuner, train_ds, validation_data=val_ds, epochs=args.epochs)


def summarise(
    args: argparse.Namespace, feats: dict, extraction_s: float, cached_s: float,
    decode_s: float, image_s: float,
) -> dict:  # fmt: skip
    """The measured numbers as written to the output JSON."""
    cached_tpm = args.cached_trials / (cached_s / 60)
    image_tpm = args.image_trials / (image_s / 60)
    amortised_tpm = args.cached_trials / ((cached_s + extraction_s) / 60)
    return {
        "epochs_per_trial": args.epochs,
        "image_size": args.image_size,
        "alpha": args.alpha,
        "weights": "none" if args.weights is None else str(args.weights),
        "train_examples": int(feats["train"][0].shape[0]),
        "validation_examples": int(feats["validation"][0].shape[0]),
        "feature_extraction_s": round(extraction_s, 2),
        "image_decode_warmup_s": round(decode_s, 2),
        "cached": {"trials": args.cached_trials, "seconds": round(cached_s, 2)},
        "images": {"trials": args.image_trials, "seconds": round(image_s, 2)},
        "cached_trials_per_minute": round(cached_tpm, 2),
        "image_trials_per_minute": round(image_tpm, 3),
        "cached_trials_per_minute_incl_extraction": round(amortised_tpm, 2),
        "ratio": round(cached_tpm / image_tpm, 1),
        "ratio_incl_extraction": round(amortised_tpm / image_tpm, 1),
        "target": TARGET,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import keras

    from tumorlib.contracts.runs import write_json
    from tumorlib.training.class_weights import balanced_class_weights
    from tuning.hypermodel import HeadHyperModel
    from tuning.tuners import make_tuner

    keras.utils.set_random_seed(args.seed)
    work = Path(tempfile.mkdtemp(prefix="bench_tuning_"))
    print(f"Working folder: {work}")

    # One-off: fill a fresh feature cache for train and validation.
    feats, extraction_s = fill_feature_cache(args, work / "features")
    (x_train, y_train), (x_val, y_val) = feats["train"], feats["validation"]
    class_weight = balanced_class_weights(y_train)
    print(f"Feature cache filled in {extraction_s:.1f} s: train {x_train.shape}, val {x_val.shape}")

    # Cached features: the way tuning.search runs.
    cached_tuner = make_tuner(
        "random",
        HeadHyperModel(x_train.shape[1], class_weight=class_weight, batch_size=args.batch_size),
        max_trials=args.cached_trials,
        directory=work,
        project_name="cached",
        seed=args.seed,
        overwrite=True,
    )
    cached_s = timed_search(
        cached_tuner, x_train, y_train, validation_data=(x_val, y_val), epochs=args.epochs
    )
    decode_s, image_s = time_image_search(args, class_weight, work)

    result = summarise(args, feats, extraction_s, cached_s, decode_s, image_s)
    cached_tpm, image_tpm = result["cached_trials_per_minute"], result["image_trials_per_minute"]
    write_json(args.output, result)
    print()
    print(f"{'':28s}{'trials':>8s}{'seconds':>10s}{'trials/min':>12s}")
    print(f"{'cached features':28s}{args.cached_trials:8d}{cached_s:10.1f}{cached_tpm:12.2f}")
    print(f"{'end to end on images':28s}{args.image_trials:8d}{image_s:10.1f}{image_tpm:12.3f}")
    print(
        f"One-off feature extraction {extraction_s:.1f} s; counting it against these "
        f"{args.cached_trials} cached trials: "
        f"{result['cached_trials_per_minute_incl_extraction']:.2f} trials/min, "
        f"ratio {result['ratio_incl_extraction']:.1f}x."
    )
    print(f"Written: {args.output}")
    print(f"tuning ratio={result['ratio']:.1f} target={TARGET:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
