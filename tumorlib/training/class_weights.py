"""Class weights for the loss: the one rule that training, tuning and the benchmarks share.

Why: ``no_tumor`` is the smallest class; without weights the loss (and so the model) would
attend less to it. Every class present in the labels gets scikit-learn's "balanced" weight,
``n_examples / (n_present_classes * n_examples_of_class)``, so each class weighs the same in
the loss.

A class absent from the labels gets weight **1.0**: it contributes no term to the loss on these
labels, so its weight changes nothing here, and 1.0 (unweighted) is the neutral value should the
weights be applied to data that does contain it. Whether a missing class is acceptable at all is
the caller's decision: training refuses such a split (:func:`require_every_class`), a
hyperparameter search on a small sample may proceed.
"""

from __future__ import annotations

import numpy as np

from tumorlib.contracts.classes import CLASS_NAMES, NUM_CLASSES

MISSING_CLASS_WEIGHT = 1.0


def _indices(labels: np.ndarray) -> np.ndarray:
    """Integer class indices from integer ``[N]`` or one-hot ``[N, C]`` labels."""
    y = np.asarray(labels)
    if y.ndim == 2:
        y = y.argmax(axis=1)
    return y.astype(np.int64)


def missing_classes(labels: np.ndarray) -> list[str]:
    """Names of the classes with no example in ``labels`` (integer or one-hot)."""
    present = set(np.unique(_indices(labels)).tolist())
    return [name for i, name in enumerate(CLASS_NAMES) if i not in present]


def require_every_class(labels: np.ndarray, split: str) -> None:
    """Raise ``ValueError`` naming the classes ``split`` has no examples of."""
    missing = missing_classes(labels)
    if missing:
        raise ValueError(f"the {split} split has no examples of: {', '.join(missing)}")


def balanced_class_weights(labels: np.ndarray) -> dict[int, float]:
    """``{class_index: weight}`` for all classes, from integer or one-hot labels (rule above)."""
    from sklearn.utils.class_weight import compute_class_weight

    y = _indices(labels)
    present = np.unique(y)
    weights = compute_class_weight("balanced", classes=present, y=y)
    out = dict.fromkeys(range(NUM_CLASSES), MISSING_CLASS_WEIGHT)
    out.update({int(c): float(w) for c, w in zip(present, weights)})
    return out
