"""Pseudo-studies: an honest-as-possible study-level evaluation without labelled volumes.

Why: the dataset is 2-D slices without patient IDs, so no labelled series exists to choose or
test the aggregation rule (:mod:`tumorlib.study_verdict`) on. A pseudo-study is assembled from a
run's per-slice predictions over the ``clean`` validation or test split (``safety/*.npz``:
temperature-scaled probabilities and labels, in the split's source order):

- a **tumour study** of class *c*: 20-40 slices, of which 3-10 *lesion* slices of class *c* —
  taken from one near-duplicate group where that group has several members (neighbouring slices of
  one scan resemble each other; the dataset's ``duplicate_group``), filled with other class-*c*
  slices — in a contiguous run, and the rest *no_tumor* slices standing in for the slices away
  from the lesion;
- a **no-tumour study**: only no_tumor slices. The no_tumor pool is small (about 53 slices in
  validation, 54 in test), so slices are drawn **with replacement** (a study may repeat one).

The rule's parameters are chosen by a grid search on **validation** pseudo-studies only —
maximising the accuracy of the verdicts it states (tumour class or no tumour) subject to a
refer rate ("uncertain") of at most :data:`MAX_REFER_RATE` — and then measured once on **test**
pseudo-studies (test slices never touch the choice). Everything is seeded.

Limits (also in docs/studies.md): the "normal" slices of a tumour study are no_tumor images of
other people, not the same brain away from the lesion; slices are independent images, not
neighbours in one volume; the test pool is small (so studies share slices, and the figures are
optimistic about variety); per-slice gate and abstention are not modelled (every slice counts as
answered). The figures say how the rule combines *this model's* slice predictions, not how it
would do on real series.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tumorlib.runs import (
    SAFETY_DIR,
    STUDY_RULE_FILE,
    TEST_PREDICTIONS_FILE,
    VALIDATION_PREDICTIONS_FILE,
    RunNotFoundError,
    write_json,
)
from tumorlib.study_verdict import NO_TUMOR, StudyRule, batch_evidence, decide

SEED = 20261129
STUDIES_PER_CLASS = 250
N_SLICES = (20, 40)  # slices per study, inclusive
N_LESION = (3, 10)  # lesion slices per tumour study, inclusive
MAX_REFER_RATE = 0.10
GRID = {
    "top_k": (1, 2, 3, 5, 8),
    "tumour_threshold": (0.5, 0.6, 0.7, 0.8, 0.9),
    "no_tumour_max": (0.1, 0.2, 0.3, 0.4, 0.5),
    "min_agreement": (0.5, 0.6, 0.8, 1.0),
}
BOOTSTRAP_ROUNDS = 200
REPORT_JSON = "pseudo_studies.json"
REPORT_PLOT = "pseudo_studies.png"
UNCERTAIN_COLUMN = "uncertain"


@dataclass(frozen=True)
class PseudoStudy:
    """Row indices into a split's predictions (in slice order) and the study's true class."""

    label: int
    slices: tuple[int, ...]
    lesion: tuple[int, ...] = ()  # positions within ``slices`` of the lesion slices


def make_pseudo_studies(
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    groups: np.ndarray | None = None,
    per_class: int = STUDIES_PER_CLASS,
    n_slices: tuple[int, int] = N_SLICES,
    n_lesion: tuple[int, int] = N_LESION,
    seed: int = SEED,
) -> list[PseudoStudy]:
    """``per_class`` studies of every class (tumour classes and no tumour), seeded."""
    rng = np.random.default_rng(seed)
    names = list(class_names)
    normal_label = names.index(NO_TUMOR)
    labels = np.asarray(labels)
    normal_pool = np.flatnonzero(labels == normal_label)
    if normal_pool.size == 0:
        raise ValueError("the split has no no_tumor slices to build studies from")
    studies = []
    for label in range(len(names)):
        pool = np.flatnonzero(labels == label)
        if pool.size == 0:
            raise ValueError(f"the split has no {names[label]} slices")
        mates = _group_mates(pool, groups)
        for _ in range(per_class):
            total = int(rng.integers(n_slices[0], n_slices[1] + 1))
            if label == normal_label:
                drawn = normal_pool[rng.integers(0, normal_pool.size, total)]
                studies.append(PseudoStudy(label, tuple(drawn.tolist())))
                continue
            k = int(rng.integers(n_lesion[0], n_lesion[1] + 1))
            lesion = _lesion_slices(rng, pool, mates, k)
            normal = normal_pool[rng.integers(0, normal_pool.size, total - len(lesion))]
            start = int(rng.integers(0, len(normal) + 1))
            order = [*normal[:start].tolist(), *lesion, *normal[start:].tolist()]
            where = tuple(range(start, start + len(lesion)))
            studies.append(PseudoStudy(label, tuple(order), where))
    return studies


def _lesion_slices(
    rng: np.random.Generator, pool: np.ndarray, mates: dict[int, list[int]] | None, k: int
) -> list[int]:
    """``k`` slices of one class: an anchor's near-duplicate group first (``mates``: slice ->
    the class's slices in its group), then other slices of the class, without replacement while
    the class has enough."""
    anchor = int(pool[rng.integers(pool.size)])
    chosen = [anchor]
    if mates is not None:
        group = [i for i in mates[anchor] if i != anchor]
        rng.shuffle(group)
        chosen += group[: k - 1]
    need = k - len(chosen)
    if need > 0:
        taken = set(chosen)
        if pool.size - len(taken) >= need:
            chosen += [int(i) for i in rng.permutation(pool) if int(i) not in taken][:need]
        else:
            chosen += pool[rng.integers(0, pool.size, need)].tolist()
    return chosen


def _group_mates(pool: np.ndarray, groups: np.ndarray | None) -> dict[int, list[int]] | None:
    if groups is None:
        return None
    by_group: dict[int, list[int]] = {}
    for i in pool:
        by_group.setdefault(int(groups[i]), []).append(int(i))
    return {int(i): by_group[int(groups[i])] for i in pool}


# -- scoring --------------------------------------------------------------------------------------


def study_evidence(
    studies: Sequence[PseudoStudy],
    probabilities: np.ndarray,
    class_names: Sequence[str],
    top_k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per study: mean tumour evidence, agreement, and the class label a tumour verdict names
    (:func:`tumorlib.study_verdict.batch_evidence`, the code :func:`aggregate` runs)."""
    names = list(class_names)
    tumour_labels = np.asarray([i for i, n in enumerate(names) if n != NO_TUMOR])
    lengths = np.asarray([len(s.slices) for s in studies])
    rows = np.zeros((len(studies), int(lengths.max(initial=1))), dtype=int)
    for i, study in enumerate(studies):
        rows[i, : len(study.slices)] = study.slices
    ev = batch_evidence(np.asarray(probabilities)[rows], lengths, names, top_k)
    return ev.mean_evidence, ev.agreement, tumour_labels[ev.best]


