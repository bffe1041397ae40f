"""Fit a run's temperature on the validation split and write ``calibration.json``.

Why a module of its own: both a trained run (:mod:`tumorlib.training.train`) and an ensemble run
(:mod:`tumorlib.training.ensemble_run`) are calibrated the same way, on the same split, into the
same file; the temperature maths itself lives in :mod:`tumorlib.model.calibration`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tumorlib.contracts.runs import CALIBRATION_FILE, write_json

CALIBRATION_SPLIT = "validation"


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean NLL of the true class (probabilities clipped at 1e-7)."""
    true_class = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(true_class, 1e-7, 1.0))))


def calibrate_on_validation(
    model,
    run_dir: Path,
    *,
    dataset_config: str,
    data_dir: str | os.PathLike | None,
    image_size: int,
    batch_size: int = 32,
    verbose: int | str = "auto",
) -> dict[str, Any]:
    """Fit the temperature on validation, write ``calibration.json``, return its contents.

    Records ECE and NLL before and after scaling, and the raw validation accuracy.
    """
    from tumorlib.evaluation.predictions import predict_split
    from tumorlib.model.calibration import (
        apply_temperature_np,
        expected_calibration_error,
        fit_temperature,
    )

    probs, labels = predict_split(
        model, CALIBRATION_SPLIT, dataset_config, data_dir,
        image_size=image_size, batch_size=batch_size, verbose=verbose,
    )  # fmt: skip
    temperature = fit_temperature(probs, labels)
    scaled = apply_temperature_np(probs, temperature)
    payload = {
        "temperature": temperature,
        "fitted_on": f"{dataset_config}/{CALIBRATION_SPLIT}",
        "num_examples": int(len(labels)),
        "ece_before": expected_calibration_error(probs, labels),
        "ece_after": expected_calibration_error(scaled, labels),
        "nll_before": negative_log_likelihood(probs, labels),
        "nll_after": negative_log_likelihood(scaled, labels),
        "validation_accuracy": float(np.mean(probs.argmax(1) == labels)),
    }
    write_json(Path(run_dir) / CALIBRATION_FILE, payload)
    return payload
