"""Is the heatmap what drove the answer? Deletion and insertion curves (Petsiuk et al., 2018).

A heatmap ranks pixels. *Deletion* blacks them out in that order (black is the slice's
background and the padding value) and tracks the probability of the explained class: a faithful
map makes it fall fast, so a **low** area under the curve is good. *Insertion* starts from a
heavily blurred slice and restores the original pixels in that order: a faithful map makes the
probability rise fast, so a **high** area is good. Each method is compared with a random order
(the floor any map must beat) on the same images and the same class (the model's prediction).

``python -m tumorlib.evaluation.faithfulness_report RUN`` measures Grad-CAM, Grad-CAM++ and the
random order on ``clean/test`` (or a stated subset) and writes ``RUN/faithfulness.json`` with
per-method means and 95 % bootstrap intervals, and ``faithfulness.png`` (an example panel). The
method with the better combined score (insertion minus deletion AUC) is ``chosen`` only when it
beats Grad-CAM; the export serves the chosen one (:func:`chosen_method`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tumorlib.contracts.runs import FAITHFULNESS_FILE, write_json

GRADCAM, GRADCAM_PP, RANDOM = "gradcam", "gradcam++", "random"
HEATMAP_METHODS = (GRADCAM, GRADCAM_PP)
DEFAULT_METHOD = GRADCAM  # served unless a run's measurement chose another
DEFAULT_STEPS = 16


def chosen_method(run_path: str | os.PathLike) -> str:
    """The heatmap method the run's faithfulness measurement chose, else Grad-CAM."""
    path = Path(run_path) / FAITHFULNESS_FILE
    try:
        chosen = json.loads(path.read_text()).get("chosen")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_METHOD
    return chosen if chosen in HEATMAP_METHODS else DEFAULT_METHOD


