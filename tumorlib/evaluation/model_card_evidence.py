"""The model card's evidence section: is the heatmap faithful, and do similar cases agree?

Reads what :mod:`tumorlib.evaluation.faithfulness_report` and
:mod:`tumorlib.evaluation.retrieval_agreement` wrote into the run folder; a measurement that is
missing is said to be missing, with the command that makes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tumorlib.contracts.runs import FAITHFULNESS_FILE, FAITHFULNESS_PANEL, RETRIEVAL_AGREEMENT_FILE
from tumorlib.evaluation.model_card_sections import CardInputs

NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "random": "random order (floor)"}
SETS = {"validation": "validation (rule chosen here)", "clean_test": "`clean/test`",
        "second_source": "second source (tumour vs none)"}  # fmt: skip


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _ci(row: dict[str, float]) -> str:
    return f"{row['mean']:.3f} ({row['low']:.3f}–{row['high']:.3f})"


def faithfulness_lines(run: Path) -> list[str]:
    report = _read(run / FAITHFULNESS_FILE)
    if report is None:
        return ["Heatmap faithfulness: not yet measured "
                "(`python -m tumorlib.evaluation.faithfulness_report RUN`).", ""]  # fmt: skip
    subset = " (a seeded subset)" if report.get("subset") else ""
    lines = [
        f"Deletion / insertion (Petsiuk et al., 2018) on {report['data']}, "
        f"{report['images']} slices{subset}, {report['steps']} steps: pixels are removed (to "
        "black) or revealed (from a blur) in the map's order while the predicted class's "
        "probability is tracked. Lower deletion AUC and higher insertion AUC are better; 95 % "
        "bootstrap intervals.",
        "",
        "| heatmap | deletion AUC ↓ | insertion AUC ↑ | insertion − deletion ↑ |",
        "|---|---|---|---|",
    ]
    for name, row in report["methods"].items():
        lines.append(f"| {NAMES.get(name, name)} | {_ci(row['deletion_auc'])} | "
                     f"{_ci(row['insertion_auc'])} | {_ci(row['score'])} |")  # fmt: skip
    lines += ["", f"Served in `explain`: **{NAMES.get(report['chosen'], report['chosen'])}** "
              "(an alternative replaces Grad-CAM only when its paired score interval lies wholly "
              "above Grad-CAM's)."]  # fmt: skip
    if (run / FAITHFULNESS_PANEL).exists():
        alt = "A median example: the slice, each heatmap, its curves"
        lines += ["", f"![{alt}]({FAITHFULNESS_PANEL})"]
    return [*lines, ""]


def agreement_lines(run: Path) -> list[str]:
    report = _read(run / RETRIEVAL_AGREEMENT_FILE)
    if report is None:
        return ["Retrieval agreement: not yet measured "
                "(`python -m tumorlib.evaluation.retrieval_agreement RUN`).", ""]  # fmt: skip
    lines = [
        f"Similar cases: the majority label of the {report['k']} nearest training slices "
        f"({report['index']}, cosine in the model's penultimate features) against the model.",
        "",
        "| set | slices | agree | accuracy when they agree | when they disagree | errors flagged |",
        "|---|---|---|---|---|---|",
    ]
    for key, row in report["sets"].items():
        if "skipped" in row:
            lines.append(f"| {SETS.get(key, key)} | skipped: {row['skipped']} | | | | |")
            continue
        lines.append(
            f"| {SETS.get(key, key)} | {row['n']} | {row['agreement']:.1%} | "
            f"{row['accuracy_when_agree']:.1%} | "
            + ("n/a" if row["accuracy_when_disagree"] is None
               else f"{row['accuracy_when_disagree']:.1%} ({row['disagree']})")
            + f" | {row['errors_flagged_by_disagreement']} of {row['errors']} |"
        )  # fmt: skip
    rule = report["refer_rule"]
    verdict = "offered as a refer reason" if rule["adopted"] else "not used as a refer reason"
    lines += ["", f"Disagreement is **{verdict}**: on validation a disagreeing answer was wrong "
              f"{rule['error_ratio_on_validation']}x as often, {rule['flagged_on_validation']:.1%} "
              f"flagged ({rule['criterion']})."]  # fmt: skip
    return [*lines, ""]


def evidence_section(card: CardInputs) -> list[str]:
    """Heatmap faithfulness and retrieval agreement, as measured for this run."""
    return ["## Evidence: heatmap faithfulness and similar cases", "",
            *faithfulness_lines(card.run), *agreement_lines(card.run)]  # fmt: skip
