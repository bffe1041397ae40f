"""The validation distribution an export records, so live drift can be measured against it.

Why in the export: months later the run folder may be gone, but the served version's metadata
(copied into the audit database on first use) still says what "normal" looked like. Stored
values: the validation split's top temperature-scaled probability per image (from
``RUN/safety/validation_predictions.npz``, written by ``tumorlib abstention``) and the input
gate's validation scores (``validation_gate_scores`` in ``RUN/input_gate.json``, written by
``tumorlib gate``), rounded to 4 decimals; a few thousand numbers, no image data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tumorlib.contracts.runs import GATE_SUMMARY_FILE, SAFETY_DIR, VALIDATION_PREDICTIONS_FILE

MAX_VALUES = 5000


def _rounded(values: np.ndarray) -> list[float]:
    values = np.sort(values[np.isfinite(values)])
    if values.size > MAX_VALUES:  # evenly spaced order statistics keep the distribution's shape
        values = values[np.linspace(0, values.size - 1, MAX_VALUES).round().astype(int)]
    return [round(float(v), 4) for v in values]


def validation_distribution(run_path: Path) -> dict[str, Any] | None:
    """``{"confidence": [...], "gate_score": [...] | None}``, or None when neither exists."""
    confidence = gate = None
    predictions = run_path / SAFETY_DIR / VALIDATION_PREDICTIONS_FILE
    if predictions.is_file():
        with np.load(predictions) as arrays:
            confidence = _rounded(np.asarray(arrays["probabilities"], float).max(axis=1))
    summary = run_path / GATE_SUMMARY_FILE
    if summary.is_file():
        scores = json.loads(summary.read_text()).get("validation_gate_scores")
        if scores:
            gate = _rounded(np.asarray(scores, float))
    if confidence is None and gate is None:
        return None
    return {"confidence": confidence, "gate_score": gate, "split": "validation"}
