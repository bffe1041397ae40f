"""Retrieval agreement: the neighbours' vote, the agreement figures and the validation-only rule."""

from __future__ import annotations

import numpy as np

from tumorlib.evaluation.retrieval_agreement import (
    MAX_FLAGGED,
    agreement,
    choose_rule,
    neighbour_majority,
)


def unit(rows: list[list[float]]) -> np.ndarray:
    x = np.asarray(rows, np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_the_majority_of_the_k_nearest_rows_wins_and_a_tie_goes_to_the_nearer_case():
    # Rows along three directions; labels chosen so the nearest row and the majority differ.
    index = unit([[1, 0.00], [1, 0.05], [1, 0.10], [0, 1], [0.2, 1]])
    labels = np.array([2, 0, 0, 1, 1])
    query = unit([[1, 0.0]])
    assert neighbour_majority(index, labels, query, k=3)[0] == 0  # two of three say 0
    assert neighbour_majority(index, labels, query, k=1)[0] == 2  # the nearest alone
    # k=2: one vote each for 2 and 0; the nearer case (label 2) breaks the tie.
    assert neighbour_majority(index, labels, query, k=2)[0] == 2


def test_agreement_splits_the_accuracy_by_whether_the_neighbours_agree():
    predicted = np.array([0, 1, 2, 3, 0, 1])
    majority = np.array([0, 1, 2, 0, 1, 1])
    correct = np.array([True, True, True, False, False, True])
    result = agreement(predicted, majority, correct)
    assert result["n"] == 6 and result["disagree"] == 2
    assert result["agreement"] == round(4 / 6, 4)
    assert result["accuracy_when_agree"] == 1.0 and result["accuracy_when_disagree"] == 0.0
    assert result["errors"] == 2 and result["errors_flagged_by_disagreement"] == 2


def test_disagreement_becomes_a_refer_reason_only_when_it_marks_errors_and_flags_few():
    # 1,000 validation slices: 5 % disagree; wrong 40 % of the time vs 2 % when agreeing.
    marks_errors = {"n": 1000, "disagree": 50, "accuracy_when_agree": 0.98,
                    "accuracy_when_disagree": 0.60}  # fmt: skip
    assert choose_rule(marks_errors)["adopted"]
    # Same error ratio but a third of the slices flagged: a reason that refers too much.
    too_many = dict(marks_errors, disagree=int(1000 * (MAX_FLAGGED + 0.2)))
    assert not choose_rule(too_many)["adopted"]
    # Disagreeing answers no worse than agreeing ones: no reason at all.
    no_signal = dict(marks_errors, accuracy_when_disagree=0.97)
    rule = choose_rule(no_signal)
    assert not rule["adopted"] and rule["error_ratio_on_validation"] < 3
