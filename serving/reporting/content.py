"""What a report says, in the same words as the page and the CLI, before any layout.

A :class:`Report` is built from the answers the caller already has — a
:class:`~serving.clients.prediction.Prediction` (or a study's
:class:`~tumorlib.studies.study.StudyResult`), the Grad-CAM heatmap, the similar cases, the
served version's metadata and the audit record id — so the PDF can never say something the
page did not. TensorFlow-free; the heatmap overlay is drawn by :mod:`serving.reporting.pdf`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.clients.prediction import NOT_BRAIN_MRI, UNCERTAIN, Prediction, SimilarCases
from tumorlib.contracts.classes import DISPLAY_NAMES
from tumorlib.contracts.serving_contract import (
    DISCLAIMER,
    NOT_BRAIN_MRI_MESSAGE,
    UNCERTAIN_MESSAGE,
    UNFAMILIAR_MESSAGE,
)

TITLE = "Brain MRI — decision-support report"
DISCLAIMER_TEXT = (
    f"{DISCLAIMER} The model's output is an estimate from 2-D slices. It can be wrong and must be "
    "read by a qualified clinician together with the full study and the patient's history."
)


@dataclass(frozen=True)
class Entry:
    """One image in the report: the slice as sent, its answer and its evidence."""

    title: str  # "Image 1", "slice 12 / 40 (key slice)": never a file name
    image: bytes
    answer: str
    heatmap: np.ndarray | None = None
    heatmap_method: str = "Grad-CAM"
    overlay: np.ndarray | None = None  # already drawn (uint8 RGB), e.g. the PACS captures
    similar: SimilarCases | None = None


@dataclass(frozen=True)
class Report:
    """Everything the PDF prints, in order."""

    kind: str  # "case" or "study"
    headline: str
    reasons: list[str]
    probabilities: Mapping[str, float] | None
    probabilities_label: str
    entries: list[Entry]
    model: list[tuple[str, str]]  # (field, value) rows
    audit_ids: list[str] = field(default_factory=list)
    patient: Mapping[str, str] | None = None  # only when the signed-in user asked
    details: list[tuple[str, str]] = field(default_factory=list)  # study counts, rule
    generated_at: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    )


def display(name: str) -> str:
    return DISPLAY_NAMES.get(name, name)


def answer_words(prediction: Prediction) -> str:
    """The answer as the page states it."""
    if prediction.verdict == NOT_BRAIN_MRI:
        return NOT_BRAIN_MRI_MESSAGE
    if prediction.verdict == UNCERTAIN:
        return UNCERTAIN_MESSAGE
    confidence = prediction.probabilities[prediction.class_name]
    return f"Predicted: {display(prediction.class_name)} ({confidence:.1%})"


def answer_reasons(
    prediction: Prediction, metadata: Mapping[str, Any], similar: SimilarCases | None
) -> list[str]:
    """Why the answer reads as it does: thresholds, flags, and what the neighbours say."""
    reasons = []
    confidence = prediction.probabilities[prediction.class_name]
    if prediction.verdict == NOT_BRAIN_MRI:
        score = prediction.gate_score
        reasons.append(
            "The input check found this image unlike any brain MRI slice"
            + (f" (score {score:.2f}; slices like the training images score at most 1.00)."
               if score is not None else ".")
        )  # fmt: skip
        return reasons
    if prediction.verdict == UNCERTAIN:
        abstention = metadata.get("abstention") or {}
        limit = (abstention.get("class_thresholds") or {}).get(
            prediction.class_name, abstention.get("threshold")
        )
        below = f", below the threshold of {limit:.1%} chosen on validation data" if limit else ""
        reasons.append(
            f"The most likely class, {display(prediction.class_name)}, has {confidence:.1%}"
            f"{below}: not a reliable answer."
        )
    if prediction.unfamiliar:
        reasons.append(f"{UNFAMILIAR_MESSAGE}.")
    if similar is not None and similar.cases and similar.agrees is False:
        reasons.append(
            f"The {len(similar.cases)} most similar confirmed cases are mostly "
            f"{display(similar.majority_label or '')}, not {display(prediction.class_name)}: "
            "read with extra care."
        )
    return reasons


def model_rows(metadata: Mapping[str, Any], backend: str = "") -> list[tuple[str, str]]:
    """The model name, version and a card summary from the served version's metadata."""
    name, version = metadata.get("model_name", "?"), metadata.get("model_version", "?")
    rows = [("Model", f"{name} version {version}"), ("Trained run", str(metadata.get("run", "?")))]
    dataset = metadata.get("dataset") or {}
    if dataset:
        rows.append(("Training data", f"{dataset.get('name')} / {dataset.get('config')}"))
    test = (metadata.get("metrics") or {}).get("clean-test") or {}
    if test.get("accuracy") is not None:
        rows.append(
            ("Measured (clean/test)",
             f"accuracy {test['accuracy']:.3f}, macro-F1 {test.get('macro_f1', float('nan')):.3f}")
        )  # fmt: skip
    abstention = metadata.get("abstention") or {}
    if abstention.get("threshold") is not None:
        rows.append(("Abstention", "answers below a validation-chosen confidence are withheld"))
    rows.append(("Input check", "on" if metadata.get("input_gate") else "none in this export"))
    similar = metadata.get("similar_cases") or {}
    if similar.get("available"):
        rows.append(
            ("Similar cases from", f"{similar['count']} {similar['config']}/{similar['split']} "
                                   "slices with confirmed labels")
        )  # fmt: skip
    if backend:
        rows.append(("Answered by", backend))
    return rows


