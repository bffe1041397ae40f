"""How the classifier itself holds up under acquisition changes, measured at test time.

``python -m tumorlib.robustness RUN`` applies each transform of :mod:`tumorlib.images.acquisition`
(one seeded draw per slice) to ``clean/validation`` and to the second-source slices and reports, per
transform, the four-class accuracy and the tumour / no-tumour accuracy on validation, and the
tumour / no-tumour accuracy on the second source — next to the unchanged baseline. Writes
``RUN/safety/robustness.json`` and ``.png``. Why both sets: a transform that hurts validation
shows what the model is sensitive to; the second source shows whether that sensitivity matters
on real other-hospital data (figures on it are reported separately, never trained on).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.contracts.cli import run_command
from tumorlib.images.acquisition import TRANSFORMS
from tumorlib.model.loading import load_run_model

ROBUSTNESS_JSON = "robustness.json"  # inside safety/
ROBUSTNESS_PLOT = "robustness.png"
SEED = 20261129
BATCH_SIZE = 32


def _transformed(images, transform: str | None):
    """``tf.data`` of normalised batches from uint8 resized images, with ``transform`` applied."""
    import tensorflow as tf

    from tumorlib.images.acquisition import apply
    from tumorlib.images.preprocessing import normalize

    ds = tf.data.Dataset.from_tensor_slices(images)
    if transform is not None:
        seeds = tf.data.Dataset.from_tensor_slices(
            np.stack([np.full(len(images), SEED), np.arange(len(images))], axis=1)
        )
        ds = tf.data.Dataset.zip(ds, seeds).map(
            lambda x, s: tf.round(apply(transform, x, s)), num_parallel_calls=tf.data.AUTOTUNE
        )
    return ds.map(normalize).batch(BATCH_SIZE)


def _resized(encoded: list[bytes], image_size: int) -> np.ndarray:
    import tensorflow as tf

    from tumorlib.images.preprocessing import decode_image, resize

    ds = tf.data.Dataset.from_tensor_slices(tf.constant(encoded)).map(
        lambda b: resize(decode_image(b), image_size), num_parallel_calls=tf.data.AUTOTUNE
    )
    return np.stack(list(ds.as_numpy_iterator()))


def _validation(config: str, data_dir_: str | None, image_size: int):
    from tumorlib.data import pipeline as data
    from tumorlib.evaluation.predictions import split_labels

    ds = data.load_pipeline(
        "validation", config, training=False, data_dir_=data_dir_, image_size=image_size,
        batch_size=BATCH_SIZE, cache=False,
    )  # fmt: skip
    images = np.concatenate([np.round((x.numpy() + 1.0) * 127.5) for x, _ in ds])
    return images.astype(np.uint8), split_labels("validation", config, data_dir_)


def measure(
    model,
    temperature: float,
    validation: tuple[np.ndarray, np.ndarray],
    second: tuple[np.ndarray, np.ndarray] | None,
    transforms: list[str],
) -> dict[str, Any]:
    """Per condition (``none`` and each transform): accuracies on each set."""
    from tqdm import tqdm

    from tumorlib.model.calibration import apply_temperature_np

    no_tumour = CLASS_NAMES.index("no_tumor")
    out: dict[str, Any] = {}
    for name in tqdm(["none", *transforms], desc="robustness", disable=None):
        transform = None if name == "none" else name
        images, labels = validation
        probs = apply_temperature_np(
            model.predict(_transformed(images, transform), verbose=0), temperature
        )
        pred = probs.argmax(axis=1)
        row = {
            "validation_accuracy": float(np.mean(pred == labels)),
            "validation_tumour_vs_no_tumour": float(
                np.mean((pred != no_tumour) == (labels != no_tumour))
            ),
        }
        if second is not None:
            images2, tumour = second
            probs2 = model.predict(_transformed(images2, transform), verbose=0)
            row["second_source_tumour_vs_no_tumour"] = float(
                np.mean((probs2.argmax(axis=1) != no_tumour) == tumour)
            )
        out[name] = row
    return out


def plot(path: Path, report: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tumorlib.evaluation.plots import save_figure

    names = list(report)
    metrics = [k for k in report[names[0]]]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(metrics)
    for i, metric in enumerate(metrics):
        ax.bar(
            np.arange(len(names)) + i * width,
            [report[n][metric] for n in names],
            width,
            label=metric.replace("_", " "),
        )
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30, ha="right")
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("Accuracy under acquisition changes (test-time)")
    return save_figure(fig, path)


def run_robustness(
    run_path: str | Path,
    *,
    config: str | None = None,
    data_dir_: str | None = None,
    transforms: list[str] | None = None,
) -> dict[str, Any]:
    from tumorlib.contracts.runs import load_run, write_json
    from tumorlib.data.second_source import default_archive, load_second_source

    run = load_run(run_path)
    config = config or run.dataset_config
    model = load_run_model(run)
    size = run.image_size
    second = None
    if default_archive() is not None:
        source = load_second_source()
        second = (_resized(source.images, size), source.tumour)
    conditions = measure(
        model,
        run.temperature,
        _validation(config, data_dir_, size),
        second,
        transforms or list(TRANSFORMS),
    )
    safety = run.safety_dir
    safety.mkdir(parents=True, exist_ok=True)
    figure = plot(safety / ROBUSTNESS_PLOT, conditions)
    report = {"conditions": conditions, "seed": SEED, "plot": str(figure.relative_to(run.path))}
    write_json(safety / ROBUSTNESS_JSON, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tumorlib.robustness",
        description="Accuracy under acquisition changes on validation and the second source.",
    )
    parser.add_argument("run")
    parser.add_argument(
        "--config", default=None, help="dataset config (default: the one the run trained on)"
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--transforms", nargs="+", choices=list(TRANSFORMS), default=None)
    args = parser.parse_args(argv)

    def body() -> None:
        report = run_robustness(
            args.run, config=args.config, data_dir_=args.data_dir, transforms=args.transforms
        )
        for name, row in report["conditions"].items():
            print(f"{name:>16}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
