"""The page's "Live performance" view: agreement per model version and drift, from the audit.

Opened from a sidebar switch, so the database is read only when someone asks. The figures are
:mod:`serving.audit.performance` and :mod:`serving.audit.drift`'s, the same as
``tumorlib audit performance`` and ``tumorlib audit drift`` print.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pandas as pd
import streamlit as st

from serving.audit import resolve
from serving.audit.drift import drift_report, flagged
from serving.audit.performance import performance_by_version, reliability_png_bytes
from serving.audit.queries import model_references, predictions_frame
from streamlit_app.feedback import audit_log
from tumorlib.contracts.classes import CLASS_NAMES, DISPLAY_NAMES

TOGGLE_KEY = "show_performance"


def _figure(value: dict[str, Any]) -> dict[str, Any]:
    def pct(x: float | None) -> float | None:
        return None if x is None else round(100 * x, 1)

    return {
        "%": pct(value["value"]),
        "95% CI low": pct(value["low"]),
        "95% CI high": pct(value["high"]),
        "n": value["n"],
    }


def figures_table(figures: dict[str, Any]) -> pd.DataFrame:
    rows = {
        "Agreement (accuracy)": figures["accuracy"],
        "Accuracy on accepted answers": figures["accepted_accuracy"],
        "Refer rate (uncertain)": figures["refer_rate"],
        "Refused by the input gate": figures["gate_refusal_rate"],
    }
    rows.update({f"Recall: {DISPLAY_NAMES[c]}": figures["recall"][c] for c in CLASS_NAMES})
    return pd.DataFrame({k: _figure(v) for k, v in rows.items()}).T


def confusion_table(figures: dict[str, Any]) -> pd.DataFrame:
    names = [DISPLAY_NAMES[c] for c in CLASS_NAMES]
    return pd.DataFrame(
        figures["confusion_matrix"],
        index=[f"radiologist: {n}" for n in names],
        columns=[f"model: {n}" for n in names],
    )


def show_version(name: str, version: int, figures: dict[str, Any], drift: dict) -> None:
    counts = figures["counts"]
    card = figures["reference"].get("test_accuracy")
    st.markdown(f"#### {name} version {version}")
    st.caption(
        f"{counts['predictions']} predictions, {counts['with_feedback']} with feedback "
        f"({counts['scored']} scored, {counts['not_assessable']} not assessable). Model card "
        f"clean-test accuracy: {'not recorded' if card is None else f'{card:.1%}'}."
    )
    if figures["flag"]:
        st.error(f"Below the model card: {figures['flag']}.")
    left, right = st.columns([3, 2])
    with left:
        st.dataframe(figures_table(figures))
        st.dataframe(confusion_table(figures))
    with right:
        st.image(reliability_png_bytes(figures["reliability"], f"{name} v{version}"))
    if drift.get("message"):
        st.info(f"Drift watch: {drift['message']}.")
    elif flagged(drift):
        st.warning("Drift watch: shift flagged (KS test) in " + ", ".join(flagged(drift)))
    else:
        st.caption(f"Drift watch ({drift['test']}): no shift flagged.")


def show(secrets: Mapping[str, Any]) -> None:
    """A sidebar switch; when on, the view above the uploader."""
    with st.sidebar:
        wanted = st.toggle("Show live performance (from feedback)", key=TOGGLE_KEY)
    if not wanted:
        return
    settings = resolve(secrets, os.environ)
    with st.expander("Live performance per model version", expanded=True):
        try:
            store = audit_log(settings.url, settings).store  # one engine per process
            results = performance_by_version(store)
            predictions = predictions_frame(store)
            references = model_references(store)
        except Exception as err:  # noqa: BLE001 - the view is optional; say why it is empty
            st.warning(f"The audit database cannot be read ({type(err).__name__}).")
            return
        if not results:
            st.info("No predictions recorded yet.")
            return
        for (name, version), figures in sorted(results.items()):
            rows = predictions[
                (predictions["model_name"] == name) & (predictions["model_version"] == version)
            ]
            drift = drift_report(rows, references.get((name, version)))
            show_version(name, version, figures, drift)
