"""One verdict for a series from its per-slice outcomes: the documented aggregation rule.

Why this rule: a tumour is visible on a few slices of a 20-200 slice series; the slices away from
it look normal. Averaging every slice would drown the lesion, and trusting one slice would let one
confident mistake decide. So the rule looks at the ``top_k`` most tumour-like slices the model
answered (the input gate accepted them; "uncertain" slices count — their probabilities are
still the model's best estimate), where a slice's tumour evidence is ``1 - p(no_tumor)`` —
averaged over ``window`` neighbouring answered slices in series order when ``window`` > 1: a
lesion spans consecutive slices, while a slice mistaken for a tumour usually stands alone, so
one confident mistake among 30 normal slices no longer reads as a tumour:

- **a tumour class** when the mean tumour evidence of those slices is at least
  ``tumour_threshold`` *and* at least ``min_agreement`` of them name the same tumour class —
  and at least as many slices (``ceil(min_agreement * top_k)``) that look like a tumour were
  *classified* (not abstained) naming it: an abstained slice's probabilities count as tumour
  evidence, but never as support for a type;
- **tumour, type uncertain** when the evidence and the vote say tumour but the classified slices
  do not support the type (20 of 21 slices abstained, or all of them): refer;
- **no tumour** when even those slices' mean tumour evidence is at most ``no_tumour_max``;
- **uncertain** otherwise (evidence in between, disagreeing tumour types, or no slice answered).

The numbers are chosen on validation pseudo-studies (:mod:`tumorlib.studies.pseudo_studies`), never
on test. ``probabilities`` of a verdict are study-level *scores* for display (no_tumor: 1 - mean
evidence; each tumour class: the evidence shared by the top slices' class probabilities), not
calibrated probabilities. TensorFlow-free (numpy).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from tumorlib.studies.study import (
    SLICE_CLASSIFIED,
    SLICE_FAILED,
    SLICE_NOT_BRAIN_MRI,
    SLICE_UNCERTAIN,
    STUDY_TUMOUR_TYPE_UNCERTAIN,
    STUDY_UNCERTAIN,
    SliceOutcome,
    StudyVerdict,
)

NO_TUMOR = "no_tumor"
ANSWERED = (SLICE_CLASSIFIED, SLICE_UNCERTAIN)  # the gate accepted them and the model answered


@dataclass(frozen=True)
class StudyRule:
    """The aggregation rule's parameters (see the module docstring)."""

    top_k: int = 3
    tumour_threshold: float = 0.7
    no_tumour_max: float = 0.3
    min_agreement: float = 0.6
    window: int = 1  # neighbouring slices (odd) whose evidence is averaged; 1: each slice alone
    chosen_on: str = "default (not yet chosen on validation pseudo-studies)"

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")
        if not 0.0 <= self.no_tumour_max < self.tumour_threshold <= 1.0:
            raise ValueError(
                "need 0 <= no_tumour_max < tumour_threshold <= 1, got "
                f"{self.no_tumour_max} and {self.tumour_threshold}"
            )
        if not 0.0 < self.min_agreement <= 1.0:
            raise ValueError(f"min_agreement must be in (0, 1], got {self.min_agreement}")
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"window must be an odd number of slices, got {self.window}")

    def describe(self) -> str:
        smoothed = f" (evidence averaged over {self.window} neighbouring slices)"
        return (
            f"top-{self.top_k} tumour-like slices{smoothed if self.window > 1 else ''}: "
            f"tumour if mean tumour evidence >= "
            f"{self.tumour_threshold:.2f} and >= {self.min_agreement:.0%} agree on the type; "
            f"no tumour if <= {self.no_tumour_max:.2f}; else uncertain"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict) -> StudyRule:
        """From :meth:`to_json`'s text or its parsed dict (export metadata holds the dict)."""
        payload = json.loads(text) if isinstance(text, str) else dict(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in known})


DEFAULT_RULE = StudyRule()


