"""Live performance per model version, from radiologists' feedback.

For each version: agreement (accuracy of the model's top class against the radiologist's class,
on every assessed in-distribution case — the same definition as the model card's clean-test
accuracy, which has no abstention), accuracy on accepted (not abstained) answers, per-class
recall, the confusion matrix, the refer rate (abstained / in-distribution predictions, from all
records), each with a percentile bootstrap interval and the count behind it, and a reliability
diagram. A version is flagged when the upper end of its agreement interval lies below the test
accuracy its export recorded: the shortfall is then larger than sampling noise explains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tumorlib.contracts.classes import CLASS_NAMES

BOOTSTRAP_SAMPLES = 2000
LEVEL = 0.95
RELIABILITY_BINS = 10
MIN_FLAG_N = 20  # below this the bootstrap interval itself is unreliable: no flag


def interval(values: np.ndarray, draws: np.ndarray, n: int) -> dict[str, Any]:
    """``{"value", "low", "high", "n"}``; ``None`` figures when nothing backs them."""
    alpha = (1 - LEVEL) / 2
    if n == 0 or not np.isfinite(values):
        return {"value": None, "low": None, "high": None, "n": int(n)}
    finite = draws[np.isfinite(draws)]
    low, high = np.quantile(finite, [alpha, 1 - alpha]) if finite.size else (np.nan, np.nan)
    return {"value": float(values), "low": float(low), "high": float(high), "n": int(n)}


def _recalls(true: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per-class recall along the last axis; NaN where a resample holds no case of a class."""
    k = len(CLASS_NAMES)
    out = np.full((*true.shape[:-1], k), np.nan)
    for c in range(k):
        support = (true == c).sum(axis=-1)
        hits = ((true == c) & (predicted == c)).sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[..., c] = np.where(support > 0, hits / np.maximum(support, 1), np.nan)
    return out


def classification_figures(true: np.ndarray, predicted: np.ndarray, seed: int = 0) -> dict:
    """Accuracy and per-class recall with bootstrap intervals; the confusion matrix."""
    n = len(true)
    k = len(CLASS_NAMES)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, (BOOTSTRAP_SAMPLES, n)) if n else np.zeros((0, 0), int)
    correct = (true == predicted).astype(float)
    accuracy = interval(
        correct.mean() if n else np.nan, correct[index].mean(axis=1) if n else np.array([]), n
    )
    point = _recalls(true[None], predicted[None])[0] if n else np.full(k, np.nan)
    draws = _recalls(true[index], predicted[index]) if n else np.full((0, k), np.nan)
    recall = {
        name: interval(point[c], draws[:, c], int((true == c).sum()))
        for c, name in enumerate(CLASS_NAMES)
    }
    matrix = np.zeros((k, k), dtype=int)
    np.add.at(matrix, (true, predicted), 1)
    return {"accuracy": accuracy, "recall": recall, "confusion_matrix": matrix.tolist()}


