"""One verdict for a series from its per-slice outcomes: the documented aggregation rule.

Why this rule: a tumour is visible on a few slices of a 20-200 slice series; the slices away from
it look normal. Averaging every slice would drown the lesion, and trusting one slice would let one
confident mistake decide. So the rule looks at the ``top_k`` most tumour-like slices the model
answered (the input gate accepted them; "uncertain" slices count — their probabilities are
still the model's best estimate), where a slice's tumour evidence is ``1 - p(no_tumor)``:

- **a tumour class** when the mean tumour evidence of those slices is at least
  ``tumour_threshold`` *and* at least ``min_agreement`` of them name the same tumour class;
- **no tumour** when even those slices' mean tumour evidence is at most ``no_tumour_max``;
- **uncertain** otherwise (evidence in between, disagreeing tumour types, or no slice answered).

The numbers are chosen on validation pseudo-studies (:mod:`tumorlib.pseudo_studies`), never on
test. ``probabilities`` of a verdict are study-level *scores* for display (no_tumor: 1 - mean
evidence; each tumour class: the evidence shared by the top slices' class probabilities), not
calibrated probabilities. TensorFlow-free (numpy).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from tumorlib.study import (
    SLICE_CLASSIFIED,
    SLICE_FAILED,
    SLICE_NOT_BRAIN_MRI,
    SLICE_UNCERTAIN,
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

    def describe(self) -> str:
        return (
            f"top-{self.top_k} tumour-like slices: tumour if mean tumour evidence >= "
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
    if NO_TUMOR not in names:
        raise ValueError(f"class_names must include {NO_TUMOR!r}: {names}")
    tumour_names = [n for n in names if n != NO_TUMOR]
    probs = np.asarray([[o.probabilities.get(n, 0.0) for n in names] for o in answered])  # type: ignore[union-attr]
    evidence = 1.0 - probs[:, names.index(NO_TUMOR)]
    order = np.argsort(-evidence, kind="stable")
    top = order[: min(rule.top_k, len(answered))]
    mean_evidence = float(evidence[top].mean())
    tumour_probs = probs[top][:, [names.index(n) for n in tumour_names]]
    share = tumour_probs.mean(axis=0)
    share = share / share.sum() if share.sum() > 0 else np.full(len(tumour_names), 1 / 3)
    best = int(np.argmax(share))
    votes = np.argmax(tumour_probs, axis=1)
    agreement = float(np.mean(votes == best))
    scores = {n: float(mean_evidence * share[i]) for i, n in enumerate(tumour_names)}
    scores[NO_TUMOR] = 1.0 - mean_evidence
    key = tuple(answered[i].ref.index for i in top)
    n_top = len(top)
    few = f" (only {len(answered)} slice(s) answered)" if len(answered) < rule.top_k else ""
    if mean_evidence >= rule.tumour_threshold and agreement >= rule.min_agreement:
        name = tumour_names[best]
        reason = (
            f"The {n_top} most tumour-like slices{few} show tumour evidence {mean_evidence:.2f} "
            f"(threshold {rule.tumour_threshold:.2f}) and {int(round(agreement * n_top))} of "
            f"{n_top} name {name}."
        )
        return _verdict(name, scores, key, counts, rule, reason)
    if mean_evidence <= rule.no_tumour_max:
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
