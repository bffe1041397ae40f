"""Classify a series through any backend: every accepted slice in one request stream, one verdict.

Why here: the page, the batch CLI and the PACS client all classify studies the same way — the
slices through :meth:`serving.clients.backend.Backend.predict` (chunked, a bad slice isolated), each
answer mapped to a :class:`tumorlib.studies.study.SliceOutcome` with the single-image verdict
(:attr:`serving.clients.prediction.Prediction.verdict`), then the one aggregation rule
(:func:`tumorlib.studies.verdict.aggregate`). The rule a served model ships in its export metadata
(``study_rule``) is used unless a caller passes one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from serving.clients.backend import Backend, Progress
from serving.clients.prediction import Prediction
from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.contracts.serving_contract import MODEL_NAME
from tumorlib.studies.readers import decode_ahead
from tumorlib.studies.study import SLICE_FAILED, Series, SliceOutcome, StudyResult
from tumorlib.studies.verdict import DEFAULT_RULE, StudyRule, aggregate

STUDY_RULE_KEY = "study_rule"  # in the export metadata: the rule chosen for that model


def classify_series(
    series: Series,
    backend: Backend,
    version: int | None,
    *,
    rule: StudyRule | None = None,
    progress: Progress | None = None,
) -> StudyResult:
    """Predict every slice the reader accepted, chunk by chunk, then aggregate.

    Refused slices (``StudySlice.problem``) are not sent; they count as failed with their
    reason. :class:`serving.clients.backend.BackendError` (server down, model missing) propagates.
    """
    by_index: dict[int, Prediction | str] = {}
    # Slices a reader left undecoded (read_series(decode=False)) decode while earlier ones predict.
    for chunk in decode_ahead(series.slices, backend.max_images):
        todo = [s for s in chunk if s.problem is None and s.image]
        if todo:
            answers = backend.predict([s.image for s in todo], version, progress=progress)
            by_index.update((s.ref.index, a) for s, a in zip(todo, answers))
    outcomes = []
    for piece in series.slices:
        answer = by_index.get(piece.ref.index)
        if answer is None:
            outcomes.append(
                SliceOutcome(piece.ref, SLICE_FAILED, message=piece.problem or "no image")
            )
        else:
            outcomes.append(slice_outcome(piece.ref, answer))
    metadata = _metadata(backend, version)
    chosen = rule or study_rule(metadata)
    names = list(metadata.get("class_names") or CLASS_NAMES)
    return StudyResult(
        series=series,
        slices=outcomes,
        verdict=aggregate(outcomes, names, chosen),
        model_name=str(metadata.get("model_name") or MODEL_NAME),
        model_version=str(version if version is not None else metadata.get("model_version", "")),
    )


def slice_outcome(ref: Any, answer: Prediction | str) -> SliceOutcome:
    """One backend answer as a slice outcome: the Prediction's verdict, or failed with words."""
    if isinstance(answer, str):
        return SliceOutcome(ref, SLICE_FAILED, message=answer)
    return SliceOutcome(
        ref,
        answer.verdict,
        probabilities=dict(answer.probabilities),
        class_name=answer.class_name,
        confidence=answer.confidence,
        gate_score=answer.gate_score,
        familiar=answer.familiar,
    )


def study_rule(metadata: Mapping[str, Any]) -> StudyRule:
    """The rule an export ships (``study_rule`` in its metadata), else :data:`DEFAULT_RULE`."""
    payload = metadata.get(STUDY_RULE_KEY)
    if not payload:
        return DEFAULT_RULE
    try:
        return StudyRule.from_json(payload)
    except (TypeError, ValueError):
        return DEFAULT_RULE


def _metadata(backend: Backend, version: int | None) -> Mapping[str, Any]:
    try:
        return backend.metadata(version)
    except Exception:  # noqa: BLE001 - predictions stand without it; the default rule applies
        return {}
