"""The study aggregation rule: a tumour on a few slices, none, disagreement, nothing answered."""

from __future__ import annotations

import pytest

from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.studies.study import (
    SLICE_CLASSIFIED,
    SLICE_FAILED,
    SLICE_NOT_BRAIN_MRI,
    SLICE_UNCERTAIN,
    STUDY_TUMOUR_TYPE_UNCERTAIN,
    STUDY_UNCERTAIN,
    SliceOutcome,
    SliceRef,
    verdict_words,
)
from tumorlib.studies.verdict import DEFAULT_RULE, StudyRule, aggregate

NORMAL = {"glioma": 0.02, "meningioma": 0.02, "no_tumor": 0.94, "pituitary": 0.02}


def probs(**values: float) -> dict[str, float]:
    out = {name: 0.0 for name in CLASS_NAMES}
    out.update(values)
    return out


def outcome(i: int, p: dict[str, float] | None, kind: str = SLICE_CLASSIFIED) -> SliceOutcome:
    return SliceOutcome(SliceRef(i), kind, probabilities=p)


def study(lesion: dict[int, dict[str, float]], n: int = 30) -> list[SliceOutcome]:
    return [outcome(i, lesion.get(i, NORMAL)) for i in range(n)]


def test_a_tumour_on_a_few_slices_names_the_class_with_those_slices_as_key():
    lesion = {
        12: probs(glioma=0.70, meningioma=0.10, no_tumor=0.15, pituitary=0.05),
        13: probs(glioma=0.90, no_tumor=0.10),
        14: probs(glioma=0.80, meningioma=0.05, no_tumor=0.15),
    }
    verdict = aggregate(study(lesion), CLASS_NAMES)
    assert verdict.verdict == "glioma"
    assert verdict.key_slices == (13, 12, 14)  # strongest tumour evidence first (12 = 14 tie)
    assert verdict.n_slices == 30 and verdict.n_classified == 30
    assert verdict.probabilities["glioma"] > verdict.probabilities["meningioma"]
    assert "3 of 3 name glioma" in verdict.reason
    assert '"top_k": 3' in verdict.rule


def test_no_tumour_when_even_the_most_tumour_like_slices_are_normal():
    verdict = aggregate(study({}), CLASS_NAMES)
    assert verdict.verdict == "no_tumor"
    assert verdict.probabilities["no_tumor"] == pytest.approx(0.94)
    assert "no tumour" in verdict.reason


def test_one_confident_slice_alone_does_not_make_a_tumour():
    verdict = aggregate(study({7: probs(pituitary=0.99, no_tumor=0.01)}), CLASS_NAMES)
    assert verdict.verdict == STUDY_UNCERTAIN  # mean over the top 3: (0.99 + .06 + .06) / 3
    assert "refer to a radiologist" in verdict.reason


def test_tumour_slices_that_disagree_on_the_type_are_uncertain():
    lesion = {
        1: probs(glioma=0.9, no_tumor=0.1),
        2: probs(meningioma=0.9, no_tumor=0.1),
        3: probs(pituitary=0.9, no_tumor=0.1),
    }
    verdict = aggregate(study(lesion), CLASS_NAMES)
    assert verdict.verdict == STUDY_UNCERTAIN
    assert "disagree on the tumour type" in verdict.reason


def test_refused_and_failed_slices_are_counted_but_never_evidence():
    outcomes = study({}, n=10) + [
        outcome(10, probs(glioma=1.0), SLICE_NOT_BRAIN_MRI),
        outcome(11, None, SLICE_FAILED),
        outcome(12, probs(glioma=0.5, no_tumor=0.5), SLICE_UNCERTAIN),
    ]
    verdict = aggregate(outcomes, CLASS_NAMES)
    assert (verdict.n_classified, verdict.n_uncertain) == (10, 1)
    assert (verdict.n_not_brain_mri, verdict.n_failed, verdict.n_slices) == (1, 1, 13)
    assert 10 not in verdict.key_slices  # the gate's refusal is not tumour evidence
    assert verdict.key_slices[0] == 12  # an abstained slice still has the model's probabilities


def test_no_answered_slice_is_uncertain_with_a_reason():
    outcomes = [outcome(0, None, SLICE_FAILED), outcome(1, probs(glioma=1.0), SLICE_NOT_BRAIN_MRI)]
    verdict = aggregate(outcomes, CLASS_NAMES)
    assert verdict.verdict == STUDY_UNCERTAIN and verdict.key_slices == ()
    assert "No slice was accepted" in verdict.reason
    assert aggregate([], CLASS_NAMES).verdict == STUDY_UNCERTAIN


def test_a_short_series_uses_the_slices_it_has():
    verdict = aggregate([outcome(0, probs(meningioma=0.95, no_tumor=0.05))], CLASS_NAMES)
    assert verdict.verdict == "meningioma"
    assert "only 1 slice(s) answered" in verdict.reason


