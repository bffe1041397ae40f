"""Evaluate a run: ``python -m tumorlib.evaluate RUN [--config clean|original] [--split test]``.

Writes ``runs/<run>/eval/<config>-<split>/`` with ``metrics.json``, ``summary.md`` (also printed)
and PNGs: confusion matrix (counts and normalised), per-class precision/recall/F1, one-vs-rest ROC,
reliability diagram (before/after temperature scaling) and training curves. All metrics come from
scikit-learn; calibration from :mod:`tumorlib.model.calibration`.

On the ``original`` config the Testing split is compared with training data by the dataset's
``duplicate_group`` field (near-duplicate groups are computed over the whole archive, so ids agree
across configs): how many Testing images duplicate an ``original`` Training image — the leak behind
published numbers — and how many were seen, as themselves or a near-duplicate, by this model's own
training (``clean`` train + validation). Accuracy is reported on each part.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tumorlib.contracts.classes import CLASS_NAMES, NUM_CLASSES
from tumorlib.contracts.cli import run_command
from tumorlib.contracts.runs import (
    HISTORY_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    Run,
    load_run,
    write_json,
)
from tumorlib.evaluation.by_source import metrics_by_stratum, split_strata
from tumorlib.evaluation.by_source import summary_lines as by_source_lines
from tumorlib.model.loading import load_run_model

logger = logging.getLogger(__name__)

SPLITS = ("test", "validation", "train")
PLOT_FILES = {
    "confusion_counts": "confusion_matrix.png",
    "confusion_normalized": "confusion_matrix_normalized.png",
    "per_class": "per_class_metrics.png",
    "roc": "roc_curves.png",
    "reliability": "reliability_diagram.png",
    "training_curves": "training_curves.png",
    "by_source": "recall_by_source.png",
}


def split_arrays(
    split: str, config: str, data_dir: str | os.PathLike | None
) -> dict[str, np.ndarray]:
    """Labels, duplicate groups and file names of a split, in source order (no image decoding)."""
    from tumorlib.data.pipeline import load_split

    examples = load_split(split, config, data_dir).map(
        lambda e: {k: e[k] for k in ("label", "duplicate_group", "file_name")}
    )
    columns: dict[str, list] = {"label": [], "duplicate_group": [], "file_name": []}
    for batch in examples.batch(4096).as_numpy_iterator():
        for key in columns:
            columns[key].extend(batch[key].tolist())
    return {
        "label": np.asarray(columns["label"], dtype=np.int64),
        "duplicate_group": np.asarray(columns["duplicate_group"], dtype=np.int64),
        "file_name": np.asarray([f.decode() for f in columns["file_name"]]),
    }


def compute_metrics(
    probabilities: np.ndarray, labels: np.ndarray, temperature: float
) -> dict[str, Any]:
    """Every metric of the report, from probabilities and integer labels (scikit-learn)."""
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        confusion_matrix,
        f1_score,
        roc_auc_score,
    )

    from tumorlib.model.calibration import apply_temperature_np, expected_calibration_error

    labels = np.asarray(labels, dtype=np.int64)
    predictions = probabilities.argmax(axis=1)
    classes = list(range(NUM_CLASSES))
    report = classification_report(
        labels, predictions, labels=classes, target_names=list(CLASS_NAMES),
        output_dict=True, zero_division=0,
    )  # fmt: skip
    per_class = {
        name: {
            "precision": float(report[name]["precision"]),
            "recall": float(report[name]["recall"]),
            "f1": float(report[name]["f1-score"]),
            "support": int(report[name]["support"]),
        }
        for name in CLASS_NAMES
    }
    roc_auc: dict[str, float | None] = {}
    for i, name in enumerate(CLASS_NAMES):
        positives = labels == i
        roc_auc[name] = (
            float(roc_auc_score(positives, probabilities[:, i]))
            if 0 < positives.sum() < len(labels)
            else None  # undefined with one class only
        )
    defined = [v for v in roc_auc.values() if v is not None]
    scaled = apply_temperature_np(probabilities, temperature)
    return {
        "num_examples": int(len(labels)),
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, labels=classes, average="macro",
                                   zero_division=0)),
        "weighted_f1": float(f1_score(labels, predictions, labels=classes, average="weighted",
                                      zero_division=0)),
        "macro_avg": {k: float(v) for k, v in report["macro avg"].items()},
        "weighted_avg": {k: float(v) for k, v in report["weighted avg"].items()},
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(labels, predictions, labels=classes).tolist(),
        "roc_auc": roc_auc,
        "roc_auc_macro": float(np.mean(defined)) if defined else None,
        "temperature": float(temperature),
        "ece_before": expected_calibration_error(probabilities, labels),
        "ece_after": expected_calibration_error(scaled, labels),
    }  # fmt: skip


def _accuracy(mask: np.ndarray, correct: np.ndarray) -> float | None:
    return float(correct[mask].mean()) if mask.any() else None


def leakage_breakdown(
    test: dict[str, np.ndarray], predictions: np.ndarray, data_dir
) -> dict[str, Any]:
    """For ``original``/test: duplicates of original Training, and of the model's own training."""
    correct = predictions == test["label"]
    groups = test["duplicate_group"]
    original_train = set(split_arrays("train", "original", data_dir)["duplicate_group"].tolist())
    dup = np.isin(groups, list(original_train))
    out: dict[str, Any] = {
        "num_duplicates_of_training": int(dup.sum()),
        "fraction_duplicates_of_training": float(dup.mean()),
        "accuracy_duplicates_of_training": _accuracy(dup, correct),
        "num_non_duplicates": int((~dup).sum()),
        "accuracy_non_duplicates": _accuracy(~dup, correct),
    }
    try:
        seen_groups: set[int] = set()
        for split in ("train", "validation"):
            seen_groups |= set(split_arrays(split, "clean", data_dir)["duplicate_group"].tolist())
    except FileNotFoundError:
        return out  # the clean config is not built here: report the published leak only
    seen = np.isin(groups, list(seen_groups))
    out |= {
        "num_seen_in_model_training": int(seen.sum()),
        "accuracy_seen_in_model_training": _accuracy(seen, correct),
        "num_unseen_by_model": int((~seen).sum()),
        "accuracy_unseen_by_model": _accuracy(~seen, correct),
    }
    return out