def predict_studies(
    studies: Sequence[PseudoStudy],
    probabilities: np.ndarray,
    class_names: Sequence[str],
    rule: StudyRule,
    evidence: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """The rule's verdict per study: a class label, or ``len(class_names)`` for uncertain."""
    mean, agree, tumour_label = evidence or study_evidence(
        studies, probabilities, class_names, rule.top_k
    )
    decision = decide(mean, agree, rule)
    normal = list(class_names).index(NO_TUMOR)
    return np.where(decision == 0, tumour_label, np.where(decision == 1, normal, len(class_names)))


def study_metrics(truth: np.ndarray, verdicts: np.ndarray, class_names: Sequence[str]) -> dict:
    """Accuracy (referrals count as not correct), accuracy of stated verdicts, refer rate,
    per-class recall and refer rate, missed tumours, and the confusion matrix (rows: truth;
    columns: the classes, then uncertain)."""
    n_classes = len(class_names)
    truth, verdicts = np.asarray(truth), np.asarray(verdicts)
    stated = verdicts < n_classes
    correct = verdicts == truth
    normal = list(class_names).index(NO_TUMOR)
    tumour = truth != normal
    matrix = np.zeros((n_classes, n_classes + 1), dtype=int)
    np.add.at(matrix, (truth, verdicts), 1)
    return {
        "n_studies": int(truth.size),
        "accuracy": float(correct.mean()),
        "stated_accuracy": float(correct[stated].mean()) if stated.any() else None,
        "refer_rate": float(1.0 - stated.mean()),
        "missed_tumour_rate": float(np.mean(verdicts[tumour] == normal)) if tumour.any() else None,
        "false_tumour_rate": (
            float(np.mean((verdicts[~tumour] < n_classes) & (verdicts[~tumour] != normal)))
            if (~tumour).any()
            else None
        ),
        "recall": {
            name: float(correct[truth == i].mean()) if (truth == i).any() else None
            for i, name in enumerate(class_names)
        },
        "refer_rate_by_class": {
            name: float((~stated)[truth == i].mean()) if (truth == i).any() else None
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": {
            "rows": list(class_names),
            "columns": [*class_names, UNCERTAIN_COLUMN],
            "counts": matrix.tolist(),
        },
    }


def grid_rules(grid: Mapping[str, Sequence[Any]] = GRID) -> list[StudyRule]:
    rules = []
    for k, t, n, a in itertools.product(*(grid[key] for key in GRID)):
        if n < t:
            rules.append(StudyRule(top_k=k, tumour_threshold=t, no_tumour_max=n, min_agreement=a))
    return rules


def choose_rule(
    studies: Sequence[PseudoStudy],
    probabilities: np.ndarray,
    class_names: Sequence[str],
    *,
    max_refer_rate: float = MAX_REFER_RATE,
    grid: Mapping[str, Sequence[Any]] = GRID,
) -> tuple[StudyRule, dict]:
    """The grid rule with the best accuracy of stated verdicts whose refer rate is at most
    ``max_refer_rate`` (ties: lower refer rate, then the earlier grid point). Validation only."""
    truth = np.asarray([s.label for s in studies])
    evidence = {
        k: study_evidence(studies, probabilities, class_names, k) for k in set(grid["top_k"])
    }
    best: tuple[float, float] | None = None
    chosen: tuple[StudyRule, dict] | None = None
    for rule in grid_rules(grid):
        verdicts = predict_studies(studies, probabilities, class_names, rule, evidence[rule.top_k])
        metrics = study_metrics(truth, verdicts, class_names)
        if metrics["refer_rate"] > max_refer_rate or metrics["stated_accuracy"] is None:
            continue
        score = (metrics["stated_accuracy"], -metrics["refer_rate"])
        if best is None or score > best:
            best, chosen = score, (rule, metrics)
    if chosen is None:
        raise ValueError(f"no rule in the grid refers at most {max_refer_rate:.0%} of studies")
    return chosen


def bootstrap_intervals(
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    rule: StudyRule,
    *,
    groups: np.ndarray | None = None,
    per_class: int = STUDIES_PER_CLASS,
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = SEED,
) -> dict[str, list[float]]:
    """95 % intervals of the test figures when the *slices* are resampled (per class, with
    replacement) and the studies rebuilt: the pseudo-studies share a small pool of slices, so
    resampling studies alone would hide how much the figures depend on that pool."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    keys = ("accuracy", "stated_accuracy", "refer_rate", "missed_tumour_rate")
    values: dict[str, list[float]] = {k: [] for k in keys}
    for b in range(rounds):
        pool = np.concatenate(
            [
                rng.choice(np.flatnonzero(labels == c), int(np.sum(labels == c)))
                for c in range(len(class_names))
            ]
        )
        studies = make_pseudo_studies(
            labels[pool],
            class_names,
            groups=None if groups is None else groups[pool],
            per_class=per_class,
            seed=seed + 1000 + b,
        )
        truth = np.asarray([s.label for s in studies])
        metrics = study_metrics(
            truth, predict_studies(studies, probabilities[pool], class_names, rule), class_names
        )
        for k in keys:
            if metrics[k] is not None:
                values[k].append(metrics[k])
    return {
        k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]
        for k, v in values.items()
        if v
    }


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
    the next export ships it and ``serving.study`` applies it.

    ``groups`` (per split) default to the dataset's near-duplicate groups when it is built here,
    else none (lesion slices are then random slices of the class; the report says which).
    """
    from tumorlib.classes import CLASS_NAMES

    names = list(class_names or CLASS_NAMES)
    groups = (
        groups if groups is not None else {s: _dataset_groups(s) for s in ("validation", "test")}
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
        **{**asdict(rule), "chosen_on": "validation pseudo-studies (tumorlib.pseudo_studies)"}
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


def _dataset_groups(split: str) -> np.ndarray | None:
    """The built dataset's near-duplicate groups for ``split``, or None when it is not built."""
    try:
        from tumorlib.split_predictions import split_groups

        return split_groups(split, "clean", None)
    except (FileNotFoundError, ValueError, ImportError):
        return None


def plot_report(report: dict, path: Path) -> Path:
    """Test confusion matrix (rows: truth) and per-class recall / refer rate, validation vs test."""
    import matplotlib.pyplot as plt

    from tumorlib.plots import save_figure

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
    from tumorlib.cli import run_command

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
