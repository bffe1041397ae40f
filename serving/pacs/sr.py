"""The study verdict as a DICOM Comprehensive SR: the PACS keeps what the model said, coded.

Why Comprehensive SR and not TID 1500 (``highdicom.sr.MeasurementReport``): TID 1500 is built for
measurements of tracked regions (its qualitative evaluations are codes only, and it has no place
for free text), while this report is a classification of a whole series with free text that must
travel with it (the disclaimer, the aggregation rule, the reason). Comprehensive SR takes coded
findings, numbers, text and image references in one tree, highdicom builds and validates it,
and viewers (OHIF's SR viewport, dcm4che's and Orthanc's viewers) render it as a readable tree.

Findings are coded in standard schemes a PACS, a registry or a viewer understands (SNOMED CT for
the tumour types, DICOM for "no abnormality"; :data:`VERDICT_CODES`); only what no standard names
— the container of study scores, the slice counts, the disclaimer — uses the declared private
scheme ``99TUMORLIB``. The tree (``docs/pacs.md``)::

    CONTAINER  Diagnostic Imaging Report (LN 18748-4)
      HAS OBS CONTEXT  device observer (TID 1004): tumorlib, the model name
      HAS CONCEPT MOD  Algorithm Name / Version / Parameters (TID 4019): model, version, rule
      CONTAINS  CODE Finding (DCM 121071) = the study verdict (SCT / DCM code)
                  HAS PROPERTIES  TEXT Comment (DCM 121106) = the reason, in words
                  INFERRED FROM   IMAGE Best illustration of finding (DCM 121080), per key slice
      CONTAINS  CONTAINER Study probabilities (99TUMORLIB)
                  CONTAINS  CODE Finding = class, HAS PROPERTIES NUM Probability (DCM 122157)
      CONTAINS  CONTAINER Slice outcomes (99TUMORLIB): NUM per count, unit "1"
      CONTAINS  TEXT Decision support disclaimer (99TUMORLIB) = ``DISCLAIMER``

The report is marked PRELIMINARY, COMPLETE and UNVERIFIED: a device's output that no radiologist
has signed.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
import warnings
from collections.abc import Sequence
from typing import Any

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

import tumorlib
from tumorlib.contracts.classes import CLASS_NAMES
from tumorlib.contracts.serving_contract import DISCLAIMER, MODEL_NAME
from tumorlib.inputs.dicom import silence_pydicom_logging
from tumorlib.studies.study import (
    STUDY_TUMOUR_TYPE_UNCERTAIN,
    STUDY_UNCERTAIN,
    SliceRef,
    StudyResult,
)

MANUFACTURER = "tumorlib"
SR_SERIES_NUMBER = 9001
SR_SERIES_DESCRIPTION = "tumorlib study classification (decision support)"
UTF8 = "ISO_IR 192"  # the verdict wording and the disclaimer use an em dash

# A private coding scheme only for what no standard names (the study-score container, the slice
# counts, the disclaimer). Declared in CodingSchemeIdentificationSequence; code values fit the
# 16-character Code Value (SH).
SCHEME = "99TUMORLIB"
SCHEME_NAME = "tumorlib brain MRI classification codes"
SNOMED = "SCT"
DICOM = "DCM"


def _code(value: str, meaning: str) -> Code:
    return Code(value, SCHEME, meaning)


# Each study verdict as a standard finding: the three tumour types (SNOMED CT disorders), "no
# tumour" as DICOM's "No abnormality" (CID 6030's term for a negative read), a tumour of
# unsupported type as SNOMED CT's "Neoplasm of brain", and "uncertain" as SNOMED CT's
# "Indeterminate" qualifier.
VERDICT_CODES: dict[str, Code] = {
    "glioma": Code("393564001", SNOMED, "Glioma"),
    "meningioma": Code("302820008", SNOMED, "Intracranial meningioma"),
    "pituitary": Code("254956000", SNOMED, "Pituitary adenoma"),
    "no_tumor": Code("111286", DICOM, "No abnormality"),
    STUDY_TUMOUR_TYPE_UNCERTAIN: Code("126952004", SNOMED, "Neoplasm of brain"),
    STUDY_UNCERTAIN: Code("82334004", SNOMED, "Indeterminate"),
}
assert set(CLASS_NAMES) <= set(VERDICT_CODES), "every class needs a standard code"
STUDY_PROBABILITIES = _code("STUDY-PROBS", "Study-level class probabilities")
SLICE_OUTCOMES = _code("SLICE-OUTCOMES", "Slice outcomes")
DISCLAIMER_CODE = _code("DISCLAIMER", "Decision support disclaimer")
COUNT_CODES: dict[str, Code] = {
    "n_slices": _code("N-SLICES", "Slices in series"),
    "n_classified": _code("N-CLASSIFIED", "Slices classified"),
    "n_uncertain": _code("N-UNCERTAIN", "Slices uncertain"),
    "n_not_brain_mri": _code("N-NOT-BRAIN-MRI", "Slices not brain MRI"),
    "n_failed": _code("N-FAILED", "Slices failed"),
}

# Patient and study attributes highdicom reads from the first evidence dataset (Type 2: may be
# empty, must be present).
_TYPE2 = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


silence_pydicom_logging()  # pydicom's records quote header values (a malformed birth date)


class DicomResultsError(ValueError):
    """The study cannot have DICOM results (not DICOM, no headers, nothing to reference)."""


def require_dicom(result: StudyResult) -> list[Dataset]:
    """The series' headers, one per SOP instance; a clear error for NIfTI or header-less input."""
    series = result.series
    if series.kind != "dicom":
        raise DicomResultsError("DICOM results need a DICOM study (this series is NIfTI).")
    if not series.headers or not series.study_instance_uid:
        raise DicomResultsError(
            "DICOM results need a DICOM study with its headers (none were read)."
        )
    unique: dict[str, Dataset] = {}
    for header in series.headers:
        unique.setdefault(str(header.SOPInstanceUID), header)
    return list(unique.values())