def case_report(
    prediction: Prediction,
    image: bytes,
    metadata: Mapping[str, Any],
    *,
    heatmap: np.ndarray | None = None,
    similar: SimilarCases | None = None,
    audit_id: str | None = None,
    patient: Mapping[str, str] | None = None,
    backend: str = "",
    title: str = "Image",
) -> Report:
    """The report for one slice."""
    method = "Grad-CAM++" if metadata.get("explain_method") == "gradcam++" else "Grad-CAM"
    refused = prediction.verdict == NOT_BRAIN_MRI
    entry = Entry(title, image, answer_words(prediction), heatmap=None if refused else heatmap,
                  heatmap_method=method, similar=None if refused else similar)  # fmt: skip
    return Report(
        kind="case",
        headline=answer_words(prediction),
        reasons=answer_reasons(prediction, metadata, similar),
        probabilities=None if refused else prediction.probabilities,
        probabilities_label="Calibrated probabilities (temperature-scaled on validation)",
        entries=[entry],
        model=model_rows(metadata, backend),
        audit_ids=[audit_id] if audit_id else [],
        patient=patient,
    )


def study_report(
    result: Any,
    images: Mapping[int, bytes],
    metadata: Mapping[str, Any],
    *,
    heatmaps: Mapping[int, np.ndarray] | None = None,
    similar: Mapping[int, SimilarCases] | None = None,
    audit_ids: Sequence[str] = (),
    patient: Mapping[str, str] | None = None,
    backend: str = "",
) -> Report:
    """The report for a classified series (:class:`tumorlib.studies.study.StudyResult`): the
    verdict and its sentence, counts, and each key slice with its evidence."""
    from tumorlib.studies.study import verdict_words

    verdict = result.verdict
    by_index = {o.ref.index: o for o in result.slices}
    entries = []
    for index in verdict.key_slices:
        outcome = by_index[index]
        answer = (
            f"{display(outcome.class_name or '')} ({outcome.confidence:.1%})"
            if outcome.confidence is not None
            else outcome.outcome
        )
        entries.append(
            Entry(f"Key slice: {outcome.ref.label or f'slice {index + 1}'}", images[index], answer,
                  (heatmaps or {}).get(index), similar=(similar or {}).get(index))
        )  # fmt: skip
    details = [
        ("Slices", f"{verdict.n_slices}: {verdict.n_classified} classified, "
                   f"{verdict.n_uncertain} uncertain, {verdict.n_not_brain_mri} not a brain MRI, "
                   f"{verdict.n_failed} failed"),
        ("Series", f"{result.series.modality} {result.series.description}".strip() or "-"),
        ("Rule", verdict.rule),
    ]  # fmt: skip
    return Report(
        kind="study",
        headline=f"Study: {verdict_words(verdict.verdict)}",
        reasons=[verdict.reason],
        probabilities=verdict.probabilities or None,
        probabilities_label="Study scores (from the key slices; not calibrated probabilities)",
        entries=entries,
        model=model_rows(metadata, backend),
        audit_ids=list(audit_ids),
        patient=patient,
        details=details,
    )
