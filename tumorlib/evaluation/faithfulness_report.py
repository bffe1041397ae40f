"""The faithfulness measurement of a run, written where the export and the model card read it.

Loads the run's model and a split, measures every heatmap method against the random order
(:mod:`tumorlib.evaluation.faithfulness`) and writes ``faithfulness.json`` and an example panel
(the slice, each method's map, and the deletion/insertion curves of that slice).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tumorlib.contracts.runs import FAITHFULNESS_PANEL, load_run
from tumorlib.evaluation.faithfulness import (
    DEFAULT_STEPS,
    GRADCAM,
    HEATMAP_METHODS,
    RANDOM,
    area,
    choose,
    heatmaps,
    measure,
    summarise,
    write_report,
)


def split_images(
    run_path: str | os.PathLike,
    *,
    data_dir: str | None,
    config: str,
    split: str,
    limit: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Normalised images and labels of ``config/split`` (a seeded subset when ``limit``)."""
    from tumorlib.data.pipeline import load_pipeline

    run = load_run(run_path)
    folder = data_dir or run.config.get("dataset", {}).get("data_dir")
    batches = load_pipeline(
        split, config, training=False, data_dir_=folder, image_size=run.image_size, cache=False
    )
    images, labels = [], []
    for x, y in batches:
        images.append(x.numpy())
        labels.append(np.argmax(y.numpy(), axis=1))
    all_images, all_labels = np.concatenate(images), np.concatenate(labels)
    chosen = list(range(len(all_images)))
    if 0 < limit < len(all_images):
        chosen = sorted(np.random.default_rng(seed).choice(len(all_images), limit, replace=False))
    return all_images[chosen], all_labels[chosen], [int(i) for i in chosen]


def run_faithfulness(
    run_path: str | os.PathLike,
    *,
    data_dir: str | None = None,
    config: str | None = None,
    split: str = "validation",
    limit: int = 0,
    steps: int = 16,
    seed: int = 0,
    out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Measure, choose, write ``faithfulness.json`` and the panel into ``out`` (or the run).

    The method is *chosen* here, so the default split is validation; ``config`` defaults to the
    run's own dataset config.
    """
    from tumorlib.model.loading import load_run_model

    run = load_run(run_path)
    config = config or run.dataset_config
    model = load_run_model(run)
    images, labels, rows = split_images(
        run_path, data_dir=data_dir, config=config, split=split, limit=limit, seed=seed
    )
    measured = measure(model, images, steps=steps, seed=seed)
    summary = summarise(measured, seed=seed)
    predicted = np.asarray(measured["class_index"])
    report = {
        "run": run.path.name,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": f"{config}/{split}",
        "images": len(images),
        "subset": None if len(rows) == len(labels) and not limit else {"seed": seed, "rows": rows},
        "accuracy_on_these": round(float(np.mean(predicted == labels)), 4),
        "steps": steps,
        "protocol": "Petsiuk et al. 2018: deletion to black (-1), insertion from a Gaussian blur "
        "(sigma = side/20); the model's softmax of its predicted class; AUC by trapezoid on [0, 1]",
        "methods": summary,
        "chosen": choose(summary),
    }
    folder = Path(out) if out else run.path
    folder.mkdir(parents=True, exist_ok=True)
    write_report(folder, report)
    example = _example(measured)
    draw_panel(
        folder / FAITHFULNESS_PANEL,
        images[example],
        {m: heatmaps(model, images[example : example + 1], m, predicted[example : example + 1])[0]
         for m in HEATMAP_METHODS},
        {m: measured["methods"][m] for m in measured["methods"]},
        example,
    )  # fmt: skip
    return report


def _example(measured: dict[str, Any]) -> int:
    """The image whose Grad-CAM score is the median one: a typical case, not a showcase."""
    curves = measured["methods"][GRADCAM]
    score = area(curves["insertion_curves"]) - area(curves["deletion_curves"])
    return int(np.argsort(score)[len(score) // 2])


def draw_panel(
    path: Path,
    image: np.ndarray,
    maps: dict[str, np.ndarray],
    curves: dict[str, dict[str, np.ndarray]],
    row: int,
) -> Path:
    """The slice, each method's overlay, and that slice's deletion and insertion curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tumorlib.model.gradcam import overlay

    pixels = np.clip((image + 1.0) * 127.5, 0, 255).astype(np.uint8)
    fig, axes = plt.subplots(1, 2 + len(maps) + 1, figsize=(3.2 * (3 + len(maps)), 3.2))
    axes[0].imshow(pixels)
    axes[0].set_title("slice")
    for ax, (name, heat) in zip(axes[1:], maps.items()):
        ax.imshow(overlay(pixels, heat, 0.45))
        ax.set_title(name)
    for ax in axes[: 1 + len(maps)]:
        ax.axis("off")
    x = np.linspace(0, 1, next(iter(curves.values()))["deletion_curves"].shape[1])
    for ax, kind in zip(axes[1 + len(maps) :], ("deletion", "insertion")):
        for name, c in curves.items():
            style = ":" if name == RANDOM else "-"
            curve = c[f"{kind}_curves"][row]
            ax.plot(x, curve, style, label=f"{name} {area(curve)[0]:.2f}")
        ax.set_title(f"{kind} (AUC)")
        ax.set_xlabel("fraction of pixels")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
    axes[1 + len(maps)].set_ylabel("p(predicted class)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    import argparse

    from tumorlib.contracts.cli import run_command

    parser = argparse.ArgumentParser(
        prog="python -m tumorlib.evaluation.faithfulness_report",
        description="Deletion/insertion AUCs of the heatmap methods vs a random order.",
    )
    parser.add_argument("run")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--config", default=None, help="default: the run's dataset config")
    parser.add_argument(
        "--split", default="validation", help="validation (default): the method is chosen here"
    )
    parser.add_argument("--limit", type=int, default=0, help="a seeded subset (0: the whole split)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for the report (default: the run)")
    args = parser.parse_args(argv)

    def body() -> None:
        report = run_faithfulness(
            args.run, data_dir=args.data_dir, config=args.config, split=args.split,
            limit=args.limit, steps=args.steps, seed=args.seed, out=args.out,
        )  # fmt: skip
        for name, row in report["methods"].items():
            print(
                f"{name:10s} deletion AUC {row['deletion_auc']['mean']:.4f} "
                f"insertion AUC {row['insertion_auc']['mean']:.4f}"
            )
        print(f"chosen: {report['chosen']} ({report['images']} images)")

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
