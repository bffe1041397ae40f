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

from tumorlib.classes import CLASS_NAMES, DISPLAY_NAMES
from tumorlib.runs import (
    EVAL_DIR,
    GATE_PLOT,
    RISK_COVERAGE_PLOT,
    SAFETY_DIR,
    TEST_PREDICTIONS_FILE,
)
from tumorlib.serving_contract import DISCLAIMER, UNCERTAIN_MESSAGE, UNFAMILIAR_MESSAGE


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
    from tumorlib.evaluate import PLOT_FILES

    return _figure(card.run, f"{EVAL_DIR}/{key}/{PLOT_FILES[kind]}", f"{key} {caption}")


def ensemble_lines(ensemble: dict | None) -> list[str]:
    """One line naming an ensemble's members (tumorlib.ensemble); nothing for a single run."""
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


def data_section(card: CardInputs) -> list[str]:
    """The dataset, how duplicates were removed and the split counts."""
    ds, meta = card.dataset, card.meta
    md = [
        "## Data and de-duplication",
        "",
        f"Dataset `{ds.get('name', card.dataset_name)}` config `{ds.get('config', 'clean')}` "
        f'version {ds.get("version", "?")}: the public SARTAJ "Brain Tumor Classification '
        '(MRI)" collection of 2-D JPEG slices (Kaggle), a single public source with no '
        "patient identifiers.",
        "",
    ]
    if not meta:
        return md + ["Dataset metadata (`metadata.json`) not found; pass `--data-dir`.", ""]
    removed_exact = sum(meta.get("removed_exact_duplicate", {}).values())
    removed_conflict = sum(meta.get("removed_label_conflict", {}).values())
    md += [
        f"The published train/test folders share many identical and near-identical "
        f"images, so the `clean` config groups near-duplicates (cosine similarity ≥ "
        f"{meta.get('near_duplicate_cosine', '?')} of thumbnails) into "
        f"{meta.get('num_groups', '?')} groups and splits by group, so no image has a "
        f"copy across splits. {removed_exact} exact duplicates were dropped and "
        f"{removed_conflict} images removed from {meta.get('conflicting_groups', '?')} "
        f"groups whose copies carried conflicting labels. Split seed "
        f"{meta.get('split_seed', '?')}.",
        "",
    ]
    if meta.get("counts"):
        md += _counts_table(meta["counts"]) + [""]
    return md + [f"(Source: `{card.meta_path}`.)", ""]


def use_sections(card: CardInputs) -> list[str]:
    """Intended and out-of-scope use (fixed text: what the model is for)."""
    return [
        "## Intended use",
        "",
        "- Decision support for clinicians reviewing single axial/coronal/sagittal T1-weighted "
        "contrast-enhanced brain MRI slices, to flag a likely tumour type for review.",
        "- Research and teaching on trustworthy medical image classification.",
        "",
        "## Out-of-scope use",
        "",
        "- Diagnosis, treatment or triage decisions without a radiologist.",
        "- Whole 3-D studies, other sequences or body parts, children's scans, post-operative "
        "images, or tumour types other than the three classes (the model always answers one "
        "of its four classes; the input gate and abstention reduce but do not remove this).",
        "- Any population or scanner not represented in the source collection.",
        "",
    ]


def _bootstrap_lines(card: CardInputs) -> list[str]:
    from tumorlib.bootstrap import bootstrap_metrics

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


def abstention_section(card: CardInputs) -> list[str]:
    """The validation-chosen threshold and what it achieved on test."""
    md = [f'## Abstention ("{UNCERTAIN_MESSAGE}")', ""]
    abstention = card.abstention
    if not abstention:
        return md + ["Not yet measured (`python -m tumorlib.abstention RUN`).", ""]
    c, t = abstention["chosen_on_validation"], abstention["test"]
    md += [
        f"Threshold on temperature-scaled confidence, chosen on validation for accepted "
        f"precision ≥ {c['target_precision']}: **{c['threshold']:.4f}** (validation "
        f"coverage {_pct(c['coverage'])}, precision {_pct(c['precision'])}"
        + ("" if c["reachable"] else "; target unreachable — everything is refused")
        + ").",
        "",
        f"On the test split: coverage **{_pct(t['coverage'])}**, accuracy of accepted "
        f"predictions **{_pct(t['accepted_accuracy'])}** ({t['errors_accepted']} errors "
        f"among {t['accepted']} of {t['total']}), against {_pct(t['overall_accuracy'])} "
        "without abstention.",
        "",
    ]
    per_class = abstention.get("per_class")
    if per_class:
        pc, pt = per_class["chosen_on_validation"], per_class["test"]
        limits = ", ".join(f"{k} {v:.4f}" for k, v in per_class["thresholds_by_class"].items())
        served = abstention.get("rule") == "per_class"
        md += [
            ("**Served:** one" if served else "Also measured: one")
            + f" threshold per predicted class, chosen together on validation for the same "
            f"target ({limits}): validation coverage {_pct(pc['coverage'])}, precision "
            f"{_pct(pc['precision'])}; test coverage **{_pct(pt['coverage'])}**, accepted "
            f"accuracy **{_pct(pt['accepted_accuracy'])}** ({pt['errors_accepted']} errors "
            f"among {pt['accepted']}).",
            "",
        ]
    second = abstention.get("second_source")
    if second:
        rows = [
            f"{name.replace('_', '-')} rule: answered {_pct(v['coverage'])}, "
            f"{_pct(v['answered_tumour_vs_no_tumour_accuracy'])} right on tumour vs no tumour"
            for name, v in second.items()
            if isinstance(v, dict)
        ]
        md += [
            f"On {second['n']} brain MRI slices from two other collections (second source, "
            "measured only): " + "; ".join(rows) + ".",
            "",
        ]
    plot = abstention.get("plot", f"{SAFETY_DIR}/{RISK_COVERAGE_PLOT}")
    return md + _figure(card.run, plot, "risk-coverage")


