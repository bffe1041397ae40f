"""Calibrated abstention: answer only when confident enough to be right 99 % of the time.

Why: a classifier that is 96 % accurate overall is wrong on one slice in 25. Most of those errors
come with lower confidence, so refusing to answer below a confidence threshold ("uncertain —
refer to a radiologist") buys much higher precision on the answers that are given, at the cost of
coverage. The threshold is chosen on the *validation* split, on temperature-scaled probabilities
(:mod:`tumorlib.model.calibration`), so the confidence is honest; the test split then reports what
the threshold really achieves (coverage, accuracy of accepted predictions) without having seen it.

``python -m tumorlib.abstention RUN`` computes all of it for a run and writes
``RUN/abstention.json``, ``RUN/safety/risk_coverage.png`` and the test split's probabilities
(``RUN/safety/test_predictions.npz``, used by the model card's bootstrap intervals).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tumorlib.contracts.classes import CLASS_NAMES

DEFAULT_TARGET_PRECISION = 0.99
RULES = ("per_class", "single")
DEFAULT_RULE = "per_class"
PREDICTION_BATCH_SIZE = 32


@dataclass(frozen=True)
class AbstentionThreshold:
    """The chosen threshold and what it achieved on the split it was chosen on."""

    threshold: float
    target_precision: float
    coverage: float
    precision: float
    accepted: int
    total: int
    reachable: bool  # False: no threshold reaches the target; every prediction is refused


@dataclass(frozen=True)
class AbstentionResult:
    """Coverage and accuracy of accepted predictions at a fixed threshold on one split."""

    threshold: float | tuple[float, ...]  # one, or one per predicted class
    coverage: float
    accepted_accuracy: float  # NaN when nothing is accepted
    overall_accuracy: float
    accepted: int
    total: int
    errors_accepted: int
    per_class_coverage: dict[str, float]


def confidence(probabilities: np.ndarray) -> np.ndarray:
    """Top-class probability: the thresholded score ("softmax response", Geifman & El-Yaniv)."""
    return np.asarray(probabilities, dtype=np.float64).max(axis=1)


def risk_coverage_curve(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Accepted accuracy and coverage for every possible threshold, most confident first.

    Entry ``k`` is the result of accepting the ``k + 1`` most confident predictions, i.e. the
    threshold ``thresholds[k]`` (ties are accepted together, so only the last of a tied run is a
    real operating point; ``valid`` marks those).
    """
    labels = np.asarray(labels, dtype=int)
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 2 or len(probabilities) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"need [N, C] probabilities and N labels with N > 0; got {probabilities.shape} "
            f"and {labels.shape}"
        )
    conf = confidence(probabilities)
    order = np.argsort(-conf, kind="stable")
    conf_sorted = conf[order]
    correct = (probabilities.argmax(axis=1) == labels)[order]
    accepted = np.arange(1, len(labels) + 1)
    accuracy = np.cumsum(correct) / accepted
    valid = np.append(conf_sorted[1:] < conf_sorted[:-1], True)
    return {
        "thresholds": conf_sorted,
        "coverage": accepted / len(labels),
        "accuracy": accuracy,
        "risk": 1.0 - accuracy,
        "valid": valid,
    }


def choose_threshold(
    probabilities: np.ndarray,
    labels: np.ndarray,
    target_precision: float = DEFAULT_TARGET_PRECISION,
) -> AbstentionThreshold:
    """The lowest confidence threshold whose accepted predictions reach ``target_precision``.

    Lowest threshold = highest coverage among the operating points meeting the target. If none
    does, the threshold is set above 1 so that everything is refused (``reachable=False``):
    failing safe rather than quietly answering at a lower precision.
    """
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    curve = risk_coverage_curve(probabilities, labels)
    ok = np.flatnonzero(curve["valid"] & (curve["accuracy"] >= target_precision))
    total = len(curve["coverage"])
    if len(ok) == 0:
        return AbstentionThreshold(1.0 + 1e-6, target_precision, 0.0, float("nan"), 0, total, False)
    k = int(ok.max())
    return AbstentionThreshold(
        threshold=float(curve["thresholds"][k]),
        target_precision=target_precision,
        coverage=float(curve["coverage"][k]),
        precision=float(curve["accuracy"][k]),
        accepted=k + 1,
        total=total,
        reachable=True,
    )


@dataclass(frozen=True)
class ClassThresholds:
    """One confidence threshold per *predicted* class, chosen together on validation.

    Why: one threshold for every class is set by the hardest pair (glioma vs meningioma) and
    refers many slices whose class is easy — on another hospital's data, mostly confident
    no-tumour slices. Letting each predicted class have its own threshold, under the same
    constraint (accepted answers ≥ the target precision on validation, over all classes
    together), answers those without lowering the bar where the model is unsure.
    """

    thresholds: tuple[float, ...]  # by class index; > 1: that class is never answered
    target_precision: float
    coverage: float
    precision: float
    accepted: int
    total: int
    reachable: bool


