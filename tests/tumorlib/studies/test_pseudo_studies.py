"""Pseudo-studies from per-slice predictions: their make-up, the rule chosen on validation only,
and the report written for a run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.contracts.runs import RunNotFoundError
from tumorlib.studies.pseudo_studies import (
    REPORT_JSON,
    REPORT_PLOT,
    choose_rule,
    make_pseudo_studies,
    predict_studies,
)
from tumorlib.studies.pseudo_study_report import evaluate_run, summary_lines
from tumorlib.studies.study import SLICE_CLASSIFIED, SliceOutcome, SliceRef
from tumorlib.studies.verdict import StudyRule, aggregate

NORMAL = CLASS_NAMES.index("no_tumor")
COUNTS = (120, 130, 50, 125)  # about a clean split's make-up


def split(seed: int, strength: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, groups (runs of 6 same-class slices) and a noisy model's probabilities."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(COUNTS)])
    groups = np.arange(labels.size) // 6 + 1000 * labels
    logits = rng.normal(0, 1.0, (labels.size, 4))
    logits[np.arange(labels.size), labels] += strength
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return labels, groups, probs


def test_pseudo_studies_have_the_designed_make_up():
    labels, groups, _ = split(0)
    studies = make_pseudo_studies(labels, CLASS_NAMES, groups=groups, per_class=50, seed=1)
    assert len(studies) == 200
    assert [s.label for s in studies].count(NORMAL) == 50
    for s in studies:
        assert 20 <= len(s.slices) <= 40
        kinds = labels[list(s.slices)]
        if s.label == NORMAL:
            assert s.lesion == () and np.all(kinds == NORMAL)
            continue
        assert 3 <= len(s.lesion) <= 10
        assert s.lesion == tuple(range(s.lesion[0], s.lesion[-1] + 1))  # contiguous
        lesion = [s.slices[i] for i in s.lesion]
        assert np.all(labels[lesion] == s.label)
        assert np.sum(kinds == NORMAL) == len(s.slices) - len(s.lesion)
        # The anchor's near-duplicate group (up to 6 members here) supplies the first slices.
        size = int(np.sum(groups == groups[lesion[0]]))
        assert set(groups[lesion[: min(len(lesion), size)]]) == {groups[lesion[0]]}
        assert len(set(lesion)) == len(lesion)  # lesion slices are not repeated


def test_pseudo_studies_are_reproducible_from_the_seed():
    labels, groups, _ = split(0)
    first = make_pseudo_studies(labels, CLASS_NAMES, groups=groups, per_class=20, seed=7)
    again = make_pseudo_studies(labels, CLASS_NAMES, groups=groups, per_class=20, seed=7)
    other = make_pseudo_studies(labels, CLASS_NAMES, groups=groups, per_class=20, seed=8)
    assert first == again and first != other


def test_the_grid_search_scores_studies_exactly_as_aggregate_does():
    labels, groups, probs = split(1, strength=1.5)
    studies = make_pseudo_studies(labels, CLASS_NAMES, groups=groups, per_class=15, seed=2)
    rule = StudyRule(top_k=3, tumour_threshold=0.6, no_tumour_max=0.3, min_agreement=0.6)
    fast = predict_studies(studies, probs, CLASS_NAMES, rule)
    for study, verdict in zip(studies, fast):
        outcomes = [
            SliceOutcome(SliceRef(i), SLICE_CLASSIFIED, dict(zip(CLASS_NAMES, probs[row])))
            for i, row in enumerate(study.slices)
        ]
        slow = aggregate(outcomes, CLASS_NAMES, rule).verdict
        assert slow == ([*CLASS_NAMES, "uncertain"][verdict])


def test_the_chosen_rule_respects_the_refer_cap():
    labels, groups, probs = split(2, strength=1.5)
    studies = make_pseudo_studies(labels, CLASS_NAMES, groups=groups, per_class=40, seed=3)
    rule, metrics = choose_rule(studies, probs, CLASS_NAMES, max_refer_rate=0.05)
    assert metrics["refer_rate"] <= 0.05
    assert isinstance(rule, StudyRule)
    strict, strict_metrics = choose_rule(studies, probs, CLASS_NAMES, max_refer_rate=0.3)
    assert strict_metrics["stated_accuracy"] >= metrics["stated_accuracy"]


def write_run(path, seed: int, test_strength: float = 3.0) -> None:
    safety = path / "safety"
    safety.mkdir(parents=True)
    for name, s, strength in (("validation", seed, 2.0), ("test", seed + 1, test_strength)):
        labels, _, probs = split(s, strength)
        np.savez(safety / f"{name}_predictions.npz", probabilities=probs, labels=labels)


def test_evaluate_run_writes_the_report_and_never_chooses_on_test(tmp_path):
    write_run(tmp_path / "run", seed=4)
    report = evaluate_run(
        tmp_path / "run", tmp_path / "out", groups={}, per_class=40, bootstrap_rounds=30
    )
    saved = json.loads((tmp_path / "out" / REPORT_JSON).read_text())
    assert (tmp_path / "out" / REPORT_PLOT).stat().st_size > 10_000
    assert saved["rule"] == report["rule"] and saved["test"]["n_studies"] == 160
    assert saved["splits"]["test"]["lesion_slices_from_groups"] is False
    counts = np.asarray(saved["test"]["confusion_matrix"]["counts"])
    assert counts.shape == (4, 5) and counts.sum() == 160
    assert saved["validation"]["refer_rate"] <= 0.10
    assert "validation pseudo-studies" in saved["rule"]["chosen_on"]
    assert any(line.startswith("test:") for line in summary_lines(report))
    low, high = saved["test_intervals_95"]["accuracy"]
    assert 0.0 <= low <= high <= 1.0 and high - low > 0.0  # the pool's variability shows
    # A much worse model on test changes the test figures, not the rule.
    write_run(tmp_path / "worse", seed=4, test_strength=0.3)
    worse = evaluate_run(
        tmp_path / "worse", tmp_path / "out2", groups={}, per_class=40, bootstrap_rounds=0
    )
    assert worse["rule"] == report["rule"]
    assert worse["test"]["accuracy"] < report["test"]["accuracy"]


def test_a_run_without_saved_predictions_names_the_command(tmp_path):
    with pytest.raises(RunNotFoundError, match="python -m tumorlib.abstention"):
        evaluate_run(tmp_path, tmp_path / "out", groups={})
