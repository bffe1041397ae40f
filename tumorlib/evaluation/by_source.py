"""Figures per source and sequence: SARTAJ's slices and the TCGA-LGG archive's FLAIR and T1 apart.

Why apart: one accuracy over a mixed split hides exactly what matters — a model can be right on
contrast-enhanced T1 and blind to gliomas on FLAIR. Every stratum reports its own recalls, and
the archive's strata (glioma and no-tumour slices only) also report how their slices were called
and tumour-vs-no-tumour accuracy, the question they can answer.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tumorlib.contracts.classes import CLASS_NAMES

NO_TUMOR = CLASS_NAMES.index("no_tumor")


def split_strata(
    split: str, config: str, data_dir: str | os.PathLike | None
) -> dict[str, np.ndarray]:
    """``source``, ``sequence`` and ``patient`` of a split in source order (no image decoding);
    the stratum of each example is ``source`` or ``source/sequence``."""
    from tumorlib.data.pipeline import get_builder, load_split

    info = get_builder(config, data_dir).info.features
    examples = load_split(split, config, data_dir).map(
        lambda e: (e["source"], e["sequence"], e["patient"])
    )
    sources, sequences, patients = [], [], []
    for source, sequence, patient in examples.batch(4096).as_numpy_iterator():
        sources += [info["source"].int2str(int(s)) for s in source]
        sequences += [info["sequence"].int2str(int(s)) for s in sequence]
        patients += [p.decode() for p in patient]
    return {
        "source": np.asarray(sources),
        "sequence": np.asarray(sequences),
        "patient": np.asarray(patients),
        "stratum": np.asarray(
            [s if q == "unknown" else f"{s}/{q}" for s, q in zip(sources, sequences)]
        ),
    }


def stratum_metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Accuracy, per-class recall (classes present), tumour-vs-no-tumour accuracy, and how each
    true class was called."""
    out: dict[str, Any] = {
        "n": int(len(labels)),
        "accuracy": float(np.mean(predictions == labels)) if len(labels) else None,
        "tumour_vs_no_tumour_accuracy": float(
            np.mean((predictions == NO_TUMOR) == (labels == NO_TUMOR))
        )
        if len(labels)
        else None,
        "recall": {},
        "called": {},
    }
    for i, name in enumerate(CLASS_NAMES):
        mask = labels == i
        if mask.any():
            out["recall"][name] = float(np.mean(predictions[mask] == i))
            counts = np.bincount(predictions[mask], minlength=len(CLASS_NAMES))
            out["called"][name] = dict(zip(CLASS_NAMES, map(int, counts)))
    return out


def metrics_by_stratum(
    probabilities: np.ndarray, labels: np.ndarray, strata: np.ndarray
) -> dict[str, dict[str, Any]]:
    """:func:`stratum_metrics` of every stratum (``sartaj``, ``tcga_lgg/flair``, ...)."""
    predictions = np.asarray(probabilities).argmax(axis=1)
    labels = np.asarray(labels)
    return {
        name: stratum_metrics(predictions[strata == name], labels[strata == name])
        for name in sorted(set(strata.tolist()))
    }


def summary_lines(by_stratum: dict[str, dict[str, Any]]) -> list[str]:
    """A Markdown table: one row per stratum, its recalls and tumour-vs-no-tumour accuracy."""
    lines = [
        "| stratum | n | accuracy | tumour vs no tumour | "
        + " | ".join(f"recall {c}" for c in CLASS_NAMES)
        + " |",
        "|---|---|---|---|" + "---|" * len(CLASS_NAMES),
    ]
    for name, m in by_stratum.items():
        recalls = " | ".join(
            f"{m['recall'][c]:.3f}" if c in m["recall"] else "" for c in CLASS_NAMES
        )
        lines.append(
            f"| {name} | {m['n']} | {m['accuracy']:.3f} | "
            f"{m['tumour_vs_no_tumour_accuracy']:.3f} | {recalls} |"
        )
    return lines