def aggregate(
    outcomes: Sequence[SliceOutcome],
    class_names: Sequence[str],
    rule: StudyRule = DEFAULT_RULE,
) -> StudyVerdict:
    """The study verdict, its key slices (strongest first), counts and a sentence why."""
    counts = _counts(outcomes)
    answered = [o for o in outcomes if o.outcome in ANSWERED and o.probabilities]
    if not answered:
        return _verdict(
            STUDY_UNCERTAIN,
            {},
            (),
            counts,
            rule,
            "No slice was accepted and answered by the model, so the series cannot be judged.",
        )
    names = list(class_names)
    probs = np.asarray([[o.probabilities.get(n, 0.0) for n in names] for o in answered])  # type: ignore[union-attr]
    ev = top_evidence(probs, names, rule.top_k, rule.window)
    tumour_names = [n for n in names if n != NO_TUMOR]
    mean_evidence, agreement, best = ev.mean_evidence, ev.agreement, ev.best
    scores = {n: float(mean_evidence * ev.share[i]) for i, n in enumerate(tumour_names)}
    scores[NO_TUMOR] = 1.0 - mean_evidence
    top = ev.top
    key = tuple(answered[i].ref.index for i in top)
    n_top = len(top)
    few = f" (only {len(answered)} slice(s) answered)" if len(answered) < rule.top_k else ""
    decision = int(decide(np.asarray(mean_evidence), np.asarray(agreement), rule))
    supporting = _classified_votes(answered, probs, names, tumour_names[best], rule)
    needed = math.ceil(rule.min_agreement * n_top - 1e-9)
    if decision == 0 and supporting < needed:
        reason = (
            f"The {n_top} most tumour-like slices{few} show tumour evidence {mean_evidence:.2f} "
            f"(threshold {rule.tumour_threshold:.2f}), but only {supporting} tumour-like "
            f"slice(s) were classified as {tumour_names[best]} without abstaining ({needed} "
            "needed): the type is not supported; refer to a radiologist."
        )
        return _verdict(STUDY_TUMOUR_TYPE_UNCERTAIN, scores, key, counts, rule, reason)
    if decision == 0:
        name = tumour_names[best]
        reason = (
            f"The {n_top} most tumour-like slices{few} show tumour evidence {mean_evidence:.2f} "
            f"(threshold {rule.tumour_threshold:.2f}) and {int(round(agreement * n_top))} of "
            f"{n_top} name {name}."
        )
        return _verdict(name, scores, key, counts, rule, reason)
    if decision == 1:
        reason = (
            f"Even the {n_top} most tumour-like slices{few} show tumour evidence only "
            f"{mean_evidence:.2f} (at most {rule.no_tumour_max:.2f} reads as no tumour)."
        )
        return _verdict(NO_TUMOR, scores, key, counts, rule, reason)
    if mean_evidence >= rule.tumour_threshold:
        reason = (
            f"The {n_top} most tumour-like slices{few} show tumour evidence {mean_evidence:.2f}, "
            f"but they disagree on the tumour type (only {agreement:.0%} name {tumour_names[best]})"
            "; refer to a radiologist."
        )
    else:
        reason = (
            f"The {n_top} most tumour-like slices{few} show tumour evidence {mean_evidence:.2f}, "
            f"between {rule.no_tumour_max:.2f} (no tumour) and {rule.tumour_threshold:.2f} "
            "(tumour); refer to a radiologist."
        )
    return _verdict(STUDY_UNCERTAIN, scores, key, counts, rule, reason)


def _classified_votes(
    answered: Sequence[SliceOutcome],
    probs: np.ndarray,
    names: Sequence[str],
    tumour: str,
    rule: StudyRule,
) -> int:
    """How many answered slices were classified (not abstained), look like a tumour (evidence at
    least ``tumour_threshold``) and have ``tumour`` as their most likely tumour class: the only
    slices that may support stating a type."""
    tumour_columns = [i for i, name in enumerate(names) if name != NO_TUMOR]
    wanted = tumour_columns.index(names.index(tumour))
    evidence = 1.0 - probs[:, names.index(NO_TUMOR)]
    return sum(
        1
        for i, outcome in enumerate(answered)
        if outcome.outcome == SLICE_CLASSIFIED
        and evidence[i] >= rule.tumour_threshold
        and int(np.argmax(probs[i, tumour_columns])) == wanted
    )


@dataclass(frozen=True)
class TopEvidence:
    """What the rule reads from one series: its ``top`` slices (row indices, strongest first),
    their mean tumour evidence, the tumour class they favour (index among the tumour classes),
    the fraction of them whose own top tumour class is that one, and the class shares."""

    top: tuple[int, ...]
    mean_evidence: float
    best: int
    agreement: float
    share: tuple[float, ...]


def top_evidence(
    probabilities: np.ndarray, class_names: Sequence[str], top_k: int, window: int = 1
) -> TopEvidence:
    """The rule's inputs from one series' per-slice probabilities ``[n, C]`` (in series order)."""
    probs = np.asarray(probabilities, dtype=float)
    batch = batch_evidence(probs[None], np.asarray([len(probs)]), class_names, top_k, window)
    count = min(top_k, len(probs))
    return TopEvidence(
        tuple(int(i) for i in batch.top[0, :count]),
        float(batch.mean_evidence[0]),
        int(batch.best[0]),
        float(batch.agreement[0]),
        tuple(float(x) for x in batch.share[0]),
    )


@dataclass(frozen=True)
class BatchEvidence:
    """:class:`TopEvidence` for many series at once (arrays with a leading series axis)."""

    top: np.ndarray  # [S, k] row indices, strongest first (rows past a series' length unused)
    mean_evidence: np.ndarray  # [S]
    best: np.ndarray  # [S] index among the tumour classes
    agreement: np.ndarray  # [S]
    share: np.ndarray  # [S, T]