def write_plots(
    out_dir: Path, run: Run, metrics: dict[str, Any], probabilities: np.ndarray,
    labels: np.ndarray, title: str,
) -> dict[str, str]:  # fmt: skip
    """All PNGs of the report; returns {kind: file name}."""
    from sklearn.metrics import roc_curve

    from tumorlib.evaluation import plots
    from tumorlib.model.calibration import apply_temperature_np, reliability_bins

    written = {}
    matrix = np.asarray(metrics["confusion_matrix"])
    plots.confusion_matrix_plot(
        matrix,
        CLASS_NAMES,
        out_dir / PLOT_FILES["confusion_counts"],
        normalize=False,
        title=f"Confusion matrix — {title}",
    )
    plots.confusion_matrix_plot(
        matrix,
        CLASS_NAMES,
        out_dir / PLOT_FILES["confusion_normalized"],
        normalize=True,
        title=f"Confusion matrix (recall) — {title}",
    )
    plots.per_class_bars(metrics["per_class"], out_dir / PLOT_FILES["per_class"], title=title)
    curves, aucs = {}, {}
    for i, name in enumerate(CLASS_NAMES):
        if metrics["roc_auc"][name] is not None:
            fpr, tpr, _ = roc_curve(labels == i, probabilities[:, i])
            curves[name], aucs[name] = (fpr, tpr), metrics["roc_auc"][name]
    plots.roc_curves(
        curves, aucs, out_dir / PLOT_FILES["roc"], title=f"ROC (one-vs-rest) — {title}"
    )
    scaled = apply_temperature_np(probabilities, metrics["temperature"])
    plots.reliability_diagram(
        reliability_bins(probabilities, labels),
        reliability_bins(scaled, labels),
        metrics["ece_before"],
        metrics["ece_after"],
        metrics["temperature"],
        out_dir / PLOT_FILES["reliability"],
        title=f"Reliability — {title}",
    )
    written.update({k: PLOT_FILES[k] for k in ("per_class", "roc", "reliability")})
    written.update(confusion_counts=PLOT_FILES["confusion_counts"])
    written.update(confusion_normalized=PLOT_FILES["confusion_normalized"])
    if "by_source" in metrics:
        plots.stratum_recalls(
            metrics["by_source"],
            out_dir / PLOT_FILES["by_source"],
            title=f"Recall by source — {title}",
        )
        written["by_source"] = PLOT_FILES["by_source"]
    history = run.path / HISTORY_FILE
    if history.exists() and history.stat().st_size:
        import pandas as pd

        plots.training_curves(
            pd.read_csv(history),
            out_dir / PLOT_FILES["training_curves"],
            title=f"Training curves — {run.path.name}",
        )
        written["training_curves"] = PLOT_FILES["training_curves"]
    return written  # fmt: skip


