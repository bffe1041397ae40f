"""The model card's safety sections: abstention, the input gate and the limitations they leave."""

from __future__ import annotations

from tumorlib.contracts.runs import (
    GATE_PLOT,
    RISK_COVERAGE_PLOT,
    SAFETY_DIR,
)
from tumorlib.contracts.serving_contract import UNCERTAIN_MESSAGE, UNFAMILIAR_MESSAGE
from tumorlib.evaluation.model_card_sections import (
    CardInputs,
    _figure,
    _pct,
)


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
    """What the model is known not to do."""
    if card.dataset.get("config") == "multi_sequence":
        sources = [
            "- **Two public sources**: SARTAJ's JPEG exports (unknown scanners, protocols and "
            "populations, tumours almost only on contrast-enhanced T1) and 80 TCGA-LGG patients "
            "(lower-grade gliomas only, FLAIR and pre-contrast T1). No meningioma or pituitary "
            "tumour on another sequence, no T2; performance elsewhere is measured only on the "
            "second source and likely lower.",
            "- **SARTAJ has no patient IDs**: its slices of one patient may sit in different "
            "splits despite near-duplicate grouping (TCGA-LGG is split by patient).",
        ]
    else:
        sources = [
            "- **Single public source**: one Kaggle collection of JPEG exports, of unknown "
            "scanners, protocols and populations; performance elsewhere is unknown and likely "
            "lower. No external validation.",
            "- **No patient IDs**: slices of one patient may sit in different splits despite "
            "near-duplicate grouping, so test figures may be optimistic.",
        ]
    return [
        "## Limitations",
        "",
        "- **2-D slices only**: each slice is classified alone; a radiologist reads the whole "
        "study, several sequences and the clinical history.",
        *sources,
        "- Labels come from the collections, not from histopathology we could verify; some "
        "source images carried conflicting labels and were removed.",
        "- Three tumour types only; every other finding is forced into one of four classes "
        "unless abstention or the gate stops it.",
        "- Grad-CAM heatmaps show where the model looked, at 1/32 of the input resolution; "
        "they are not segmentations and can highlight non-anatomical cues.",
        "",
    ]
