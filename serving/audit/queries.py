"""Read the audit back for analysis: predictions with their latest feedback, per model version.

Feedback is append-only, so a radiologist who changes their mind adds a row; the newest row per
prediction is the one that counts.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from serving.audit.store import AuditStore, as_utc

PREDICTION_COLUMNS = [
    "id", "created_at", "source", "model_name", "model_version", "backend", "class_name",
    "confidence", "abstain", "in_distribution", "gate_score",
]  # fmt: skip


def predictions_frame(store: AuditStore) -> pd.DataFrame:
    """Every prediction record (no probabilities JSON), ``created_at`` as UTC timestamps."""
    rows = store.rows("prediction")
    frame = pd.DataFrame(rows, columns=[*PREDICTION_COLUMNS, "probabilities"])
    frame = frame[PREDICTION_COLUMNS].copy()
    frame["created_at"] = pd.to_datetime([as_utc(t) for t in frame["created_at"]], utc=True)
    return frame


def latest_feedback(store: AuditStore) -> pd.DataFrame:
    """The newest feedback row per prediction."""
    rows = store.rows("feedback")
    columns = ["prediction_id", "created_at", "verdict", "corrected_class", "user"]
    frame = pd.DataFrame(rows, columns=["id", "note", *columns])[columns]
    if frame.empty:
        return frame
    frame = frame.sort_values("created_at", kind="stable")
    return frame.drop_duplicates("prediction_id", keep="last").set_index("prediction_id")


def assessed_frame(store: AuditStore) -> pd.DataFrame:
    """Predictions joined with their latest feedback; ``true_class`` where a class was given.

    ``agree`` confirms the model's class; ``disagree`` gives the corrected class;
    ``not_assessable`` leaves ``true_class`` empty (counted, not scored).
    """
    predictions = predictions_frame(store)
    feedback = latest_feedback(store)
    joined = predictions.join(
        feedback[["verdict", "corrected_class"]], on="id", how="inner"
    ).reset_index(drop=True)
    joined["true_class"] = joined["corrected_class"].where(
        joined["verdict"] == "disagree", joined["class_name"]
    )
    joined.loc[joined["verdict"] == "not_assessable", "true_class"] = None
    return joined


def model_references(store: AuditStore) -> dict[tuple[str, int], dict[str, Any]]:
    """Each model version's reference figures, as its export recorded them."""
    return {
        (row["model_name"], int(row["model_version"])): json.loads(row["reference"])
        for row in store.rows("model")
    }