def proportion(flags: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """A rate with its bootstrap interval."""
    n = len(flags)
    if n == 0:
        return interval(np.nan, np.array([]), 0)
    rng = np.random.default_rng(seed)
    draws = flags[rng.integers(0, n, (BOOTSTRAP_SAMPLES, n))].mean(axis=1)
    return interval(flags.mean(), draws, n)


def reliability(confidence: np.ndarray, correct: np.ndarray) -> list[dict[str, Any]]:
    """Accuracy against mean confidence in equal-width bins, with each bin's count."""
    edges = np.linspace(0, 1, RELIABILITY_BINS + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, RELIABILITY_BINS - 1)
    bins = []
    for b in range(RELIABILITY_BINS):
        mask = which == b
        count = int(mask.sum())
        bins.append({
            "lower": float(edges[b]), "upper": float(edges[b + 1]), "count": count,
            "confidence": float(confidence[mask].mean()) if count else None,
            "accuracy": float(correct[mask].mean()) if count else None,
        })  # fmt: skip
    return bins


def version_performance(
    assessed: pd.DataFrame, predictions: pd.DataFrame, reference: dict[str, Any], seed: int = 0
) -> dict[str, Any]:
    """Every figure for one model version (rows of that version only)."""
    index = {name: i for i, name in enumerate(CLASS_NAMES)}
    refused = assessed["in_distribution"].eq(False)
    known = assessed["true_class"].isin(CLASS_NAMES) & assessed["class_name"].isin(CLASS_NAMES)
    scored = assessed[known & ~refused]
    true = scored["true_class"].map(index).to_numpy(int)
    predicted = scored["class_name"].map(index).to_numpy(int)
    figures = classification_figures(true, predicted, seed)
    accepted = ~scored["abstain"].eq(True).to_numpy()
    figures["accepted_accuracy"] = proportion((true == predicted)[accepted].astype(float), seed)
    in_dist = predictions[~predictions["in_distribution"].eq(False)]
    has_abstain = in_dist["abstain"].notna()
    figures["refer_rate"] = proportion(in_dist.loc[has_abstain, "abstain"].to_numpy(float), seed)
    figures["gate_refusal_rate"] = proportion(
        predictions["in_distribution"].dropna().eq(False).to_numpy(float), seed
    )
    figures["reliability"] = reliability(
        scored["confidence"].to_numpy(float), (true == predicted).astype(float)
    )
    figures["counts"] = {
        "predictions": int(len(predictions)),
        "with_feedback": int(len(assessed)),
        "scored": int(len(scored)),
        "not_assessable": int(assessed["verdict"].eq("not_assessable").sum()),
        "refused_by_gate": int(refused.sum()),
    }
    figures["reference"] = {
        "test_accuracy": reference.get("test_accuracy"),
        "test_accepted_accuracy": reference.get("test_accepted_accuracy"),
    }
    figures["flag"] = below_card(figures["accuracy"], reference.get("test_accuracy"))
    return figures


def below_card(accuracy: dict[str, Any], test_accuracy: float | None) -> str | None:
    """A sentence when agreement is below the model card beyond its interval, else None."""
    if test_accuracy is None or accuracy["high"] is None or accuracy["n"] < MIN_FLAG_N:
        return None
    if accuracy["high"] < float(test_accuracy):
        return (
            f"agreement {accuracy['value']:.1%} (95% CI {accuracy['low']:.1%}–"
            f"{accuracy['high']:.1%}, n={accuracy['n']}) is below the model card's clean-test "
            f"accuracy {float(test_accuracy):.1%}"
        )
    return None


def performance_by_version(store: Any, seed: int = 0) -> dict[tuple[str, int], dict[str, Any]]:
    """:func:`version_performance` for every model version that has predictions."""
    from serving.audit.queries import assessed_frame, model_references, predictions_frame

    predictions = predictions_frame(store)
    assessed = assessed_frame(store)
    references = model_references(store)
    out = {}
    for (name, version), group in predictions.groupby(["model_name", "model_version"]):
        key = (str(name), int(version))
        mine = assessed[(assessed["model_name"] == name) & (assessed["model_version"] == version)]
        out[key] = version_performance(mine, group, references.get(key, {}), seed)
    return out


def reliability_png(bins: list[dict[str, Any]], path: Path, title: str) -> Path:
    """The reliability diagram as a PNG file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(reliability_png_bytes(bins, title))
    return path


def reliability_png_bytes(bins: list[dict[str, Any]], title: str) -> bytes:
    """The reliability diagram, with each bin's count printed above its bar."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
    accuracy = [b["accuracy"] or 0.0 for b in bins]
    ax.bar(centres, accuracy, width=1 / len(bins), edgecolor="black", alpha=0.7, label="agreement")
    for x, b in zip(centres, bins):
        if b["count"]:
            ax.text(x, (b["accuracy"] or 0) + 0.02, str(b["count"]), ha="center", fontsize=7)
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1.08), xlabel="Model confidence", ylabel="Radiologist agreement")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()