def _class_prefixes(conf: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accept-the-top-k operating points of one predicted class: ``(k, errors)`` for every k that
    is a real threshold (ties accepted together), k = 0 included."""
    if len(conf) == 0:
        return np.zeros(1, int), np.zeros(1, int)
    order = np.argsort(-conf, kind="stable")
    conf_sorted, wrong = conf[order], ~correct[order]
    valid = np.append(conf_sorted[1:] < conf_sorted[:-1], True)
    ks = np.concatenate([[0], np.flatnonzero(valid) + 1])
    errors = np.concatenate([[0], np.cumsum(wrong)])[ks]
    return ks, errors


def choose_class_thresholds(
    probabilities: np.ndarray,
    labels: np.ndarray,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    num_classes: int | None = None,
) -> ClassThresholds:
    """Per-predicted-class thresholds that answer the most validation slices while the accepted
    ones, all classes together, reach ``target_precision``.

    Maximise ``sum k_c`` subject to ``sum errors_c(k_c) <= (1 - target) * sum k_c`` over each
    class's accept-the-top-``k_c`` operating points, by Lagrangian relaxation: for each multiplier
    ``mu`` every class independently picks the ``k_c`` maximising ``k_c - mu * (errors_c(k_c) -
    (1 - target) * k_c)``; of the feasible solutions over a fine grid of ``mu`` the one with the
    highest coverage wins. The single-threshold rule is one of the candidates, so this never
    answers fewer validation slices than it.
    """
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target_precision must be in (0, 1], got {target_precision}")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    n_classes = num_classes or probabilities.shape[1]
    conf, pred = confidence(probabilities), probabilities.argmax(axis=1)
    correct = pred == labels
    alpha = 1.0 - target_precision
    points = [_class_prefixes(conf[pred == c], correct[pred == c]) for c in range(n_classes)]
    best: tuple[int, int, list[int]] | None = None  # (accepted, errors, index per class)
    for mu in np.concatenate([[0.0], np.logspace(-2, 6, 801)]):
        picks = [int(np.argmax(ks - mu * (errs - alpha * ks))) for ks, errs in points]
        k = sum(int(points[c][0][i]) for c, i in enumerate(picks))
        e = sum(int(points[c][1][i]) for c, i in enumerate(picks))
        if k and e <= alpha * k + 1e-9 and (best is None or k > best[0]):
            best = (k, e, picks)
    single = choose_threshold(probabilities, labels, target_precision)
    if single.reachable and (best is None or single.accepted > best[0]):
        accepted = conf >= single.threshold
        return _class_result([single.threshold] * n_classes, accepted, correct, target_precision)
    if best is None:
        return ClassThresholds(
            (1.0 + 1e-6,) * n_classes, target_precision, 0.0, float("nan"), 0, len(labels), False
        )
    thresholds = []
    for c, i in enumerate(best[2]):
        k = int(points[c][0][i])
        thresholds.append(float(np.sort(conf[pred == c])[::-1][k - 1]) if k else 1.0 + 1e-6)
    accepted = conf >= np.asarray(thresholds)[pred]
    return _class_result(thresholds, accepted, correct, target_precision)


def _class_result(
    thresholds: list[float], accepted: np.ndarray, correct: np.ndarray, target: float
) -> ClassThresholds:
    n = int(accepted.sum())
    return ClassThresholds(
        thresholds=tuple(float(t) for t in thresholds),
        target_precision=target,
        coverage=float(accepted.mean()),
        precision=float(correct[accepted].mean()) if n else float("nan"),
        accepted=n,
        total=len(accepted),
        reachable=n > 0,
    )


def abstain(probabilities: np.ndarray, threshold: float | Sequence[float]) -> np.ndarray:
    """Boolean ``[N]``: True where the answer must be "uncertain — refer to a radiologist".

    ``threshold`` is one number, or one per class (applied to the predicted class).
    """
    probabilities = np.asarray(probabilities)
    limits = np.asarray(threshold, dtype=np.float64)
    if limits.ndim:
        limits = limits[probabilities.argmax(axis=1)]
    return confidence(probabilities) < limits


def evaluate_threshold(
    probabilities: np.ndarray,
    labels: np.ndarray,
    threshold: float | Sequence[float],
    class_names: tuple[str, ...] | None = None,
) -> AbstentionResult:
    """What ``threshold`` achieves on a (held-out) split."""
    class_names = class_names or CLASS_NAMES
    labels = np.asarray(labels, dtype=int)
    probabilities = np.asarray(probabilities)
    accepted = ~abstain(probabilities, threshold)
    correct = probabilities.argmax(axis=1) == labels
    n_acc = int(accepted.sum())
    return AbstentionResult(
        threshold=(
            tuple(float(t) for t in threshold)
            if isinstance(threshold, Sequence)
            else float(threshold)
        ),
        coverage=float(accepted.mean()),
        accepted_accuracy=float(correct[accepted].mean()) if n_acc else float("nan"),
        overall_accuracy=float(correct.mean()),
        accepted=n_acc,
        total=len(labels),
        errors_accepted=int((accepted & ~correct).sum()),
        per_class_coverage={
            name: float(accepted[labels == i].mean()) if (labels == i).any() else float("nan")
            for i, name in enumerate(class_names)
        },
    )
