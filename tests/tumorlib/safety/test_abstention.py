"""Abstention threshold selection, evaluation and plot, on probabilities built so the right answer
is known."""

from __future__ import annotations

import numpy as np
import pytest

from tumorlib.safety.abstention import (
    abstain,
    choose_class_thresholds,
    choose_threshold,
    evaluate_threshold,
    risk_coverage_curve,
)
from tumorlib.safety.abstention_report import plot_risk_coverage


def probs_with(confidences, predicted):
    out = np.zeros((len(confidences), 4))
    for i, (c, k) in enumerate(zip(confidences, predicted)):
        out[i] = (1 - c) / 3
        out[i, k] = c
    return out


def test_threshold_is_the_lowest_confidence_reaching_the_target():
    # 100 confident correct answers, then 3 wrong ones at 0.6-0.7 mixed with correct ones.
    conf = [0.99] * 100 + [0.7, 0.68, 0.65, 0.6, 0.55]
    labels = np.zeros(105, int)
    predicted = [0] * 100 + [0, 1, 0, 2, 0]
    probs = probs_with(conf, predicted)
    chosen = choose_threshold(probs, labels, target_precision=0.99)
    # Down to 0.65: 102 right of 103 = 0.990 >= 0.99; down to 0.6: 102/104 = 0.981 < 0.99.
    assert chosen.reachable and chosen.threshold == pytest.approx(0.65)
    assert chosen.accepted == 103 and chosen.precision == pytest.approx(102 / 103)
    assert chosen.coverage == pytest.approx(103 / 105)
    # A stricter target must give up coverage: only the 101 leading correct answers.
    assert choose_threshold(probs, labels, target_precision=1.0).accepted == 101
    # A looser target accepts more.
    assert choose_threshold(probs, labels, target_precision=0.95).accepted == 105


def test_ties_are_accepted_together():
    probs = probs_with([0.9, 0.8, 0.8], [0, 0, 1])
    curve = risk_coverage_curve(probs, np.zeros(3, int))
    assert curve["valid"].tolist() == [True, False, True]
    chosen = choose_threshold(probs, np.zeros(3, int), target_precision=0.9)
    assert chosen.accepted == 1 and chosen.threshold == pytest.approx(0.9)


def test_unreachable_target_refuses_everything():
    probs = probs_with([0.9, 0.8], [1, 1])  # both wrong
    chosen = choose_threshold(probs, np.zeros(2, int))
    assert not chosen.reachable and chosen.threshold > 1.0
    assert abstain(probs, chosen.threshold).all()


def test_evaluate_threshold_counts_against_sklearn():
    from sklearn.metrics import accuracy_score

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4) * 0.5, size=200)
    labels = rng.integers(0, 4, 200)
    result = evaluate_threshold(probs, labels, 0.6)
    accepted = probs.max(1) >= 0.6
    assert result.accepted == accepted.sum() and result.coverage == pytest.approx(accepted.mean())
    assert result.accepted_accuracy == pytest.approx(
        accuracy_score(labels[accepted], probs[accepted].argmax(1))
    )
    assert result.overall_accuracy == pytest.approx(accuracy_score(labels, probs.argmax(1)))
    for i, name in enumerate(("glioma", "meningioma", "no_tumor", "pituitary")):
        assert result.per_class_coverage[name] == pytest.approx(accepted[labels == i].mean())


def test_bad_inputs_and_plot(tmp_path):
    with pytest.raises(ValueError, match="target_precision"):
        choose_threshold(probs_with([0.9], [0]), [0], target_precision=1.5)
    with pytest.raises(ValueError, match="N labels"):
        risk_coverage_curve(probs_with([0.9], [0]), [0, 1])
    probs = probs_with([0.95, 0.9, 0.6], [0, 0, 1])
    labels = np.zeros(3, int)
    chosen = choose_threshold(probs, labels)
    path = plot_risk_coverage(
        tmp_path / "rc.png",
        {"validation": (probs, labels)},
        chosen,
        evaluate_threshold(probs, labels, chosen.threshold),
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_per_class_thresholds_answer_an_easy_class_the_single_threshold_refers():
    """Class 2 ("no tumour") is always right at 0.6-0.8 confidence; classes 0/1 are confused up
    to 0.9. One threshold must sit above 0.9 and refers every class-2 slice; per-class
    thresholds answer them, and the accepted answers still meet the target together."""
    rng = np.random.default_rng(1)
    easy = rng.uniform(0.6, 0.8, 200)
    hard_right = rng.uniform(0.5, 1.0, 400)
    hard_wrong = rng.uniform(0.5, 0.9, 40)
    conf = np.concatenate([easy, hard_right, hard_wrong])
    predicted = np.concatenate([np.full(200, 2), np.zeros(400, int), np.ones(40, int)])
    labels = np.concatenate([np.full(200, 2), np.zeros(400, int), np.zeros(40, int)])
    probs = probs_with(conf, predicted)
    single = choose_threshold(probs, labels, target_precision=0.99)
    per_class = choose_class_thresholds(probs, labels, target_precision=0.99)
    assert per_class.reachable and per_class.precision >= 0.99
    assert per_class.accepted >= single.accepted + 190  # the easy class is answered now
    assert per_class.thresholds[2] <= easy.min() + 1e-12
    result = evaluate_threshold(probs, labels, per_class.thresholds)
    assert result.accepted == per_class.accepted and result.accepted_accuracy >= 0.99
    refused = abstain(probs, per_class.thresholds)
    assert refused.tolist() == (conf < np.asarray(per_class.thresholds)[predicted]).tolist()


def test_per_class_thresholds_never_answer_fewer_than_one_threshold():
    rng = np.random.default_rng(2)
    for _ in range(5):
        labels = rng.integers(0, 4, 300)
        logits = rng.normal(size=(300, 4))
        logits[np.arange(300), labels] += rng.uniform(0.5, 4.0)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        single = choose_threshold(probs, labels, 0.95)
        per_class = choose_class_thresholds(probs, labels, 0.95)
        assert per_class.accepted >= (single.accepted if single.reachable else 0)
        if per_class.reachable:
            assert per_class.precision >= 0.95


def test_per_class_thresholds_in_the_served_graph():
    """``with_confidence`` compares each row with its predicted class's threshold."""
    import tensorflow as tf

    from tumorlib.model.serve_body import with_confidence

    probs = probs_with([0.7, 0.7, 0.95, 0.5], [0, 2, 1, 2]).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def base(image_bytes):
        return {"probabilities": tf.constant(probs)}

    serve = with_confidence(base, threshold=(0.9, 0.9, 0.6, 0.9))
    out = serve(tf.constant(["a", "b", "c", "d"]))
    assert out["abstain"].numpy().tolist() == [True, False, False, True]
    assert out["abstain"].numpy().tolist() == abstain(probs, (0.9, 0.9, 0.6, 0.9)).tolist()
