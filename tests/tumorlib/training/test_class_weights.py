"""The one class-weight rule: balanced over the classes present, 1.0 for a missing class."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from tumorlib.contracts.classes import CLASS_NAMES, NUM_CLASSES
from tumorlib.training.class_weights import (
    MISSING_CLASS_WEIGHT,
    balanced_class_weights,
    missing_classes,
    require_every_class,
)


def test_every_class_present_is_sklearns_balanced_rule():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 2 + [3] * 3)
    expected = compute_class_weight("balanced", classes=np.arange(NUM_CLASSES), y=labels)
    weights = balanced_class_weights(labels)
    assert list(weights) == list(range(NUM_CLASSES))
    np.testing.assert_allclose([weights[i] for i in range(NUM_CLASSES)], expected)
    # Each class then weighs the same in the loss.
    totals = [weights[i] * (labels == i).sum() for i in range(NUM_CLASSES)]
    np.testing.assert_allclose(totals, totals[0])


def test_one_hot_labels_give_the_same_weights():
    labels = np.array([0, 0, 1, 2, 3, 3, 3])
    one_hot = np.eye(NUM_CLASSES, dtype="float32")[labels]
    assert balanced_class_weights(one_hot) == balanced_class_weights(labels)


def test_a_missing_class_gets_weight_one_and_the_rest_balance_among_themselves():
    labels = np.array([0, 0, 0, 1, 3])  # no class 2
    weights = balanced_class_weights(labels)
    assert weights[2] == MISSING_CLASS_WEIGHT == 1.0
    present = np.array([0, 1, 3])
    expected = compute_class_weight("balanced", classes=present, y=labels)
    np.testing.assert_allclose([weights[int(c)] for c in present], expected)
    assert missing_classes(labels) == [CLASS_NAMES[2]]
    with pytest.raises(ValueError, match=f"the train split has no examples of: {CLASS_NAMES[2]}"):
        require_every_class(labels, "train")
    require_every_class(np.arange(NUM_CLASSES), "train")  # all present: no error