def gate_section(card: CardInputs) -> list[str]:
    """The brain-MRI check and the familiarity flag: thresholds and measured rates."""
    md = ["## Input gate: is it a brain MRI? is it like the training data?", ""]
    gate = card.gate
    if not gate:
        return md + ["Not yet measured (`python -m tumorlib.input_gate RUN`).", ""]
    layer_text = "; ".join(
        f"`{g['layer']}` (threshold {g['threshold']:.1f}, Ledoit–Wolf shrinkage "
        f"{g['shrinkage']:.3f})"
        for g in gate.get("layers", [])
    )
    md += [
        "An image is classified only if, for every gated backbone layer, the Mahalanobis "
        "distance of its pooled activations to the training slices *and their copies under "
        "acquisition changes* (other contrast, gamma, bias field, blur, noise, frames, burnt-in "
        "text, field of view) is within a threshold set the same way on validation: "
        f"{layer_text}. Combined false-rejection target on validation "
        f"{_pct(gate['false_rejection_target_on_validation'])}."
        + (
            f" The distances' thresholds are widened {gate.get('far_factor', 1)}× (a net for "
            "anything far out); a linear discriminant between those slices and generated "
            "non-MRI images, thresholded on validation, must accept the image too."
            if gate.get("linear_check")
            else ""
        ),
        "",
        f"- False rejection on the test split: **{_pct(gate['test_false_rejection_rate'])}**"
        f" ({gate['test_rejected']} of {gate['test_total']})"
        + (
            f"; on its acquisition-changed copy {_pct(gate['test_changed_false_rejection_rate'])}"
            if "test_changed_false_rejection_rate" in gate
            else ""
        )
        + ".",
        f"- Rejection of generated/packaged non-MRI images: "
        f"**{_pct(gate['negative_rejection_rate'])}** of {gate['negatives_total']}: "
        + ", ".join(
            f"{k} {_pct(v['rate'])} (n={v['n']})"
            for k, v in gate["negative_rejection_by_kind"].items()
        )
        + ".",
        "",
    ]
    views = gate.get("unusable_views_rejection_by_kind")
    if views:
        md += [
            "- Brain MRI in views the model is not for (reported apart; refusing them is "
            "desirable, not required): "
            + ", ".join(f"{k} {_pct(v['rate'])} refused (n={v['n']})" for k, v in views.items())
            + ".",
        ]
    second = gate.get("second_source")
    if second:
        md += [
            f"- Real brain MRI from two other collections (second source, measured only): "
            f"**{_pct(second['rejected_as_not_brain_mri']['rate'])}** refused as not a brain "
            f"MRI (n={second['rejected_as_not_brain_mri']['n']}).",
        ]
    familiarity = gate.get("familiarity")
    if familiarity:
        md += [
            "",
            f'**Familiarity ("{UNFAMILIAR_MESSAGE}").** The same statistics fitted on the '
            "unchanged training slices only. A slice outside them is still classified (and "
            "abstention applies), with a visible flag. Flagged: "
            f"{_pct(familiarity['test_unfamiliar_rate'])} of the test split, "
            f"{_pct(familiarity['test_changed_unfamiliar_rate'])} of its acquisition-changed copy"
            + (f", {_pct(second['unfamiliar']['rate'])} of the second source" if second else "")
            + ".",
        ]
    md += [""]
    md += _figure(card.run, gate.get("plot", f"{SAFETY_DIR}/{GATE_PLOT}"), "input gate distances")
    return md + [
        "No chest X-rays, CT or other-body-part MRI were available offline as real files, and "
        "generated look-alikes would not be honest tests; rejection of those is unmeasured.",
        "",
    ]


def limitations_section(card: CardInputs) -> list[str]:
    """What the model is known not to do (fixed text)."""
    return [
        "## Limitations",
        "",
        "- **2-D slices only**: each slice is classified alone; a radiologist reads the whole "
        "study, several sequences and the clinical history.",
        "- **Single public source**: one Kaggle collection of JPEG exports, of unknown "
        "scanners, protocols and populations; performance elsewhere is unknown and likely "
        "lower. No external validation.",
        "- **No patient IDs**: slices of one patient may sit in different splits despite "
        "near-duplicate grouping, so test figures may be optimistic.",
        "- Labels come from the collection, not from histopathology we could verify; some "
        "source images carried conflicting labels and were removed.",
        "- Three tumour types only; every other finding is forced into one of four classes "
        "unless abstention or the gate stops it.",
        "- Grad-CAM heatmaps show where the model looked, at 1/32 of the input resolution; "
        "they are not segmentations and can highlight non-anatomical cues.",
        "",
    ]


SECTIONS = (
    header,
    model_section,
    data_section,
    use_sections,
    performance_section,
    calibration_section,
    abstention_section,
    gate_section,
    limitations_section,
)