def test_rule_round_trips_through_json_and_validates():
    rule = StudyRule(top_k=5, tumour_threshold=0.8, no_tumour_max=0.2, min_agreement=0.8)
    assert StudyRule.from_json(rule.to_json()) == rule
    assert StudyRule.from_json({**vars(rule), "unknown_later_field": 1}) == rule
    assert StudyRule.from_json(DEFAULT_RULE.to_json()) == DEFAULT_RULE
    with pytest.raises(ValueError, match="no_tumour_max < tumour_threshold"):
        StudyRule(tumour_threshold=0.3, no_tumour_max=0.5)
    with pytest.raises(ValueError, match="top_k"):
        StudyRule(top_k=0)


def test_a_stricter_rule_refers_what_the_default_answers():
    lesion = {i: probs(glioma=0.75, no_tumor=0.25) for i in (3, 4, 5)}
    assert aggregate(study(lesion), CLASS_NAMES).verdict == "glioma"
    strict = StudyRule(tumour_threshold=0.8, no_tumour_max=0.2)
    assert aggregate(study(lesion), CLASS_NAMES, strict).verdict == STUDY_UNCERTAIN


def test_abstained_slices_are_evidence_of_a_tumour_but_never_of_its_type():
    """The FLAIR glioma series: 20 of 21 slices abstained, one classified; the abstained ones
    lean meningioma. Tumour evidence, yes; a type, no."""
    lean = probs(meningioma=0.55, glioma=0.30, no_tumor=0.05, pituitary=0.10)
    outcomes = [outcome(i, lean, SLICE_UNCERTAIN) for i in range(20)]
    outcomes.append(outcome(20, probs(glioma=0.9, no_tumor=0.1)))
    rule = StudyRule(top_k=5)
    verdict = aggregate(outcomes, CLASS_NAMES, rule)
    assert verdict.verdict == STUDY_TUMOUR_TYPE_UNCERTAIN
    assert verdict_words(verdict.verdict) == "Tumour — type uncertain, refer to a radiologist"
    assert "the type is not supported" in verdict.reason and "meningioma" in verdict.reason
    assert verdict.n_uncertain == 20 and verdict.n_classified == 1

    every_slice_abstained = [outcome(i, lean, SLICE_UNCERTAIN) for i in range(10)]
    assert aggregate(every_slice_abstained, CLASS_NAMES).verdict == STUDY_TUMOUR_TYPE_UNCERTAIN
    normal_but_abstained = [outcome(i, NORMAL, SLICE_UNCERTAIN) for i in range(10)]
    assert aggregate(normal_but_abstained, CLASS_NAMES).verdict == "no_tumor"


def test_a_type_is_stated_when_enough_classified_slices_name_it():
    lean = probs(meningioma=0.85, no_tumor=0.15)
    outcomes = [outcome(0, lean), outcome(1, lean), outcome(2, lean, SLICE_UNCERTAIN)]
    outcomes += [outcome(i, NORMAL) for i in range(3, 30)]
    assert aggregate(outcomes, CLASS_NAMES).verdict == "meningioma"  # 2 of 3 >= 60 %
    outcomes[1] = outcome(1, lean, SLICE_UNCERTAIN)
    assert aggregate(outcomes, CLASS_NAMES).verdict == STUDY_TUMOUR_TYPE_UNCERTAIN  # 1 of 3


def test_a_window_averages_neighbours_so_a_lone_slice_cannot_pass_for_a_lesion():
    lone = {3: probs(glioma=0.97, no_tumor=0.03), 17: probs(glioma=0.96, no_tumor=0.04)}
    rule = StudyRule(top_k=2, tumour_threshold=0.7, no_tumour_max=0.4, window=3)
    # two scattered confident slices: each one's evidence falls to (0.97 + 2 x 0.06) / 3
    assert aggregate(study(lone), CLASS_NAMES, StudyRule(top_k=2)).verdict == "glioma"
    scattered = aggregate(study(lone), CLASS_NAMES, rule)
    assert scattered.verdict == "no_tumor" and "averaged over 3" in scattered.rule
    # the same evidence on consecutive slices is a lesion
    run = {i: probs(glioma=0.95, no_tumor=0.05) for i in (10, 11, 12, 13)}
    verdict = aggregate(study(run), CLASS_NAMES, rule)
    assert verdict.verdict == "glioma" and set(verdict.key_slices) <= {10, 11, 12, 13}
    with pytest.raises(ValueError, match="odd"):
        StudyRule(window=2)


def test_smoothing_counts_only_real_slices_at_the_ends_and_past_a_series():
    import numpy as np

    from tumorlib.studies.verdict import smoothed_evidence

    evidence = np.array([[0.9, 0.3, 0.0, 0.6], [0.8, 0.2, 0.5, 0.7]])
    valid = np.array([[True, True, True, False], [True, True, True, True]])
    out = smoothed_evidence(evidence, valid, 3)
    np.testing.assert_allclose(out[0, :3], [0.6, 0.4, 0.15])  # the padded 4th slice is ignored
    np.testing.assert_allclose(out[1], [0.5, 0.5, 0.466667, 0.6], atol=1e-6)
    assert smoothed_evidence(evidence, valid, 1) is evidence
