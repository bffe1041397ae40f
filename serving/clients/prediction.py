"""The result types every serving backend returns.

The Streamlit page, the REST client and the in-process model all hand back ``Prediction`` (and,
from the ``explain`` signature, ``Explanation``) objects, so a caller can switch backend without
touching its display code.

The clinical-safety fields are optional: a model exported before the abstention threshold or the
input gate existed (or from a run that never measured them) has no such outputs, and the fields
are then ``None`` — "not checked", which a caller must not read as "passed".
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tumorlib.contracts.serving_contract import (
    ABSTAIN_KEY,
    CLASS_INDEX_KEY,
    CLASS_NAME_KEY,
    CONFIDENCE_KEY,
    EMBEDDING_KEY,
    FAMILIAR_KEY,
    FAMILIARITY_SCORE_KEY,
    GATE_SCORE_KEY,
    HEATMAP_KEY,
    IN_DISTRIBUTION_KEY,
    NEIGHBOR_INDEX_KEY,
    NEIGHBOR_LABEL_KEY,
    NEIGHBOR_LICENCE_KEY,
    NEIGHBOR_SIMILARITY_KEY,
    NEIGHBOR_SOURCE_KEY,
    NEIGHBOR_THUMBNAIL_KEY,
    PROBABILITIES_KEY,
)

CLASSIFIED = "classified"
UNCERTAIN = "uncertain"  # abstained: confidence below the validation-chosen threshold
NOT_BRAIN_MRI = "not_brain_mri"  # the input gate refused the image


class ExplainUnavailable(LookupError):
    """The served model version has no ``explain`` (Grad-CAM) signature: re-export the run."""


class SimilarUnavailable(LookupError):
    """The served version has no ``similar_cases`` signature (exported without an index)."""


@dataclass(frozen=True)
class Prediction:
    """One image's result: temperature-scaled probabilities keyed by class name, the argmax,
    and — when the model provides them — the abstention and input-gate verdicts."""

    probabilities: dict[str, float]
    class_index: int
    class_name: str
    confidence: float | None = None  # top probability; filled in when not given
    abstain: bool | None = None  # None: the model has no abstention threshold
    in_distribution: bool | None = None  # None: the model has no input gate
    gate_score: float | None = None  # accepted when <= 1
    familiar: bool | None = None  # False: a brain MRI unlike the training data (flag only)
    familiarity_score: float | None = None  # familiar when <= 1

    def __post_init__(self) -> None:
        if self.confidence is None and self.probabilities:
            object.__setattr__(self, "confidence", max(self.probabilities.values()))

    @property
    def verdict(self) -> str:
        """:data:`NOT_BRAIN_MRI`, :data:`UNCERTAIN` or :data:`CLASSIFIED`, in that precedence.

        The gate comes first: whether a photo of a cat is "confident" is meaningless.
        """
        if self.in_distribution is False:
            return NOT_BRAIN_MRI
        if self.abstain:
            return UNCERTAIN
        return CLASSIFIED

    @property
    def unfamiliar(self) -> bool:
        """True only when the familiarity check ran and flagged a classified-or-uncertain slice
        (never for a refused one: "not a brain MRI" already says more)."""
        return self.familiar is False and self.verdict != NOT_BRAIN_MRI

    @classmethod
    def from_row(cls, row: Mapping[str, Any], class_names: Sequence[str]) -> Prediction:
        """Build from one row of the serving signature's outputs (REST ``predictions`` entry).

        ``class_name`` may arrive as ``bytes`` (in-process TF string tensor) or ``str`` (JSON).
        """
        probs = _probabilities(row, class_names)
        name = row[CLASS_NAME_KEY]
        if isinstance(name, bytes):
            name = name.decode("utf-8")
        return cls(
            probabilities=dict(zip(class_names, probs)),
            class_index=int(row[CLASS_INDEX_KEY]),
            class_name=str(name),
            confidence=_optional(row, CONFIDENCE_KEY, float),
            abstain=_optional(row, ABSTAIN_KEY, bool),
            in_distribution=_optional(row, IN_DISTRIBUTION_KEY, bool),
            gate_score=_optional(row, GATE_SCORE_KEY, float),
            familiar=_optional(row, FAMILIAR_KEY, bool),
            familiarity_score=_optional(row, FAMILIARITY_SCORE_KEY, float),
        )


@dataclass(frozen=True, eq=False)
class Explanation:
    """The ``explain`` signature's answer for one image: Grad-CAM of the predicted class.

    ``heatmap`` is float32 ``[S, S]`` in [0, 1] at the model's input resolution, aligned with
    the image resized the way the model saw it (``tumorlib.images.preprocessing.resize``).
    """

    probabilities: dict[str, float]
    class_index: int
    class_name: str
    heatmap: np.ndarray

    @classmethod
    def from_row(cls, row: Mapping[str, Any], class_names: Sequence[str]) -> Explanation:
        probs = _probabilities(row, class_names)
        heatmap = np.asarray(row[HEATMAP_KEY], dtype=np.float32)
        if heatmap.ndim != 2 or heatmap.shape[0] != heatmap.shape[1]:
            raise ValueError(f"heatmap must be a square [S, S] map, got {heatmap.shape}")
        index = int(row[CLASS_INDEX_KEY])
        return cls(dict(zip(class_names, probs)), index, class_names[index], heatmap)


@dataclass(frozen=True, eq=False)
class SimilarCase:
    """One confirmed case near the query: its row in the index, cosine similarity, confirmed
    label, collection, that collection's licence, and a small PNG thumbnail."""

    row: int
    similarity: float
    label: str
    source: str
    licence: str
    thumbnail: bytes


