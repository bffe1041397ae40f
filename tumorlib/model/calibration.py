"""Temperature scaling and calibration error.

A network trained with cross-entropy is usually over-confident. Temperature scaling (Guo et al.,
2017) divides the logits by one scalar ``T`` fitted on the validation split; it changes no
prediction (argmax is unchanged) but makes the probabilities honest, which abstention and the
clinician-facing page rely on. Our model outputs softmax probabilities, so we scale their
logarithms: ``softmax(log p / T) == softmax(z / T)`` because ``log p`` differs from the logits
``z`` only by a per-row constant.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from scipy.optimize import minimize_scalar

_EPS = 1e-7


def apply_temperature(probabilities: tf.Tensor, temperature: float | tf.Tensor) -> tf.Tensor:
    """Temperature-scale a ``[N, C]`` batch of probabilities (TF op, usable in a signature)."""
    probabilities = tf.convert_to_tensor(probabilities, tf.float32)
    log_p = tf.math.log(tf.clip_by_value(probabilities, _EPS, 1.0))
    return tf.nn.softmax(log_p / tf.cast(temperature, tf.float32), axis=-1)


def apply_temperature_np(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """NumPy twin of :func:`apply_temperature`, for evaluation code working on arrays."""
    log_p = np.log(np.clip(np.asarray(probabilities, np.float64), _EPS, 1.0)) / temperature
    log_p -= log_p.max(axis=1, keepdims=True)
    exp = np.exp(log_p)
    return exp / exp.sum(axis=1, keepdims=True)


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature in [0.05, 20] minimising validation negative log-likelihood.

    ``labels`` are integer class indices. One scalar, so a bounded 1-D search is exact enough
    and cannot overfit the validation split in any meaningful way.
    """
    labels = np.asarray(labels, dtype=int)
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on an empty split")

    def nll(t: float) -> float:
        p = apply_temperature_np(probabilities, t)[np.arange(len(labels)), labels]
        return float(-np.mean(np.log(np.clip(p, _EPS, 1.0))))

    result = minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded")
    return float(result.x)


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, num_bins: int = 15
) -> float:
    """ECE: the count-weighted gap between confidence and accuracy over equal-width bins."""
    bins = reliability_bins(probabilities, labels, num_bins)
    total = sum(bins["count"])
    return float(
        sum(
            n / total * abs(acc - conf)
            for n, acc, conf in zip(bins["count"], bins["accuracy"], bins["confidence"])
            if n
        )
    )


def reliability_bins(
    probabilities: np.ndarray, labels: np.ndarray, num_bins: int = 15
) -> dict[str, list[float]]:
    """Per-bin mean confidence, accuracy and count, for a reliability diagram."""
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels, dtype=int)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, num_bins - 1)
    out: dict[str, list[float]] = {
        "lower": [],
        "upper": [],
        "confidence": [],
        "accuracy": [],
        "count": [],
    }
    for b in range(num_bins):
        mask = bins == b
        out["lower"].append(float(edges[b]))
        out["upper"].append(float(edges[b + 1]))
        out["count"].append(int(mask.sum()))
        out["confidence"].append(float(confidence[mask].mean()) if mask.any() else float("nan"))
        out["accuracy"].append(float(correct[mask].mean()) if mask.any() else float("nan"))
    return out
