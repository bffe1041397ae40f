"""The Mahalanobis input gate: fitting, thresholds, persistence, the TF twin inside a signature,
and the generated negatives."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tumorlib.input_gate import (
    GateError,
    InputGate,
    evaluate_gate,
    fit_gate,
    gate_distance_tf,
    generate_negatives,
)


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(16, 16))
    draw = lambda n, shift=0.0: rng.normal(size=(n, 16)) @ basis + shift  # noqa: E731
    return {
        "train": draw(800),
        "validation": draw(400),
        "test": draw(400),
        "far": draw(200, shift=8.0),
    }


def test_threshold_is_the_validation_quantile_and_generalises(features):
    gate = fit_gate(features["train"], features["validation"], false_rejection=0.01)
    val_rejected = ~gate.accept(features["validation"])
    assert val_rejected.mean() <= 0.01
    report = evaluate_gate(gate, features["test"], {"far": features["far"]})
    assert report["test_false_rejection_rate"] <= 0.04
    assert report["negative_rejection_rate"] >= 0.99
    assert report["negative_rejection_by_kind"]["far"]["n"] == 200
    assert 0.0 <= gate.shrinkage <= 1.0


def test_distance_matches_scipy_mahalanobis(features):
    from scipy.spatial.distance import mahalanobis

    gate = fit_gate(features["train"], features["validation"])
    x = features["test"][:5]
    expected = [mahalanobis(v, gate.mean, gate.precision) for v in x]
    np.testing.assert_allclose(gate.distance(x), expected, rtol=1e-9)
    got_tf = gate_distance_tf(tf.constant(x, tf.float32), gate).numpy()
    np.testing.assert_allclose(got_tf, expected, rtol=2e-3)


def test_save_load_round_trip_and_errors(features, tmp_path):
    gate = fit_gate(features["train"], features["validation"])
    loaded = InputGate.load(gate.save(tmp_path / "gate.npz"))
    assert loaded.threshold == gate.threshold
    np.testing.assert_allclose(
        loaded.distance(features["test"]), gate.distance(features["test"]), rtol=1e-4
    )
    with pytest.raises(GateError, match="does not exist"):
        InputGate.load(tmp_path / "missing.npz")
    with pytest.raises(GateError, match=r"expected features \[N, 16\]"):
        gate.distance(np.zeros((2, 3)))
    with pytest.raises(GateError, match="do not match"):
        fit_gate(features["train"], np.zeros((3, 5)))


def test_generated_negatives_cover_every_kind_and_are_images():
    negatives = generate_negatives(size=64, per_kind=2)
    kinds = {name.split(":")[0] for name, _ in negatives}
    assert {"noise", "blank", "gradient", "text", "photo"} <= kinds
    for name, image in negatives:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
    text = [image for name, image in negatives if name == "text"]
    assert all(image.std() > 5 for image in text)  # text was actually drawn
