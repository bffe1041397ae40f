"""A run's pseudo-study figures: predictions of validation and test, the rule chosen on validation,
its figures on test with bootstrap intervals, a JSON report and a plot (``tumorlib study
evaluate``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from tumorlib.contracts.runs import (
    SAFETY_DIR,
    STUDY_RULE_FILE,
    TEST_PREDICTIONS_FILE,
    VALIDATION_PREDICTIONS_FILE,
    RunNotFoundError,
    load_run,
    write_json,
)
from tumorlib.studies.pseudo_studies import (
    BOOTSTRAP_ROUNDS,
    GRID,
    MAX_REFER_RATE,
    N_LESION,
    N_SLICES,
    REPORT_JSON,
    REPORT_PLOT,
    SEED,
    STUDIES_PER_CLASS,
    bootstrap_intervals,
    choose_rule,
    make_pseudo_studies,
    predict_studies,
    study_metrics,
)
from tumorlib.studies.verdict import StudyRule

# -- a run's figures ------------------------------------------------------------------------------


def load_predictions(run_path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A run's saved per-slice probabilities and labels for ``validation`` or ``test``."""
    name = {"validation": VALIDATION_PREDICTIONS_FILE, "test": TEST_PREDICTIONS_FILE}[split]
    path = Path(run_path) / SAFETY_DIR / name
    if not path.exists():
        raise RunNotFoundError(
            f"{path} does not exist; run `python -m tumorlib.abstention {run_path}` first "
            "(it saves the validation and test predictions)"
        )
    with np.load(path) as saved:
        return np.asarray(saved["probabilities"], float), np.asarray(saved["labels"], int)


def evaluate_run(
    run_path: str | Path,
    out_dir: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    groups: dict[str, np.ndarray | None] | None = None,
    per_class: int = STUDIES_PER_CLASS,
    seed: int = SEED,
    max_refer_rate: float = MAX_REFER_RATE,
    save_rule: bool = True,
    bootstrap_rounds: int = BOOTSTRAP_ROUNDS,
) -> dict:
    """Choose the rule on validation pseudo-studies, measure it on test; write JSON and a PNG.

    With ``save_rule`` the chosen rule is also written into the run (``study_rule.json``), so
    the next export ships it and ``serving.clients.study`` applies it.

    ``groups`` (per split) default to the dataset's near-duplicate groups when it is built here,
    else none (lesion slices are then random slices of the class; the report says which).
    """
    from tumorlib.contracts.classes import CLASS_NAMES

    names = list(class_names or CLASS_NAMES)
    groups = (
        groups
        if groups is not None
        else {s: _dataset_groups(s, _dataset_config(run_path)) for s in ("validation", "test")}
    )
    out: dict[str, Any] = {}
    made = {}
    pools = {}
    for offset, split in enumerate(("validation", "test")):
        probs, labels = load_predictions(run_path, split)
        split_groups = groups.get(split)
        if split_groups is not None and len(split_groups) != len(labels):
            split_groups = None  # not the split these predictions came from
        studies = make_pseudo_studies(
            labels, names, groups=split_groups, per_class=per_class, seed=seed + offset
        )
        made[split] = (studies, probs)
        pools[split] = (labels, split_groups)
        out[split] = {
            "n_slices": int(labels.size),
            "slices_per_class": {n: int((labels == i).sum()) for i, n in enumerate(names)},
            "lesion_slices_from_groups": split_groups is not None,
        }
    rule, validation = choose_rule(*made["validation"], names, max_refer_rate=max_refer_rate)
    rule = StudyRule(
        **{
            **asdict(rule),
            "chosen_on": "validation pseudo-studies (tumorlib.studies.pseudo_studies)",
        }
    )
    test_studies, test_probs = made["test"]
    truth = np.asarray([s.label for s in test_studies])
    test = study_metrics(truth, predict_studies(test_studies, test_probs, names, rule), names)
    default = study_metrics(
        truth, predict_studies(test_studies, test_probs, names, StudyRule()), names
    )
    report = {
        "run": str(run_path),
        "design": {
            "studies_per_class": per_class,
            "slices_per_study": list(N_SLICES),
            "lesion_slices_per_tumour_study": list(N_LESION),
            "no_tumor_slices_drawn_with_replacement": True,
            "seed": seed,
            "objective": (
                "maximise the accuracy of stated verdicts with a refer rate <= "
                f"{max_refer_rate:.0%} on validation pseudo-studies"
            ),
            "grid": {k: list(v) for k, v in GRID.items()},
        },
        "splits": out,
        "rule": asdict(rule),
        "rule_json": rule.to_json(),
        "validation": validation,
        "test": test,
        "test_with_default_rule": default,
        "test_intervals_95": (
            bootstrap_intervals(
                pools["test"][0],
                test_probs,
                names,
                rule,
                groups=pools["test"][1],
                per_class=per_class,
                rounds=bootstrap_rounds,
                seed=seed,
            )
            if bootstrap_rounds
            else {}
        ),
        "test_intervals_method": (
            f"{bootstrap_rounds} rounds: test slices resampled per class with replacement, "
            "pseudo-studies rebuilt, the chosen rule applied; 2.5th-97.5th percentiles"
        ),
    }
    out_dir = Path(out_dir)
    report["plot"] = str(plot_report(report, out_dir / REPORT_PLOT))
    write_json(out_dir / REPORT_JSON, report)
    if save_rule:
        write_json(Path(run_path) / STUDY_RULE_FILE, asdict(rule))
    return report


