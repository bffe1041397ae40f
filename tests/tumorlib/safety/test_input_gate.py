"""The multi-layer Mahalanobis input gate: fitting, thresholds, persistence, the TF twin inside a
saved serving signature, and the generated negatives."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tumorlib.safety.gate import GateError, InputGate, evaluate_gate, fit_gate, fit_linear_check
from tumorlib.safety.gate_features import feature_extractor
from tumorlib.safety.gate_graph import gate_score_tf, make_gated_serve_fn
from tumorlib.safety.gate_negatives import generate_negatives, unusable_views


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    bases = {"low": rng.normal(size=(6, 6)), "high": rng.normal(size=(16, 16))}

    def draw(n, shift=(0.0, 0.0)):
        return {
            name: rng.normal(size=(n, b.shape[0])) @ b + s
            for (name, b), s in zip(bases.items(), shift)
        }

    # "far_low" is only unusual in the low layer, "far_high" only in the high one: the gate
    # must catch both, as blank images are caught only by a mid-level layer of the real model.
    return {
        "train": draw(800),
        "validation": draw(400),
        "test": draw(400),
        "far_low": draw(100, (9.0, 0.0)),
        "far_high": draw(100, (0.0, 9.0)),
    }


def test_thresholds_come_from_validation_and_every_layer_must_accept(features):
    gate = fit_gate(features["train"], features["validation"], false_rejection=0.02)
    assert gate.layer_names == ("low", "high")
    assert (~gate.accept(features["validation"])).mean() <= 0.02
    for g in gate.layers:  # each layer at the Bonferroni share of the target
        assert (g.distance(features["validation"][g.layer]) > g.threshold).mean() <= 0.01
        assert 0.0 <= g.shrinkage <= 1.0
    report = evaluate_gate(
        gate, features["test"], {"far_low": features["far_low"], "far_high": features["far_high"]}
    )
    assert report["test_false_rejection_rate"] <= 0.05
    assert report["negative_rejection_by_kind"]["far_low"]["rate"] >= 0.99
    assert report["negative_rejection_by_kind"]["far_high"]["rate"] >= 0.99
    assert report["negatives_total"] == 200


def test_distance_matches_scipy_and_tf_score_matches_numpy(features):
    from scipy.spatial.distance import mahalanobis

    gate = fit_gate(features["train"], features["validation"])
    g = gate.layers[1]
    x = features["test"]["high"][:5]
    np.testing.assert_allclose(
        g.distance(x), [mahalanobis(v, g.mean, g.precision) for v in x], rtol=1e-9
    )
    sample = {k: v[:20] for k, v in features["far_low"].items()}
    got = gate_score_tf([tf.constant(sample[n], tf.float32) for n in gate.layer_names], gate)
    np.testing.assert_allclose(got.numpy(), gate.score(sample), rtol=2e-3)


def test_save_load_round_trip_and_errors(features, tmp_path):
    gate = fit_gate(features["train"], features["validation"])
    loaded = InputGate.load(gate.save(tmp_path / "gate.npz"))
    assert loaded.layer_names == gate.layer_names
    assert [g.threshold for g in loaded.layers] == [g.threshold for g in gate.layers]
    np.testing.assert_allclose(
        loaded.score(features["test"]), gate.score(features["test"]), rtol=1e-4
    )
    with pytest.raises(GateError, match="does not exist"):
        InputGate.load(tmp_path / "missing.npz")
    with pytest.raises(GateError, match="missing"):
        gate.score({"low": features["test"]["low"]})
    with pytest.raises(GateError, match=r"expected features \[N, 16\]"):
        gate.score({"low": features["test"]["low"], "high": np.zeros((2, 3))})
    with pytest.raises(GateError, match="do not match"):
        fit_gate(features["train"], {"low": np.zeros((3, 5)), "high": np.zeros((3, 16))})


def test_gated_signature_round_trips_through_a_saved_model(tmp_path):
    """The export path: statistics embedded as constants, one backbone pass, same answers."""
    from tumorlib.images.preprocessing import preprocess_bytes_batch
    from tumorlib.model.classifier import build_model

    size = 32
    model = build_model(image_size=size, weights=None)
    rng = np.random.default_rng(0)
    encoded = [
        tf.io.encode_png(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).numpy()
        for _ in range(12)
    ]
    images = preprocess_bytes_batch(tf.constant(encoded), size)
    layers = ("block_13_expand_relu", "out_relu")
    outs = feature_extractor(model, layers)(images)
    feats = {name: outs[i].numpy() for i, name in enumerate(layers)}
    gate = fit_gate({k: v[:8] for k, v in feats.items()}, {k: v[8:] for k, v in feats.items()})
    # A second, stricter fit stands in for the familiarity check (same layers, own statistics).
    familiarity = fit_gate(
        {k: v[:6] for k, v in feats.items()}, {k: v[6:8] for k, v in feats.items()}
    )

    module = tf.Module()
    module.model = model
    module.serve, module.gate_features = make_gated_serve_fn(
        model, gate, image_size=size, temperature=1.5, familiarity=familiarity
    )
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})
    out = tf.saved_model.load(str(tmp_path)).signatures["serving_default"](
        image_bytes=tf.constant(encoded[:4])
    )
    from tumorlib.model.calibration import apply_temperature_np

    expected = apply_temperature_np(model(images[:4]).numpy(), 1.5)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    score = gate.score({k: v[:4] for k, v in feats.items()})
    np.testing.assert_allclose(out["gate_score"].numpy(), score, rtol=1e-3)
    assert out["in_distribution"].numpy().tolist() == (score <= 1.0).tolist()
    familiar = familiarity.score({k: v[:4] for k, v in feats.items()})
    np.testing.assert_allclose(out["familiarity_score"].numpy(), familiar, rtol=1e-3)
    assert out["familiar"].numpy().tolist() == (familiar <= 1.0).tolist()
    with pytest.raises(GateError, match="fit both"):
        other = fit_gate({"out_relu": feats["out_relu"][:8]}, {"out_relu": feats["out_relu"][8:]})
        make_gated_serve_fn(model, gate, image_size=size, familiarity=other)
    assert [c.decode() for c in out["class_name"].numpy()][0] in (
        "glioma",
        "meningioma",
        "no_tumor",
        "pituitary",
    )


def test_generated_negatives_cover_every_kind_and_are_images():
    negatives = generate_negatives(size=64, per_kind=2)
    kinds = {name.split(":")[0] for name, _ in negatives}
    assert {"noise", "blank", "gradient", "text", "photo"} <= kinds
    assert {"document", "screenshot", "colour_drawing", "chart"} <= kinds
    colour = [image for name, image in negatives if name == "colour_drawing"]
    assert all(np.ptp(image.astype(int), axis=2).mean() > 10 for image in colour)  # not grey
    for name, image in negatives:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
    text = [image for name, image in negatives if name == "text"]
    assert all(image.std() > 5 for image in text)  # text was actually drawn


def test_unusable_views_are_crops_rotations_and_mosaics_of_the_given_slices():
    rng = np.random.default_rng(0)
    slices = [rng.integers(0, 255, (64, 48, 3), dtype=np.uint8) for _ in range(3)]
    views = unusable_views(slices, per_kind=3)
    kinds = [name for name, _ in views]
    assert sorted(set(kinds)) == [
        "view:mosaic", "view:quarter_crop", "view:rotated_180", "view:rotated_90",
    ]  # fmt: skip
    rotated = next(image for name, image in views if name == "view:rotated_90")
    assert rotated.shape == (48, 64, 3)
    np.testing.assert_array_equal(rotated, np.rot90(slices[0]))
    mosaic = next(image for name, image in views if name == "view:mosaic")
    assert mosaic.shape[:2] == (63, 48)  # 3 x 21 rows, 3 x 16 columns
    assert unusable_views([]) == []


def test_linear_check_separates_what_the_distances_cannot_and_round_trips(features, tmp_path):
    """Negatives sitting *inside* the positives' spread on one axis: a wide distance net lets
    them through, the linear discriminant refuses them; saved, loaded and in the graph alike."""
    positives = {k: v.copy() for k, v in features["train"].items()}
    negatives = {k: v[:120].copy() for k, v in features["validation"].items()}
    shift = 3.0 * positives["high"][:, 0].std()  # along one direction only
    negatives["high"][:, 0] += shift
    held_out = {k: v[120:220].copy() for k, v in features["validation"].items()}
    held_out["high"][:, 0] += shift
    validation = features["test"]
    gate = fit_gate(positives, validation, 0.01, far_factor=3.0)
    assert (~gate.accept(held_out)).mean() < 0.5  # the widened distances alone miss most
    gate.linear = fit_linear_check(positives, negatives, validation, 0.01)
    assert (~gate.accept(held_out)).mean() >= 0.95
    assert (~gate.accept(validation)).mean() <= 0.02  # ~ the target, on the split it was set on
    mixed = {k: np.concatenate([validation[k][:50], held_out[k][:50]]) for k in validation}
    loaded = InputGate.load(gate.save(tmp_path / "gate.npz"))
    assert loaded.linear is not None and loaded.linear.layers == gate.linear.layers
    np.testing.assert_allclose(loaded.score(mixed), gate.score(mixed), rtol=1e-4)
    sample = {k: v[:20] for k, v in held_out.items()}
    got = gate_score_tf([tf.constant(sample[n], tf.float32) for n in gate.layer_names], gate)
    np.testing.assert_allclose(got.numpy(), gate.score(sample), rtol=2e-3)
    with pytest.raises(GateError, match="at least 2 positives and 2 negatives"):
        fit_linear_check(positives, {k: v[:1] for k, v in negatives.items()}, validation)