def summary_markdown(metrics: dict[str, Any], run: Run) -> str:
    """A short Markdown report of the headline numbers."""
    lines = [
        f"## Evaluation of `{run.path.name}` on `{metrics['config']}/{metrics['split']}`",
        "",
        f"- examples: {metrics['num_examples']}",
        f"- accuracy: **{metrics['accuracy']:.4f}**",
        f"- macro-F1: **{metrics['macro_f1']:.4f}**, weighted-F1: {metrics['weighted_f1']:.4f}",
        f"- ROC AUC (macro, one-vs-rest): {metrics['roc_auc_macro']:.4f}"
        if metrics["roc_auc_macro"] is not None
        else "- ROC AUC: undefined (single class)",
        f"- calibration: ECE {metrics['ece_before']:.4f} raw -> {metrics['ece_after']:.4f} "
        f"with temperature {metrics['temperature']:.3f}",
    ]
    if "num_duplicates_of_training" in metrics:
        n = metrics["num_examples"]

        def acc(value):
            return "n/a" if value is None else f"{value:.4f}"

        lines += [
            f"- Testing images duplicating an `original` Training image: "
            f"{metrics['num_duplicates_of_training']}/{n} "
            f"({metrics['fraction_duplicates_of_training']:.1%}); accuracy on the "
            f"{metrics['num_non_duplicates']} others: "
            f"**{acc(metrics['accuracy_non_duplicates'])}**",
        ]
        if "num_unseen_by_model" in metrics:
            lines.append(
                f"- Testing images seen (or a near-duplicate) in this model's training: "
                f"{metrics['num_seen_in_model_training']}/{n}; accuracy on the "
                f"{metrics['num_unseen_by_model']} unseen: "
                f"**{acc(metrics['accuracy_unseen_by_model'])}**"
            )
    if "by_source" in metrics:
        lines += ["", "By source and sequence:", "", *by_source_lines(metrics["by_source"])]
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for name, row in metrics["per_class"].items():
        lines.append(
            f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | "
            f"{row['support']} |"
        )
    lines += ["", "Confusion matrix (rows true, columns predicted, order "
              f"{', '.join(CLASS_NAMES)}): `{metrics['confusion_matrix']}`", ""]  # fmt: skip
    return "\n".join(lines)


def evaluate(
    run_path: str | os.PathLike, config: str = "clean", split: str = "test",
    data_dir: str | os.PathLike | None = None, batch_size: int = 64,
) -> dict[str, Any]:  # fmt: skip
    """Evaluate a run on one split and write its report folder; returns the metrics."""
    from tumorlib.data.pipeline import CONFIGS
    from tumorlib.evaluation.predictions import predict_split

    if config not in CONFIGS:
        raise ValueError(f"unknown config {config!r}; expected one of {', '.join(CONFIGS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    run = load_run(run_path)
    arrays = split_arrays(split, config, data_dir)  # clear errors: not built / no such split
    if len(arrays["label"]) == 0:
        raise ValueError(f"split {config}/{split} is empty")
    probabilities, labels = predict_split(
        load_run_model(run),
        split,
        config,
        data_dir,
        image_size=run.image_size,
        batch_size=batch_size,
    )
    metrics: dict[str, Any] = {"config": config, "split": split, "run": str(run.path)}
    metrics |= compute_metrics(probabilities, labels, run.temperature)
    if config == "original" and split == "test":
        metrics |= leakage_breakdown(arrays, probabilities.argmax(axis=1), data_dir)
    strata = split_strata(split, config, data_dir)["stratum"]
    if len(set(strata.tolist())) > 1:  # several sources: each one's figures apart
        metrics["by_source"] = metrics_by_stratum(probabilities, labels, strata)
    out_dir = run.eval_dir(config, split)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics["plots"] = write_plots(
        out_dir, run, metrics, probabilities, labels, f"{config}/{split}"
    )
    write_json(out_dir / METRICS_FILE, metrics)
    (out_dir / SUMMARY_FILE).write_text(summary_markdown(metrics, run))
    logger.info("Wrote %s", out_dir)
    return metrics


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tumorlib.evaluate",
        description="Evaluate a trained run on a split of brain_mri; writes eval/<config>-<split>/",
    )
    parser.add_argument("run", help="run folder, e.g. runs/default")
    parser.add_argument(
        "--config", default="clean", help="dataset config: clean, original or multi_sequence"
    )
    parser.add_argument("--split", default="test", help="test, validation or train")
    parser.add_argument("--data-dir", help="TFDS data dir holding brain_mri (default data/...)")
    parser.add_argument("--batch-size", type=int, default=64)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Evaluate from the command line; prints the summary (exit 1 if evaluation failed)."""
    args = build_parser().parse_args(argv)

    def body() -> None:
        metrics = evaluate(args.run, args.config, args.split, args.data_dir, args.batch_size)
        out_dir = load_run(metrics["run"]).eval_dir(args.config, args.split)
        print((out_dir / SUMMARY_FILE).read_text())
        print(f"Wrote {out_dir}")

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
