"""What a study is, and what the model says about it: the types every study path shares.

A radiologist reads a *series* (20-200 slices of one acquisition), not a slice. The readers
(:mod:`tumorlib.studies.readers`: DICOM folders, zips, multi-frame files, NIfTI volumes) produce a
:class:`Series`; the classifier runs on its slices as on any upload; the aggregation rule
(:mod:`tumorlib.studies.verdict`) turns the per-slice outcomes into one :class:`StudyVerdict`;
the DICOM writers and the PACS client (``serving.pacs.results``, ``serving.pacs.dicomweb``) and the
page read a :class:`StudyResult`.

TensorFlow-free. Patient-identifying header values live only in ``Series.headers`` (in memory, for
the DICOM results that must carry the same patient and study) and are never part of a ``repr``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from tumorlib.contracts.classes import DISPLAY_NAMES
from tumorlib.contracts.serving_contract import TUMOUR_TYPE_UNCERTAIN_MESSAGE, UNCERTAIN_MESSAGE

SeriesKind = Literal["dicom", "nifti"]

# Per-slice outcomes, in the precedence the single-image path uses (serving.clients.prediction).
SLICE_CLASSIFIED = "classified"
SLICE_UNCERTAIN = "uncertain"  # abstained
SLICE_NOT_BRAIN_MRI = "not_brain_mri"  # refused by the input gate
SLICE_FAILED = "failed"  # refused by the input policy or could not be read / predicted

# The study verdict when no tumour class (and not "no tumour") can be stated.
STUDY_UNCERTAIN = "uncertain"
# The study verdict when the slices show a tumour but do not support one tumour type: the
# confidently classified slices (not the abstained ones) must name it (tumorlib.studies.verdict).
STUDY_TUMOUR_TYPE_UNCERTAIN = "tumour_type_uncertain"


def verdict_words(verdict: str) -> str:
    """A study verdict in the words every view prints (CLI, PACS command, page, SR meaning)."""
    if verdict == STUDY_UNCERTAIN:
        return UNCERTAIN_MESSAGE
    if verdict == STUDY_TUMOUR_TYPE_UNCERTAIN:
        return TUMOUR_TYPE_UNCERTAIN_MESSAGE
    return DISPLAY_NAMES.get(verdict, verdict)


@dataclass(frozen=True)
class SliceRef:
    """Where one slice came from: enough to reference it in a DICOM result, nothing identifying."""

    index: int  # 0-based position in the ordered volume
    sop_instance_uid: str | None = None  # DICOM only
    sop_class_uid: str | None = None
    frame: int | None = None  # 1-based frame number within a multi-frame instance
    position: float | None = None  # mm along the slice normal, when known
    label: str = ""  # a human name for the slice ("slice 12 / 40", a file name)


@dataclass
class StudySlice:
    """One slice ready for the model: 8-bit PNG bytes (window applied), or why there are none.

    A reader may hand slices over before their pixels are decoded (``pending``), so decoding the
    next slices overlaps with predicting the current ones; :meth:`resolve` decodes.
    """

    ref: SliceRef
    image: bytes = field(default=b"", repr=False)
    problem: str | None = None  # the input policy's (or reader's) words when refused
    pending: Callable[[], tuple[bytes, str | None]] | None = field(
        default=None, repr=False, compare=False
    )

    def resolve(self) -> StudySlice:
        """Decode now if the reader left it for later (idempotent); returns the slice."""
        if self.pending is not None:
            self.image, self.problem = self.pending()
            self.pending = None
        return self


@dataclass
class Series:
    """One ordered series (or one NIfTI volume) with its slices and non-identifying facts."""

    kind: SeriesKind
    slices: list[StudySlice]
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    modality: str = ""
    description: str = ""  # SeriesDescription / file name: technical, not identifying
    # pydicom Datasets without pixel data, in slice order (DICOM only): the patient and study
    # modules the SR and Secondary Captures copy, and the instances they reference.
    headers: list[Any] = field(default_factory=list, repr=False)
    # Whole-series problems in words (missing slices, odd slice sizes, files skipped): shown with
    # the verdict; the series is still classified.
    warnings: list[str] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return len(self.slices)


@dataclass(frozen=True)
class SliceOutcome:
    """The model's answer for one slice (the single-image path's fields) or why it has none."""

    ref: SliceRef
    outcome: str  # one of the SLICE_* names above
    probabilities: dict[str, float] | None = None
    class_name: str | None = None
    confidence: float | None = None
    gate_score: float | None = None
    message: str | None = None  # why a slice failed, in words
    familiar: bool | None = None  # False: a brain MRI unlike the training data (a flag only)


@dataclass(frozen=True)
class StudyVerdict:
    """The study-level answer and the evidence behind it.

    ``verdict`` is a class name ("glioma", ..., "no_tumor"), :data:`STUDY_TUMOUR_TYPE_UNCERTAIN`
    or :data:`STUDY_UNCERTAIN`.
    ``key_slices`` are indices (``SliceRef.index``) of the slices that drove it, strongest first.
    """

    verdict: str
    probabilities: dict[str, float]
    key_slices: tuple[int, ...]
    n_slices: int
    n_classified: int
    n_uncertain: int
    n_not_brain_mri: int
    n_failed: int
    rule: str  # the aggregation rule and its parameters, for the record
    reason: str  # one sentence a radiologist can read


@dataclass
class StudyResult:
    """A series, the per-slice outcomes in slice order, and the study verdict."""

    series: Series
    slices: list[SliceOutcome]
    verdict: StudyVerdict
    model_name: str = ""
    model_version: str = ""
