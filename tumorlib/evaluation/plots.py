"""Matplotlib figures for evaluation reports (Agg backend: files only, no display needed).

Each function takes plain arrays/dicts and a path, writes one PNG and returns the path, so the
evaluation command (and anyone else) can draw the same figures from saved numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from tumorlib.contracts.classes import DISPLAY_NAMES  # noqa: E402


def _labels(class_names: Sequence[str]) -> list[str]:
    return [DISPLAY_NAMES.get(name, name) for name in class_names]


def save_figure(fig, path: Path, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG (creating its folder) and free it; every plot ends here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def confusion_matrix_plot(
    matrix: np.ndarray, class_names: Sequence[str], path: Path, *, normalize: bool, title: str
) -> Path:
    """Counts, or rows normalised to recall (each true class sums to 1)."""
    matrix = np.asarray(matrix, dtype=float)
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    fig, ax = plt.subplots(figsize=(5.5, 4.8))
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046)
    labels = _labels(class_names)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            text = f"{matrix[i, j]:.2f}" if normalize else f"{int(matrix[i, j])}"
            color = "white" if matrix[i, j] > threshold else "black"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=9)
    return save_figure(fig, path)


def per_class_bars(per_class: dict[str, dict[str, float]], path: Path, *, title: str) -> Path:
    """Precision, recall and F1 per class, support in the tick labels."""
    names = list(per_class)
    x = np.arange(len(names))
    width = 0.27
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, metric in enumerate(("precision", "recall", "f1")):
        values = [per_class[n][metric] for n in names]
        bars = ax.bar(x + (k - 1) * width, values, width, label=metric)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ticks = [f"{DISPLAY_NAMES.get(n, n)}\n(n={per_class[n]['support']})" for n in names]
    ax.set_xticks(x, ticks)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(loc="lower right")
    return save_figure(fig, path)


def roc_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], aucs: dict[str, float], path: Path,
    *, title: str,
) -> Path:  # fmt: skip
    """One-vs-rest ROC per class (``curves[name] = (fpr, tpr)``) with its AUC."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (fpr, tpr) in curves.items():
        ax.plot(fpr, tpr, label=f"{DISPLAY_NAMES.get(name, name)} (AUC {aucs[name]:.3f})")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def reliability_diagram(
    bins_before: dict[str, list[float]], bins_after: dict[str, list[float]],
    ece_before: float, ece_after: float, temperature: float, path: Path, *, title: str,
) -> Path:  # fmt: skip
    """Accuracy against confidence per bin, before and after temperature scaling."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharey=True)
    panels = (
        (bins_before, f"raw (ECE {ece_before:.3f})"),
        (bins_after, f"T = {temperature:.2f} (ECE {ece_after:.3f})"),
    )
    for ax, (bins, label) in zip(axes, panels):
        lower, upper = np.asarray(bins["lower"]), np.asarray(bins["upper"])
        acc = np.nan_to_num(np.asarray(bins["accuracy"], dtype=float))
        conf = np.asarray(bins["confidence"], dtype=float)
        counts = np.asarray(bins["count"])
        centres = (lower + upper) / 2
        ax.bar(centres, acc, width=upper - lower, edgecolor="black", alpha=0.7, label="accuracy")
        has = counts > 0
        ax.plot(conf[has], acc[has], "o", color="darkred", markersize=3, label="mean confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("Confidence")
        ax.set_title(label)
    axes[0].set_ylabel("Accuracy")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def training_curves(history, path: Path, *, title: str = "Training curves") -> Path:
    """Loss and accuracy per epoch from ``history.csv`` (a pandas DataFrame), phases shaded."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = history["epoch"].to_numpy() + 1
    for ax, metric in zip(axes, ("loss", "accuracy")):
        if metric in history:
            ax.plot(epochs, history[metric], label=f"train {metric}")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], label=f"validation {metric}")
        if "phase" in history:
            fine = history["phase"].to_numpy() == "fine_tune"
            if fine.any():
                ax.axvspan(epochs[fine].min() - 0.5, epochs[fine].max() + 0.5,
                           color="grey", alpha=0.12, label="fine-tuning")  # fmt: skip
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def stratum_recalls(by_stratum: dict[str, dict], path: Path, *, title: str) -> Path:
    """Per-class recall of each stratum (source or source/sequence) side by side."""
    names = list(by_stratum)
    classes = sorted({c for m in by_stratum.values() for c in m["recall"]})
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(names)), 4))
    width = 0.8 / max(len(classes), 1)
    for k, cls in enumerate(classes):
        values = [by_stratum[n]["recall"].get(cls, np.nan) for n in names]
        xs = np.arange(len(names)) + (k - (len(classes) - 1) / 2) * width
        ax.bar(xs, values, width, label=_labels([cls])[0])
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels([f"{n}\n(n={by_stratum[n]['n']})" for n in names], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title)
    return save_figure(fig, path)
