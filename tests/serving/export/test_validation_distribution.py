"""The export's validation distribution (drift watch's reference) and its absence."""

from __future__ import annotations

import json

import numpy as np

from serving.audit.records import reference_from_metadata
from serving.export.distribution import MAX_VALUES, validation_distribution
from tumorlib.contracts.runs import GATE_SUMMARY_FILE, SAFETY_DIR, VALIDATION_PREDICTIONS_FILE


def test_validation_distribution_from_the_run_folder(tmp_path):
    assert validation_distribution(tmp_path) is None  # neither file: "say so" downstream
    (tmp_path / SAFETY_DIR).mkdir()
    probabilities = np.random.default_rng(0).dirichlet(np.ones(4), 7000)
    np.savez(tmp_path / SAFETY_DIR / VALIDATION_PREDICTIONS_FILE, probabilities=probabilities)
    only_confidence = validation_distribution(tmp_path)
    assert only_confidence["gate_score"] is None
    values = only_confidence["confidence"]
    assert len(values) == MAX_VALUES and values == sorted(values)
    assert abs(np.median(values) - np.median(probabilities.max(axis=1))) < 1e-3
    (tmp_path / GATE_SUMMARY_FILE).write_text(json.dumps({"validation_gate_scores": [0.5, 0.2]}))
    both = validation_distribution(tmp_path)
    assert both["gate_score"] == [0.2, 0.5]
    metadata = {"metrics": {"clean-test": {"accuracy": 0.93}}, "validation_distribution": both}
    reference = reference_from_metadata(metadata)
    assert reference["test_accuracy"] == 0.93 and reference["validation_distribution"] == both