def pixel_order(heatmap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flat pixel indices, most important first; ties (e.g. a zero region) in random order."""
    flat = np.asarray(heatmap, np.float64).ravel()
    return np.lexsort((rng.random(flat.size), -flat))


def perturbation_batch(
    image: np.ndarray, start: np.ndarray, end: np.ndarray, order: np.ndarray, steps: int
) -> np.ndarray:
    """``steps + 1`` images going from ``start`` to ``end`` by moving pixels in ``order``.

    Step ``t`` holds ``end``'s value at the first ``round(t / steps * P)`` pixels of ``order``.
    """
    size = image.shape[0] * image.shape[1]
    rank = np.empty(size, np.int64)
    rank[order] = np.arange(size)
    rank = rank.reshape(image.shape[:2])
    counts = np.round(np.linspace(0, size, steps + 1)).astype(np.int64)
    moved = rank[None, :, :, None] < counts[:, None, None, None]
    return np.where(moved, end[None], start[None]).astype(np.float32)


def area(curve: np.ndarray) -> np.ndarray:
    """Area under probability curves sampled evenly on [0, 1] (trapezoid), per row."""
    curve = np.atleast_2d(curve)
    return ((curve[:, 1:] + curve[:, :-1]) / 2).mean(axis=1)


def blurred(images: np.ndarray) -> np.ndarray:
    """Insertion's starting point: a Gaussian blur (sigma ~ 1/20 of the side, as in the paper)."""
    from scipy.ndimage import gaussian_filter

    sigma = max(1.0, images.shape[1] / 20)
    return np.stack([gaussian_filter(x, sigma=(sigma, sigma, 0)) for x in images])


def random_maps(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Random maps as coarse as the heatmaps (one value per 32 x 32 pixels, bilinear).

    The fair floor: a random order of single pixels salts the whole slice at once and drives
    the probability down faster than any region-sized order, a property of the perturbation,
    not of a map (measured: it "beats" Grad-CAM on deletion).
    """
    from scipy.ndimage import zoom

    cells = max(1, size // 32)
    coarse = rng.random((n, cells, cells))
    return np.stack([zoom(c, size / cells, order=1)[:size, :size] for c in coarse])


def heatmaps(model, images: np.ndarray, method: str, class_index: np.ndarray) -> np.ndarray:
    """``[N, S, S]`` maps of ``method`` for ``class_index`` (normalised images)."""
    import tensorflow as tf

    from tumorlib.model.gradcam import gradcam

    _, maps = gradcam(model, tf.constant(images), tf.constant(class_index), method=method)
    return maps.numpy()


def measure(
    model,
    images: np.ndarray,
    *,
    methods: Sequence[str] = (*HEATMAP_METHODS, RANDOM),
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Per-image deletion/insertion AUCs (and mean curves) of each method on ``images``.

    ``images``: normalised ``[N, S, S, 3]``. The explained class is the model's prediction; the
    probability tracked is the model's own softmax for it.
    """
    rng = np.random.default_rng(seed)
    predicted = np.argmax(_probabilities(model, images, batch_size), axis=1)
    black = np.full_like(images[0], -1.0)
    starts = blurred(images)
    result: dict[str, Any] = {"class_index": predicted.tolist(), "methods": {}}
    for method in methods:
        deletion, insertion = [], []
        for lo in range(0, len(images), batch_size):
            chunk = slice(lo, lo + batch_size)
            if method == RANDOM:
                maps = random_maps(rng, len(images[chunk]), images.shape[1])
            else:
                maps = heatmaps(model, images[chunk], method, predicted[chunk])
            for image, start, heat, target in zip(
                images[chunk], starts[chunk], maps, predicted[chunk]
            ):
                order = pixel_order(heat, rng)
                both = np.concatenate(
                    [
                        perturbation_batch(image, image, black, order, steps),
                        perturbation_batch(image, start, image, order, steps),
                    ]
                )
                p = _probabilities(model, both, 2 * (steps + 1))[:, target]
                deletion.append(p[: steps + 1])
                insertion.append(p[steps + 1 :])
        result["methods"][method] = {
            "deletion_curves": np.asarray(deletion),
            "insertion_curves": np.asarray(insertion),
        }
    return result


def _probabilities(model, images: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate(
        [
            np.asarray(model(images[i : i + batch_size], training=False))
            for i in range(0, len(images), batch_size)
        ]
    )


def summarise(measured: dict[str, Any], *, seed: int = 0) -> dict[str, Any]:
    """Means with 95 % bootstrap intervals per method; paired differences against Grad-CAM."""
    rng = np.random.default_rng(seed)
    methods = measured["methods"]
    n = len(measured["class_index"])
    draws = rng.integers(0, n, (1000, n))
    summary: dict[str, Any] = {}
    per_image = {}
    for name, curves in methods.items():
        d, i = area(curves["deletion_curves"]), area(curves["insertion_curves"])
        per_image[name] = (d, i)
        summary[name] = {
            "deletion_auc": _interval(d, draws),
            "insertion_auc": _interval(i, draws),
            "score": _interval(i - d, draws),  # higher is more faithful
            "mean_deletion_curve": curves["deletion_curves"].mean(axis=0).round(4).tolist(),
            "mean_insertion_curve": curves["insertion_curves"].mean(axis=0).round(4).tolist(),
        }
    if GRADCAM in per_image:
        base = per_image[GRADCAM][1] - per_image[GRADCAM][0]
        for name, (d, i) in per_image.items():
            if name != GRADCAM:
                summary[name]["score_minus_gradcam"] = _interval((i - d) - base, draws)
    return summary


def _interval(values: np.ndarray, draws: np.ndarray) -> dict[str, float]:
    means = values[draws].mean(axis=1)
    return {
        "mean": round(float(values.mean()), 4),
        "low": round(float(np.percentile(means, 2.5)), 4),
        "high": round(float(np.percentile(means, 97.5)), 4),
    }


def choose(summary: dict[str, Any]) -> str:
    """Grad-CAM unless an alternative's paired score interval lies wholly above Grad-CAM's."""
    best = DEFAULT_METHOD
    for name in HEATMAP_METHODS:
        gain = summary.get(name, {}).get("score_minus_gradcam")
        if (
            gain
            and gain["low"] > 0
            and gain["mean"]
            > summary.get(best, {}).get("score_minus_gradcam", {"mean": 0.0})["mean"]
        ):
            best = name
    return best


def write_report(folder: Path, report: dict[str, Any]) -> Path:
    write_json(folder / FAITHFULNESS_FILE, report)
    return folder / FAITHFULNESS_FILE
