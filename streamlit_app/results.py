"""Per-file results: the probability chart, the batch table and its CSV download.

Class names and their order come from ``tumorlib.contracts.classes`` only; people see
``DISPLAY_NAMES``. The safety verdicts come from the model (``abstain``, ``in_distribution``): an
image the input gate refused gets no class and no probabilities, an uncertain one no class either —
its probabilities stay visible, because they are what "uncertain" means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import altair as alt
import pandas as pd
import streamlit as st

from serving.clients.prediction import CLASSIFIED, NOT_BRAIN_MRI, UNCERTAIN, Prediction
from tumorlib.contracts.classes import CLASS_NAMES, DISPLAY_NAMES
from tumorlib.contracts.serving_contract import NOT_BRAIN_MRI_MESSAGE, UNCERTAIN_MESSAGE

CSV_FILE_NAME = "tumorlib_predictions.csv"
# Spreadsheet programs execute cells starting with these; a file name must stay a file name.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class FileResult:
    """What the page knows about one uploaded file after validation and prediction."""

    file_name: str
    prediction: Prediction | None = None
    error: str | None = None
    model_version: int | None = None
    backend: str = ""
    note: str | None = None

    @property
    def verdict(self) -> str | None:
        return self.prediction.verdict if self.prediction else None

    @property
    def predicted_label(self) -> str:
        """The class in plain words, or what stands in its place when there is none."""
        if self.prediction is None:
            return ""
        return {
            CLASSIFIED: display_name(self.prediction.class_name),
            UNCERTAIN: UNCERTAIN_MESSAGE,
            NOT_BRAIN_MRI: NOT_BRAIN_MRI_MESSAGE,
        }[self.prediction.verdict]

    @property
    def confidence(self) -> float | None:
        if self.prediction is None or self.verdict == NOT_BRAIN_MRI:
            return None
        return self.prediction.probabilities[self.prediction.class_name]


def display_name(class_name: str) -> str:
    return DISPLAY_NAMES.get(class_name, class_name)


def probability_frame(prediction: Prediction) -> pd.DataFrame:
    """The four probabilities in the project's class order, labelled in plain words."""
    return pd.DataFrame(
        {
            "class": [display_name(name) for name in CLASS_NAMES],
            "probability": [float(prediction.probabilities.get(name, 0.0)) for name in CLASS_NAMES],
        }
    )


def probability_chart(prediction: Prediction) -> alt.Chart:
    """Horizontal bars on a fixed 0-100 % axis, so a 40 % bar never looks like a certainty."""
    frame = probability_frame(prediction)
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X(
                "probability:Q",
                scale=alt.Scale(domain=[0, 1]),
                axis=alt.Axis(format="%", title="probability"),
            ),
            y=alt.Y("class:N", sort=None, title=None, axis=alt.Axis(labelOverlap=False)),
            tooltip=[alt.Tooltip("class:N"), alt.Tooltip("probability:Q", format=".1%")],
        )
        .properties(height=alt.Step(26))
    )


def probabilities_text(prediction: Prediction) -> str:
    """The same four numbers as text (screen readers, copying into notes)."""
    frame = probability_frame(prediction)
    return " · ".join(f"{c}: {p:.1%}" for c, p in zip(frame["class"], frame["probability"]))


def results_table(results: Sequence[FileResult]) -> pd.DataFrame:
    """One row per uploaded file, failed ones included (with their error)."""
    rows = []
    for result in results:
        row: dict[str, object] = {
            "file": result.file_name,
            "predicted class": result.predicted_label,
            "confidence": result.confidence,
            "error": result.error or "",
        }
        shown = result.confidence is not None  # no probabilities for a refused input
        for name in CLASS_NAMES:
            p = result.prediction.probabilities.get(name) if shown else None
            row[f"p({display_name(name)})"] = p
        row.update(safety_columns(result.prediction))
        row["model version"] = result.model_version
        row["backend"] = result.backend
        rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.astype({"model version": "Int64"}) if len(frame) else frame


def safety_columns(prediction: Prediction | None) -> dict[str, object]:
    """``abstain``, ``in distribution``, ``gate score``, ``familiar`` and ``familiarity score``;
    empty when the model has none."""
    if prediction is None:
        return dict.fromkeys(
            ("abstain", "in distribution", "gate score", "familiar", "familiarity score")
        )
    return {
        "abstain": prediction.abstain,
        "in distribution": prediction.in_distribution,
        "gate score": prediction.gate_score,
        "familiar": prediction.familiar,
        "familiarity score": prediction.familiarity_score,
    }


def to_csv_bytes(table: pd.DataFrame) -> bytes:
    """CSV for download, with text cells that a spreadsheet would run as formulas defused."""
    safe = table.copy()
    for column in safe.columns:
        if safe[column].dtype == object or pd.api.types.is_string_dtype(safe[column]):
            safe[column] = safe[column].map(_defuse)
    return safe.to_csv(index=False, float_format="%.6f").encode("utf-8")


def _defuse(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def show_results_table(results: Sequence[FileResult]) -> None:
    """The batch summary: table plus a CSV download that does not re-run the predictions."""
    table = results_table(results)
    st.subheader("All results")
    # Shown in percent with one decimal; the CSV keeps the probabilities as they came.
    percent_columns = ["confidence", *(f"p({display_name(n)})" for n in CLASS_NAMES)]
    shown = table.copy()
    shown[percent_columns] = shown[percent_columns].astype(float) * 100
    st.dataframe(
        shown,
        hide_index=True,
        column_config={
            c: st.column_config.NumberColumn(c, format="%.1f%%") for c in percent_columns
        },
    )
    st.download_button(
        "Download results (CSV)",
        data=to_csv_bytes(table),
        file_name=CSV_FILE_NAME,
        mime="text/csv",
        on_click="ignore",
    )
