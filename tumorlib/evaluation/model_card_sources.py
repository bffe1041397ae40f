"""The model card's view of its sources: what it was trained on, under which licence, and how it
does on each source and sequence (from ``eval/*/metrics.json`` and the served checks)."""

from __future__ import annotations

import json
from typing import Any

from tumorlib.contracts.classes import CLASS_NAMES, DISPLAY_NAMES
from tumorlib.contracts.runs import SAFETY_DIR
from tumorlib.evaluation.model_card_sections import (
    CardInputs,
    _counts_table,
    _eval_figure,
    _figure,
    _pct,
)

# The served checks the main job writes (``tumorlib source-check``), in the run's safety folder.
SOURCE_CHECKS_DIR = "source_checks"

SARTAJ = (
    '**SARTAJ** "Brain Tumor Classification (MRI)" (Bhuvaji et al., 2020; Kaggle and GitHub): '
    "2-D JPEG slices, tumours almost only on contrast-enhanced T1; its authors state no licence "
    "— the project reads it in place and never redistributes it."
)


def trains_on_archive(card: CardInputs) -> bool:
    """Whether the run's training data included the TCGA-LGG archive."""
    return card.dataset.get("config") == "multi_sequence"


def sources_section(card: CardInputs) -> list[str]:
    """Each training source with its licence; the licence the model inherits."""
    md = ["## Training sources and licences", "", f"- {SARTAJ}"]
    lgg = (card.meta or {}).get("lgg")
    if trains_on_archive(card):
        licence = lgg["licence"] if lgg else "CC BY-NC-SA 4.0"
        citation = f" Cite: {lgg['citation']}." if lgg else ""
        md += [
            "- **TCGA-LGG** lower-grade gliomas on FLAIR and pre-contrast T1 with slice-level "
            "no-tumour controls (80 patients; Buda et al., Kaggle `lgg-mri-segmentation`), "
            f"split by patient. Licence: {licence}.{citation}",
            "",
            "> **This model was trained on CC BY-NC-SA 4.0 data: it may be used and shared for "
            "non-commercial purposes only, with attribution, under the same licence.** "
            "`python -m tumorlib.train --sartaj-only` trains without that data.",
        ]
    else:
        md += ["", "Trained on SARTAJ only (`--sartaj-only`): no TCGA-LGG slices."]
    return md + [""]


def counts_by_source_lines(meta: dict[str, Any]) -> list[str]:
    """Split x source x sequence x class counts (the multi-sequence config's metadata)."""
    by = meta.get("counts_by_source")
    if not by:
        return []
    md = [
        "| split | source | sequence | "
        + " | ".join(DISPLAY_NAMES[c] for c in CLASS_NAMES)
        + " | total |",
        "|---|---|---|" + "---|" * (len(CLASS_NAMES) + 1),
    ]
    for split, sources in by.items():
        for source, sequences in sources.items():
            for sequence, per_class in sequences.items():
                counts = " | ".join(str(per_class.get(c, 0)) for c in CLASS_NAMES)
                md.append(
                    f"| {split} | {source} | {sequence} | {counts} | {sum(per_class.values())} |"
                )
    patients = meta.get("lgg", {}).get("patients")
    if patients:
        md += [
            "",
            "TCGA-LGG patients per split: "
            + ", ".join(f"{s} {n}" for s, n in patients.items())
            + f" (whole patients, stratified by {meta['lgg'].get('stratified_by', 'site')}; "
            "no patient in two splits).",
        ]
    return md + [""]


def data_counts_lines(card: CardInputs) -> list[str]:
    """The per-split counts: per source and sequence when there are several, else per class."""
    meta = card.meta or {}
    lines = counts_by_source_lines(meta)
    if lines:
        return lines
    return _counts_table(meta["counts"]) + [""] if meta.get("counts") else []


def per_source_section(card: CardInputs) -> list[str]:
    """Every evaluation that has figures per source and sequence, as a table and a plot."""
    from tumorlib.evaluation.by_source import summary_lines

    keyed = {k: m for k, m in card.evals.items() if m and m.get("by_source")}
    if not keyed:
        return []
    md = ["## Performance per source and sequence", ""]
    for key, metrics in keyed.items():
        command = (
            f"python -m tumorlib.evaluate RUN --config {metrics['config']} "
            f"--split {metrics['split']}"
        )
        md += [f"`{key}` (`{command}`):", "", *summary_lines(metrics["by_source"]), ""]
        md += _eval_figure(card, key, "by_source", "recall by source")
    return md


def served_checks_section(card: CardInputs) -> list[str]:
    """What the exported model said on other data (``tumorlib source-check``), when measured."""
    folder = card.run / SAFETY_DIR / SOURCE_CHECKS_DIR
    reports = sorted(folder.glob("*/source_check.json")) if folder.is_dir() else []
    if not reports:
        return []
    md = [
        "## The served model on other data",
        "",
        "Through the exported `serving_default` with every check on (`tumorlib source-check`). "
        "*Stated* answers are classified and not flagged unfamiliar — what a reader would take "
        "at face value; *wrong* is the class where the source knows it, else tumour vs no "
        "tumour.",
        "",
        "| data | group | n | not a brain MRI | referred | flagged unfamiliar | stated | "
        "stated and wrong |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in reports:
        report = json.loads(path.read_text())
        groups = {"all": report["all"], **report.get("by_collection", {})}
        for name, b in groups.items():
            md.append(
                f"| {report.get('source', path.parent.name)} | {name} | {b['n']} | "
                f"{_pct(b['not_brain_mri'])} | {_pct(b['uncertain'])} | "
                f"{_pct(b['unfamiliar_flag'])} | {_pct(b.get('stated'))} | "
                f"{_pct(b.get('stated_wrong'))} |"
            )
        md.append("")
        md += _figure(card.run, str(path.with_suffix(".png").relative_to(card.run)), path.name)
    return md


def data_section(card: CardInputs) -> list[str]:
    """The dataset, how duplicates were removed and the split counts."""
    ds, meta = card.dataset, card.meta
    archive = (
        " plus the TCGA-LGG archive's FLAIR and pre-contrast T1 slices, split by patient"
        if trains_on_archive(card)
        else ", a single public source with no patient identifiers"
    )
    md = [
        "## Data and de-duplication",
        "",
        f"Dataset `{ds.get('name', card.dataset_name)}` config `{ds.get('config', 'clean')}` "
        f'version {ds.get("version", "?")}: the public SARTAJ "Brain Tumor Classification '
        f'(MRI)" collection of 2-D JPEG slices (Kaggle){archive}.',
        "",
    ]
    if not meta:
        return md + ["Dataset metadata (`metadata.json`) not found; pass `--data-dir`.", ""]
    removed_exact = sum(meta.get("removed_exact_duplicate", {}).values())
    removed_conflict = sum(meta.get("removed_label_conflict", {}).values())
    md += [
        f"SARTAJ's published train/test folders share many identical and near-identical "
        f"images, so the `clean` split groups near-duplicates (cosine similarity ≥ "
        f"{meta.get('near_duplicate_cosine', '?')} of thumbnails) into "
        f"{meta.get('num_groups', '?')} groups and splits by group, so no image has a "
        f"copy across splits. {removed_exact} exact duplicates were dropped and "
        f"{removed_conflict} images removed from {meta.get('conflicting_groups', '?')} "
        f"groups whose copies carried conflicting labels. Split seed "
        f"{meta.get('split_seed', '?')}.",
        "",
    ]
    md += data_counts_lines(card)
    return md + [f"(Source: `{card.meta_path}`.)", ""]