def _dataset_config(run_path: str | Path) -> str:
    """The dataset config the run was trained on (``clean`` for a folder without its record)."""
    try:
        return load_run(run_path).dataset_config
    except RunNotFoundError:
        return "clean"


def _dataset_groups(split: str, config: str) -> np.ndarray | None:
    """The built dataset's groups for ``split`` (near-duplicate groups; a TCGA-LGG patient is one
    group), or None when it is not built here."""
    try:
        from tumorlib.evaluation.predictions import split_groups

        return split_groups(split, config, None)
    except (FileNotFoundError, ValueError, ImportError):
        return None


def plot_report(report: dict, path: Path) -> Path:
    """Test confusion matrix (rows: truth) and per-class recall / refer rate, validation vs test."""
    import matplotlib.pyplot as plt

    from tumorlib.evaluation.plots import save_figure

    matrix = np.asarray(report["test"]["confusion_matrix"]["counts"])
    rows = report["test"]["confusion_matrix"]["rows"]
    columns = report["test"]["confusion_matrix"]["columns"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        colour = "white" if value > matrix.max() / 2 else "black"
        left.text(j, i, str(value), ha="center", va="center", color=colour)
    left.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    left.set_yticks(range(len(rows)), rows)
    left.set_xlabel("study verdict")
    left.set_ylabel("true class of the pseudo-study")
    left.set_title("Test pseudo-studies")
    x = np.arange(len(rows))
    for offset, split in ((-0.2, "validation"), (0.2, "test")):
        recall = [report[split]["recall"][n] or 0.0 for n in rows]
        refer = [report[split]["refer_rate_by_class"][n] or 0.0 for n in rows]
        right.bar(x + offset, recall, width=0.4, label=f"{split} recall", alpha=0.8)
        right.bar(x + offset, refer, width=0.4, bottom=recall, label=f"{split} referred", alpha=0.4)
    right.set_xticks(x, rows, rotation=30, ha="right")
    right.set_ylim(0, 1.05)
    right.set_ylabel("fraction of studies")
    right.legend(fontsize=8, loc="lower left")
    test = report["test"]
    right.set_title(
        f"test: accuracy {test['accuracy']:.3f}, stated {test['stated_accuracy'] or 0:.3f}, "
        f"referred {test['refer_rate']:.1%}",
        fontsize=10,
    )
    return save_figure(fig, path)


def summary_lines(report: dict) -> list[str]:
    """The figures in a few lines for the terminal."""
    rule = StudyRule(**{k: v for k, v in report["rule"].items()})
    lines = [f"rule (chosen on validation pseudo-studies): {rule.describe()}"]
    for split in ("validation", "test", "test_with_default_rule"):
        m = report[split]
        recall = ", ".join(f"{n} {v:.3f}" for n, v in m["recall"].items() if v is not None)
        lines.append(
            f"{split}: {m['n_studies']} studies, accuracy {m['accuracy']:.3f}, accuracy of stated "
            f"verdicts {m['stated_accuracy'] or 0:.3f}, referred {m['refer_rate']:.1%}, missed "
            f"tumours {m['missed_tumour_rate'] or 0:.1%}; recall: {recall}"
        )
    intervals = report.get("test_intervals_95") or {}
    if intervals:
        lines.append(
            "test 95% intervals (slices resampled, studies rebuilt): "
            + ", ".join(f"{k} {lo:.3f}-{hi:.3f}" for k, (lo, hi) in intervals.items())
        )
    matrix = report["test"]["confusion_matrix"]
    lines.append(f"confusion matrix (test; rows truth, columns {matrix['columns']}):")
    for name, row in zip(matrix["rows"], matrix["counts"]):
        lines.append(f"  {name:>11}: {row}")
    return lines


def main(argv: list[str] | None = None) -> int:
    from tumorlib.contracts.cli import run_command

    parser = argparse.ArgumentParser(
        prog="python -m tumorlib.pseudo_studies",
        description="Choose the study rule on validation pseudo-studies; report it on test.",
    )
    parser.add_argument("run")
    parser.add_argument("--out", default="reports/studies")
    args = parser.parse_args(argv)

    def body() -> None:
        report = evaluate_run(args.run, Path(args.out))
        print("\n".join(summary_lines(report)))

    return run_command(body)


if __name__ == "__main__":
    raise SystemExit(main())