@dataclass(frozen=True, eq=False)
class SimilarCases:
    """The ``similar_cases`` signature's answer for one image: the classification from the same
    backbone pass, the unit query ``embedding`` and the nearest ``cases``, nearest first."""

    probabilities: dict[str, float]
    class_index: int
    class_name: str
    embedding: np.ndarray
    cases: tuple[SimilarCase, ...]

    @property
    def majority_label(self) -> str | None:
        """The most frequent label among the cases (ties: the nearer case's label wins)."""
        counts: dict[str, int] = {}
        for case in self.cases:
            counts[case.label] = counts.get(case.label, 0) + 1
        if not counts:
            return None
        best = max(counts.values())
        return next(c.label for c in self.cases if counts[c.label] == best)

    @property
    def agrees(self) -> bool | None:
        """Whether the neighbours' majority label is the model's class (None: no cases)."""
        majority = self.majority_label
        return None if majority is None else majority == self.class_name

    def first(self, k: int) -> SimilarCases:
        """The same answer with only the ``k`` nearest cases."""
        return SimilarCases(
            self.probabilities, self.class_index, self.class_name, self.embedding, self.cases[:k]
        )

    @classmethod
    def from_row(
        cls, row: Mapping[str, Any], class_names: Sequence[str], k: int | None = None
    ) -> SimilarCases:
        """From one row of the signature's outputs (in-process arrays, gRPC or REST JSON)."""
        probs = _probabilities(row, class_names)
        index = int(row[CLASS_INDEX_KEY])
        cases = tuple(
            SimilarCase(int(r), float(s), _text(lab), _text(src), _text(lic), _binary(png))
            for r, s, lab, src, lic, png in zip(
                row[NEIGHBOR_INDEX_KEY],
                row[NEIGHBOR_SIMILARITY_KEY],
                row[NEIGHBOR_LABEL_KEY],
                row[NEIGHBOR_SOURCE_KEY],
                row[NEIGHBOR_LICENCE_KEY],
                row[NEIGHBOR_THUMBNAIL_KEY],
            )
        )
        embedding = np.asarray(row[EMBEDDING_KEY], dtype=np.float32)
        return cls(dict(zip(class_names, probs)), index, class_names[index], embedding, cases[:k])


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes | bytearray) else str(value)


def _binary(value: Any) -> bytes:
    """Bytes as they arrive: raw (in-process, gRPC) or TF Serving's ``{"b64": ...}`` (REST)."""
    if isinstance(value, Mapping):
        return base64.b64decode(value["b64"])
    return bytes(value)


def _probabilities(row: Mapping[str, Any], class_names: Sequence[str]) -> list[float]:
    probs = [float(p) for p in row[PROBABILITIES_KEY]]
    if len(probs) != len(class_names):
        raise ValueError(
            f"model returned {len(probs)} probabilities but knows {len(class_names)} classes"
        )
    return probs


def _optional(row: Mapping[str, Any], key: str, kind: type) -> Any:
    value = row.get(key)
    return None if value is None else kind(value)
