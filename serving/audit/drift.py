"""Drift watch: live gate scores and confidences per day or week vs the validation distribution.

The export records the validation split's confidences (and the input gate's scores, when the gate
was fitted) under ``validation_distribution`` in its metadata (:mod:`serving.export.distribution`).
Each period's live values are compared with them by the two-sample Kolmogorov–Smirnov test
(``scipy.stats.ks_2samp``): a period is flagged when p < ``alpha`` (default 0.01, strict because
many periods and two quantities are tested) and it holds at least ``min_n`` predictions (fewer
make the test meaningless). A flag says "the inputs or the model's behaviour changed", not why.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

KS_ALPHA = 0.01
MIN_N = 20
QUANTITIES = ("confidence", "gate_score")
PERIODS = {"day": "D", "week": "W-SUN"}  # weeks run Monday to Sunday (UTC)
NO_REFERENCE = (
    "the export recorded no validation distribution (exported before it existed, or the run has "
    "no safety/validation_predictions.npz): re-export the run to enable drift checks"
)


def _summary(values: np.ndarray) -> dict[str, Any]:
    if values.size == 0:
        return {"n": 0}
    p10, median, p90 = np.quantile(values, [0.1, 0.5, 0.9])
    return {"n": int(values.size), "p10": float(p10), "median": float(median), "p90": float(p90)}


def compare(live: np.ndarray, reference: np.ndarray, alpha: float, min_n: int) -> dict[str, Any]:
    """One KS test, with both samples summarised; ``flag`` only with enough data."""
    from scipy.stats import ks_2samp

    out: dict[str, Any] = {"live": _summary(live), "validation": _summary(reference)}
    if live.size < min_n or reference.size == 0:
        out.update(ks=None, p_value=None, flag=False, note=f"fewer than {min_n} predictions")
        return out
    result = ks_2samp(live, reference)
    out.update(
        ks=float(result.statistic), p_value=float(result.pvalue), flag=bool(result.pvalue < alpha)
    )
    return out


def drift_report(
    predictions: pd.DataFrame,
    reference: dict[str, Any] | None,
    *,
    period: str = "week",
    alpha: float = KS_ALPHA,
    min_n: int = MIN_N,
) -> dict[str, Any]:
    """Per period and quantity: the KS statistic, p-value, flag; or why there is no test."""
    distribution = (reference or {}).get("validation_distribution") or {}
    if not any(distribution.get(q) for q in QUANTITIES):
        return {"reference": None, "message": NO_REFERENCE, "periods": []}
    frame = predictions.copy()
    starts = frame["created_at"].dt.tz_convert("UTC").dt.tz_localize(None)
    frame["period"] = starts.dt.to_period(PERIODS[period]).dt.start_time
    periods = []
    for start, group in frame.groupby("period", sort=True):
        row: dict[str, Any] = {"period": start.date().isoformat(), "n": int(len(group))}
        for quantity in QUANTITIES:
            ref = distribution.get(quantity)
            if not ref:
                row[quantity] = {"note": f"no validation {quantity} recorded by the export"}
                continue
            live = group[quantity].dropna().to_numpy(float)
            row[quantity] = compare(live, np.asarray(ref, float), alpha, min_n)
        periods.append(row)
    return {
        "reference": {q: len(distribution.get(q) or []) for q in QUANTITIES},
        "test": f"two-sample Kolmogorov-Smirnov, flag when p < {alpha} and n >= {min_n}",
        "period": period,
        "periods": periods,
    }


def flagged(report: dict[str, Any]) -> list[str]:
    """``"2026-05-18 confidence"`` for each flagged period and quantity."""
    return [
        f"{row['period']} {q}"
        for row in report.get("periods", [])
        for q in QUANTITIES
        if isinstance(row.get(q), dict) and row[q].get("flag")
    ]
