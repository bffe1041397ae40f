"""The sections of the model card, one builder each, from what the run folder holds.

Each builder takes the :class:`CardInputs` read from the run folder and returns Markdown lines;
a measurement that is missing is said to be missing, never invented.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tumorlib.contracts.classes import CLASS_NAMES, DISPLAY_NAMES
from tumorlib.contracts.runs import (
    EVAL_DIR,
    SAFETY_DIR,
    TEST_PREDICTIONS_FILE,
)
from tumorlib.contracts.serving_contract import DISCLAIMER


@dataclass
class CardInputs:
    """Everything the card reports, as read from the run folder (``None``: not measured)."""

    run: Path
    config: dict[str, Any]
    dataset_name: str
    calibration: dict[str, Any] = field(default_factory=dict)
    abstention: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    evals: dict[str, dict | None] = field(default_factory=dict)
    meta: dict[str, Any] | None = None
    meta_path: Path | None = None

    @property
    def dataset(self) -> dict[str, Any]:
        return self.config.get("dataset", {})


def _ci(t: dict[str, float]) -> str:
    return f"{t['value']:.3f} ({t['low']:.3f}–{t['high']:.3f})"


def _pct(x: float | None) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f} %"


def _counts_table(counts: dict[str, dict[str, int]]) -> list[str]:
    splits = list(counts)
    lines = ["| class | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
    for name in CLASS_NAMES:
        lines.append(
            f"| {DISPLAY_NAMES[name]} | "
            + " | ".join(str(counts[s].get(name, 0)) for s in splits)
            + " |"
        )
    lines.append("| **total** | " + " | ".join(str(sum(counts[s].values())) for s in splits) + " |")
    return lines


def _figure(run: Path, rel: str, caption: str) -> list[str]:
    return [f"![{caption}]({rel})", ""] if (run / rel).is_file() else []


def _eval_figure(card: CardInputs, key: str, kind: str, caption: str) -> list[str]:
    from tumorlib.evaluation.evaluate import PLOT_FILES

    return _figure(card.run, f"{EVAL_DIR}/{key}/{PLOT_FILES[kind]}", f"{key} {caption}")


def ensemble_lines(ensemble: dict | None) -> list[str]:
    """One line naming an ensemble's members (tumorlib.training.ensemble_run); nothing for a single
    run."""
    if not ensemble:
        return []
    members = ", ".join(
        f"{m['image_size']} px (run `{Path(m['run']).name}`, seed {m.get('seed')})"
        for m in ensemble["members"]
    )
    tta = ", each also on the left-right mirrored slice (TTA)" if ensemble.get("tta") else ""
    return [f"- Ensemble members: {members}; {ensemble['combination']}{tta}."]


def header(card: CardInputs) -> list[str]:
    """Title, provenance and the decision-support warning."""
    return [
        f"# Model card: brain MRI tumour classifier (run `{card.run.name}`)",
        "",
        f"*Generated {dt.date.today().isoformat()} by `python -m tumorlib.model_card` from the "
        "run's own outputs.*",
        "",
        f"> **{DISCLAIMER}** Every result must be reviewed by a qualified radiologist.",
        "",
    ]


def model_section(card: CardInputs) -> list[str]:
    """Architecture, weights, head settings, classes and temperature."""
    config, calibration = card.config, card.calibration
    return [
        "## Model",
        "",
        f"- Architecture: {config.get('architecture', 'MobileNetV2 -> pooling -> head')}; "
        f"width multiplier α = {config.get('alpha')}, input {config.get('image_size')}×"
        f"{config.get('image_size')} RGB (grayscale slices replicated), normalised to [-1, 1].",
        *ensemble_lines(config.get("ensemble")),
        f"- Starting weights: {config.get('weights')}.",
        f"- Head: dropout {config.get('dropout')}, hidden units {config.get('head_units')}; "
        f"label smoothing {config.get('label_smoothing', 'n/a')}; seed {config.get('seed')}.",
        f"- Classes: {', '.join(DISPLAY_NAMES[c] for c in CLASS_NAMES)}.",
        f"- Temperature scaling: T = {calibration.get('temperature', 1.0):.3f} "
        f"(fitted on {calibration.get('fitted_on', 'the validation split')}).",
        "",
    ]


def use_sections(card: CardInputs) -> list[str]:
    """Intended and out-of-scope use: what the model is for, given what it was trained on."""
    sequences = (
        "contrast-enhanced T1, FLAIR or pre-contrast T1"
        if card.dataset.get("config") == "multi_sequence"
        else "T1-weighted contrast-enhanced"
    )
    return [
        "## Intended use",
        "",
        f"- Decision support for clinicians reviewing single axial/coronal/sagittal {sequences} "
        "brain MRI slices, to flag a likely tumour type for review.",
        "- Research and teaching on trustworthy medical image classification.",
        "",
        "## Out-of-scope use",
        "",
        "- Diagnosis, treatment or triage decisions without a radiologist.",
        "- Whole 3-D studies, other sequences (T2, diffusion, ...) or body parts, children's "
        "scans, post-operative "
        "images, or tumour types other than the three classes (the model always answers one "
        "of its four classes; the input gate and abstention reduce but do not remove this).",
        "- Any population or scanner not represented in the source collection.",
        "",
    ]


def _bootstrap_lines(card: CardInputs) -> list[str]:
    from tumorlib.evaluation.bootstrap import bootstrap_metrics

    preds = card.run / SAFETY_DIR / TEST_PREDICTIONS_FILE
    if not preds.is_file():
        return [
            "Confidence intervals need the test predictions "
            "(`python -m tumorlib.abstention RUN` writes them): not yet measured.",
            "",
        ]
    with np.load(preds) as z:
        probs, labels = z["probabilities"], z["labels"]
    boot = bootstrap_metrics(labels, probs.argmax(axis=1))
    md = [
        f"`{card.dataset.get('config', 'clean')}` test split, {len(labels)} slices; "
        f"{int(100 * boot['level'])} % percentile bootstrap intervals "
        f"({boot['samples']} resamples):",
        "",
        f"- Accuracy {_ci(boot['accuracy'])}; macro-F1 {_ci(boot['macro_f1'])}.",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for name, m in boot["per_class"].items():
        md.append(
            f"| {DISPLAY_NAMES[name]} | {_ci(m['precision'])} | {_ci(m['recall'])} | "
            f"{_ci(m['f1'])} | {m['support']} |"
        )
    return md + [""]


def performance_section(card: CardInputs) -> list[str]:
    """Bootstrap intervals on test, then every evaluation's headline numbers and figures."""
    md = ["## Performance", "", *_bootstrap_lines(card)]
    if not card.evals:
        return md
    md += [
        "All evaluations (`python -m tumorlib.evaluate`):",
        "",
        "| evaluation | accuracy | macro-F1 |",
        "|---|---|---|",
    ]
    for key, m in card.evals.items():
        if m:
            md.append(
                f"| {key} | {m.get('accuracy', float('nan')):.3f} | "
                f"{m.get('macro_f1', float('nan')):.3f} |"
            )
    md.append("")
    for key in card.evals:
        md += _eval_figure(card, key, "confusion_counts", "confusion matrix")
        md += _eval_figure(card, key, "roc", "ROC curves")
    return md


def calibration_section(card: CardInputs) -> list[str]:
    """ECE before/after temperature scaling, and the reliability diagrams."""
    calibration = card.calibration
    md = ["## Calibration", ""]
    if "ece_before" in calibration:
        md += [
            f"Expected calibration error on validation: {calibration['ece_before']:.3f} before "
            f"and {calibration['ece_after']:.3f} after temperature scaling "
            f"(T = {calibration['temperature']:.3f}).",
            "",
        ]
    else:
        md += ["Not yet measured.", ""]
    for key in card.evals:
        md += _eval_figure(card, key, "reliability", "reliability diagram")
    return md