def batch_evidence(
    probabilities: np.ndarray,
    lengths: np.ndarray,
    class_names: Sequence[str],
    top_k: int,
    window: int = 1,
) -> BatchEvidence:
    """The rule's inputs for ``S`` series padded to ``[S, n, C]`` (``lengths`` real rows each,
    in series order; ``window``: see :func:`smoothed_evidence`).

    The one implementation: :func:`aggregate` calls it for one series, the pseudo-study grid
    search (:mod:`tumorlib.studies.pseudo_studies`) for thousands, so the rule chosen there is the
    rule applied here.
    """
    names = list(class_names)
    if NO_TUMOR not in names:
        raise ValueError(f"class_names must include {NO_TUMOR!r}: {names}")
    probs = np.asarray(probabilities, dtype=float)
    n = probs.shape[1]
    valid = np.arange(n)[None, :] < np.asarray(lengths)[:, None]
    evidence = smoothed_evidence(1.0 - probs[..., names.index(NO_TUMOR)], valid, window)
    ranked = np.where(valid, evidence, -np.inf)
    top = np.argsort(-ranked, axis=1, kind="stable")[:, : min(top_k, n)]
    used = np.take_along_axis(valid, top, axis=1)
    count = np.maximum(used.sum(axis=1), 1)
    mean_evidence = np.where(used, np.take_along_axis(evidence, top, axis=1), 0.0).sum(1) / count
    tumour = probs[..., [i for i, name in enumerate(names) if name != NO_TUMOR]]
    top_tumour = np.take_along_axis(tumour, top[..., None], axis=1)  # [S, k, T]
    share = np.where(used[..., None], top_tumour, 0.0).sum(axis=1) / count[:, None]
    total = share.sum(axis=1, keepdims=True)
    share = np.where(total > 0, share / np.where(total > 0, total, 1.0), 1.0 / share.shape[1])
    best = np.argmax(share, axis=1)
    votes = np.argmax(top_tumour, axis=2) == best[:, None]
    agreement = np.where(used, votes, False).sum(axis=1) / count
    return BatchEvidence(top, mean_evidence, best, agreement, share)


def smoothed_evidence(evidence: np.ndarray, valid: np.ndarray, window: int) -> np.ndarray:
    """Each slice's ``[S, n]`` evidence averaged with its neighbours within ``window // 2``
    places (fewer at a series' ends); ``window`` 1 returns it unchanged."""
    if window == 1:
        return evidence
    half = window // 2
    values = np.where(valid, evidence, 0.0)
    padded = np.pad(values, ((0, 0), (half + 1, half)))
    counts = np.pad(valid.astype(float), ((0, 0), (half + 1, half)))
    sums, ns = np.cumsum(padded, axis=1), np.cumsum(counts, axis=1)
    window_sum = sums[:, window:] - sums[:, :-window]
    window_n = ns[:, window:] - ns[:, :-window]
    return np.where(valid, window_sum / np.maximum(window_n, 1.0), evidence)


def decide(mean_evidence: np.ndarray, agreement: np.ndarray, rule: StudyRule) -> np.ndarray:
    """Vectorised decision: 0 a tumour class, 1 no tumour, 2 uncertain (as :func:`aggregate`)."""
    tumour = (np.asarray(mean_evidence) >= rule.tumour_threshold) & (
        np.asarray(agreement) >= rule.min_agreement
    )
    normal = np.asarray(mean_evidence) <= rule.no_tumour_max
    return np.where(tumour, 0, np.where(normal, 1, 2))


def _counts(outcomes: Sequence[SliceOutcome]) -> dict[str, int]:
    counts = {SLICE_CLASSIFIED: 0, SLICE_UNCERTAIN: 0, SLICE_NOT_BRAIN_MRI: 0, SLICE_FAILED: 0}
    for o in outcomes:
        counts[o.outcome if o.outcome in counts else SLICE_FAILED] += 1
    counts["total"] = len(outcomes)
    return counts


def _verdict(
    verdict: str,
    scores: dict[str, float],
    key: tuple[int, ...],
    counts: dict[str, int],
    rule: StudyRule,
    reason: str,
) -> StudyVerdict:
    return StudyVerdict(
        verdict=verdict,
        probabilities=scores,
        key_slices=key,
        n_slices=counts["total"],
        n_classified=counts[SLICE_CLASSIFIED],
        n_uncertain=counts[SLICE_UNCERTAIN],
        n_not_brain_mri=counts[SLICE_NOT_BRAIN_MRI],
        n_failed=counts[SLICE_FAILED],
        rule=f"{rule.describe()} [{rule.to_json()}]",
        reason=reason,
    )