def evidence_copies(headers: Sequence[Dataset]) -> list[Dataset]:
    """Copies of the headers with missing Type 2 patient/study attributes present but empty, and
    malformed dates and times emptied: a PatientBirthDate of ``not-a-date`` would otherwise stop
    highdicom with a message quoting it (and reach a terminal)."""
    copies = []
    with warnings.catch_warnings():  # pydicom's warnings quote the values they dislike
        warnings.simplefilter("ignore")
        for header in headers:
            item = copy.deepcopy(header)
            for keyword in _TYPE2:
                if keyword not in item:
                    setattr(item, keyword, "")
            _empty_malformed_dates(item)
            copies.append(item)
    return copies


_DATE_PATTERNS = {
    "DA": re.compile(r"^\d{8}$"),
    "TM": re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$"),
    "DT": re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$"),
}


def _empty_malformed_dates(item: Dataset) -> None:
    """Top-level DA/TM/DT values that are not well formed become empty (Type 2: unknown)."""
    for element in item:
        pattern = _DATE_PATTERNS.get(str(element.VR))
        if pattern is None or element.value in (None, ""):
            continue
        values = element.value if isinstance(element.value, list | tuple) else [element.value]
        text = [str(v).strip() for v in values]
        if not all(pattern.match(v) and _plausible(element.VR, v) for v in text):
            element.value = ""


def _plausible(vr: str, value: str) -> bool:
    if vr != "DA":
        return True
    try:
        dt.date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return False
    return True


def slice_ref(result: StudyResult, index: int) -> SliceRef:
    """The reference of the slice with ``SliceRef.index == index``."""
    for study_slice in result.series.slices:
        if study_slice.ref.index == index:
            return study_slice.ref
    raise DicomResultsError(f"key slice {index} is not a slice of this series")


