"""Pseudo-studies: an honest-as-possible study-level evaluation without labelled volumes.

Why: the dataset is 2-D slices without patient IDs, so no labelled series exists to choose or
test the aggregation rule (:mod:`tumorlib.studies.verdict`) on. A pseudo-study is assembled from a
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

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tumorlib.studies.verdict import NO_TUMOR, StudyRule, batch_evidence, decide

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
    "window": (1, 3),
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
    window: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per study: mean tumour evidence, agreement, and the class label a tumour verdict names
    (:func:`tumorlib.studies.verdict.batch_evidence`, the code :func:`aggregate` runs)."""
    names = list(class_names)
    tumour_labels = np.asarray([i for i, n in enumerate(names) if n != NO_TUMOR])
    lengths = np.asarray([len(s.slices) for s in studies])
    rows = np.zeros((len(studies), int(lengths.max(initial=1))), dtype=int)
    for i, study in enumerate(studies):
        rows[i, : len(study.slices)] = study.slices
    ev = batch_evidence(np.asarray(probabilities)[rows], lengths, names, top_k, window)
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
        studies, probabilities, class_names, rule.top_k, rule.window
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
    axes = [grid.get(key, (1,)) if key == "window" else grid[key] for key in GRID]
    for k, t, n, a, w in itertools.product(*axes):
        if n < t:
            rules.append(
                StudyRule(top_k=k, tumour_threshold=t, no_tumour_max=n, min_agreement=a, window=w)
            )
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
        (k, w): study_evidence(studies, probabilities, class_names, k, w)
        for k in set(grid["top_k"])
        for w in set(grid.get("window", (1,)))
    }
    best: tuple[float, float] | None = None
    chosen: tuple[StudyRule, dict] | None = None
    for rule in grid_rules(grid):
        verdicts = predict_studies(
            studies, probabilities, class_names, rule, evidence[(rule.top_k, rule.window)]
        )
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
