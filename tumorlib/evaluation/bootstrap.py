"""Percentile bootstrap intervals of a classifier's test metrics.

Why: a 435-image test split cannot pin a recall down to a percent; the model card reports every
metric with the interval that resampling the test images gives it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tumorlib.contracts.classes import CLASS_NAMES

BOOTSTRAP_SAMPLES = 1000
CONFIDENCE_LEVEL = 0.95


def _metrics_from_cells(cells: np.ndarray, k: int) -> np.ndarray:
    """Metrics from confusion-matrix cell indices ``label * k + predicted``, rows = resamples.

    Columns: accuracy, macro-F1, then per-class precision, recall and F1 (``k`` each).
    Counting cells with ``bincount`` makes 1,000 resamples take milliseconds; the formulas
    are scikit-learn's (``zero_division=0``), which the tests check.
    """
    cm = np.stack([np.bincount(row, minlength=k * k) for row in cells]).reshape(-1, k, k)
    tp = np.diagonal(cm, axis1=1, axis2=2).astype(float)
    pred_n, true_n = cm.sum(axis=1), cm.sum(axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(pred_n > 0, tp / pred_n, 0.0)
        rec = np.where(true_n > 0, tp / true_n, 0.0)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
    accuracy = tp.sum(axis=1) / cm.sum(axis=(1, 2))
    return np.column_stack([accuracy, f1.mean(axis=1), prec, rec, f1])


def bootstrap_metrics(
    labels: np.ndarray,
    predicted: np.ndarray,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    level: float = CONFIDENCE_LEVEL,
) -> dict[str, Any]:
    """Point estimates and percentile bootstrap intervals (resampling test images).

    Returns ``{"accuracy": {...}, "macro_f1": {...}, "per_class": {name: {"precision": {...},
    "recall": {...}, "f1": {...}, "support": n}}}`` where each ``{...}`` is ``{"value", "low",
    "high"}``. Macro-F1 averages all four classes (scikit-learn's ``labels=`` all classes).
    """
    labels = np.asarray(labels, dtype=int)
    predicted = np.asarray(predicted, dtype=int)
    if len(labels) == 0 or len(labels) != len(predicted):
        raise ValueError(
            f"need equal, non-zero numbers of labels and predictions "
            f"({len(labels)} vs {len(predicted)})"
        )
    k = len(CLASS_NAMES)
    cells = labels * k + predicted
    point = _metrics_from_cells(cells[None], k)[0]
    rng = np.random.default_rng(seed)
    n = len(labels)
    draws = _metrics_from_cells(cells[rng.integers(0, n, (samples, n))], k)
    alpha = (1 - level) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha], axis=0)

    def triple(i: int) -> dict[str, float]:
        return {"value": float(point[i]), "low": float(low[i]), "high": float(high[i])}

    support = np.bincount(labels, minlength=k)
    return {
        "accuracy": triple(0),
        "macro_f1": triple(1),
        "per_class": {
            name: {
                "precision": triple(2 + c),
                "recall": triple(2 + k + c),
                "f1": triple(2 + 2 * k + c),
                "support": int(support[c]),
            }
            for c, name in enumerate(CLASS_NAMES)
        },
        "samples": samples,
        "level": level,
    }