def _image_item(ref: SliceRef, relationship: str) -> hd.sr.ImageContentItem:
    if not ref.sop_instance_uid or not ref.sop_class_uid:
        raise DicomResultsError(f"slice {ref.index} has no SOP instance to reference")
    return hd.sr.ImageContentItem(
        name=codes.DCM.BestIllustrationOfFinding,
        referenced_sop_class_uid=ref.sop_class_uid,
        referenced_sop_instance_uid=ref.sop_instance_uid,
        referenced_frame_numbers=ref.frame,
        relationship_type=relationship,
    )


def _verdict_item(result: StudyResult) -> hd.sr.CodeContentItem:
    verdict = result.verdict
    item = hd.sr.CodeContentItem(
        name=codes.DCM.Finding, value=VERDICT_CODES[verdict.verdict], relationship_type="CONTAINS"
    )
    children: list[Any] = [
        hd.sr.TextContentItem(codes.DCM.Comment, verdict.reason, "HAS PROPERTIES")
    ]
    children += [_image_item(slice_ref(result, i), "INFERRED FROM") for i in verdict.key_slices]
    item.ContentSequence = hd.sr.ContentSequence(children)
    return item


def _probabilities_item(result: StudyResult) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(STUDY_PROBABILITIES, relationship_type="CONTAINS")
    items = []
    for name in CLASS_NAMES:
        finding = hd.sr.CodeContentItem(codes.DCM.Finding, VERDICT_CODES[name], "CONTAINS")
        probability = float(result.verdict.probabilities.get(name, 0.0))
        finding.ContentSequence = hd.sr.ContentSequence(
            [
                hd.sr.NumContentItem(
                    codes.DCM.Probability,
                    round(probability, 6),
                    codes.UCUM.Ratio,
                    relationship_type="HAS PROPERTIES",
                )
            ]
        )
        items.append(finding)
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _counts_item(result: StudyResult) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(SLICE_OUTCOMES, relationship_type="CONTAINS")
    container.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.NumContentItem(
                code, int(getattr(result.verdict, field)), codes.UCUM.NoUnits, None, "CONTAINS"
            )
            for field, code in COUNT_CODES.items()
        ]
    )
    return container


def _context_items(result: StudyResult) -> list[Any]:
    model = result.model_name or MODEL_NAME
    version = result.model_version or "unknown"
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        # Stable per model: the same device observer across reports, without a registry.
        uid=generate_uid(entropy_srcs=[MANUFACTURER, model]),
        name=MANUFACTURER,
        manufacturer_name=MANUFACTURER,
        model_name=model,
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device, observer_identifying_attributes=device
    )
    algorithm = hd.sr.AlgorithmIdentification(
        name=model,
        version=version,
        parameters=[result.verdict.rule],
        manufacturer=MANUFACTURER,
    )
    return [*observer, *algorithm]


def report_content(result: StudyResult) -> hd.sr.ContainerContentItem:
    """The SR content tree for ``result`` (see the module docstring)."""
    root = hd.sr.ContainerContentItem(codes.LN.DiagnosticImagingReport)
    root.ContentSequence = hd.sr.ContentSequence(
        [
            *_context_items(result),
            _verdict_item(result),
            _probabilities_item(result),
            _counts_item(result),
            hd.sr.TextContentItem(DISCLAIMER_CODE, DISCLAIMER, "CONTAINS"),
        ]
    )
    return root


def coding_scheme_identification() -> Dataset:
    """The declaration of the private scheme (required when a private designator is used)."""
    item = Dataset()
    item.CodingSchemeDesignator = SCHEME
    item.CodingSchemeName = SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = MANUFACTURER
    return item


def make_structured_report(
    result: StudyResult,
    *,
    series_number: int = SR_SERIES_NUMBER,
    instance_number: int = 1,
) -> hd.sr.ComprehensiveSR:
    """A Comprehensive SR in the source study: same StudyInstanceUID and patient, new series."""
    headers = require_dicom(result)
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence_copies(headers),
        content=report_content(result),
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=SR_SERIES_DESCRIPTION,
        software_versions=tumorlib.__version__,
        specific_character_set=UTF8,
    )
    sr.CodingSchemeIdentificationSequence = [coding_scheme_identification()]
    return sr
