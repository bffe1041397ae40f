"""Test-time robustness: each acquisition change is measured on both sets, next to the baseline."""

from __future__ import annotations

import numpy as np

from tumorlib.safety import robustness


def test_measure_reports_every_condition_and_the_baseline_matches_a_plain_predict(tmp_path):
    from tumorlib.images.preprocessing import normalize
    from tumorlib.model.classifier import build_model

    model = build_model(image_size=32, weights=None)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (10, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, 10)
    tumour = rng.random(6) < 0.5
    report = robustness.measure(
        model, 1.0, (images, labels), (images[:6], tumour), ["gamma", "frame"]
    )
    assert list(report) == ["none", "gamma", "frame"]
    plain = model.predict(normalize(images), verbose=0).argmax(axis=1)
    assert report["none"]["validation_accuracy"] == np.mean(plain == labels)
    for row in report.values():
        assert set(row) == {
            "validation_accuracy",
            "validation_tumour_vs_no_tumour",
            "second_source_tumour_vs_no_tumour",
        }
        assert all(0.0 <= v <= 1.0 for v in row.values())
    path = robustness.plot(tmp_path / "r.png", report)
    assert path.stat().st_size > 1000
