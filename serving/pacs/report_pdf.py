"""The study's PDF report as a DICOM Encapsulated PDF, stored in the study beside the SR.

Built on highdicom's :class:`highdicom.base.SOPClass` (Patient, General Study, General Series,
General Equipment and SOP Common modules, copied from the source series as the SR copies them:
:func:`serving.pacs.sr.evidence_copies`), plus the Encapsulated Document module: the PDF, its MIME
type and length, and a Source Instance Sequence naming what the report was made from — the key
slices it shows and the SR whose verdict it prints — so a viewer can go from the document to
them. Modality ``DOC``, a new series of the source study. The PDF itself names no patient: the
DICOM header carries the identity a PACS files it under.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import highdicom as hd
from pydicom import Dataset
from pydicom.uid import EncapsulatedPDFStorage, ExplicitVRLittleEndian

import tumorlib
from serving.pacs.sr import MANUFACTURER, UTF8, evidence_copies, require_dicom, slice_ref
from tumorlib.studies.study import StudyResult

PDF_SERIES_NUMBER = 9003
PDF_SERIES_DESCRIPTION = "tumorlib study report (PDF, decision support)"
DOCUMENT_TITLE = "Brain MRI decision-support report"
MIME_PDF = "application/pdf"


def _reference(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class_uid
    item.ReferencedSOPInstanceUID = sop_instance_uid
    return item


def make_encapsulated_pdf(
    result: StudyResult,
    pdf: bytes,
    *,
    references: Sequence[Dataset] = (),
    series_number: int = PDF_SERIES_NUMBER,
) -> Dataset:
    """The Encapsulated PDF instance of ``pdf`` in the study of ``result``.

    ``references``: instances the report was made from beside the key slices (the SR).
    """
    if not pdf.startswith(b"%PDF"):
        raise ValueError("not a PDF document")
    source = evidence_copies(require_dicom(result))[0]
    now = dt.datetime.now()
    document = hd.base.SOPClass(
        study_instance_uid=str(source.StudyInstanceUID),
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        sop_class_uid=EncapsulatedPDFStorage,
        instance_number=1,
        modality="DOC",
        manufacturer=MANUFACTURER,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        patient_id=source.PatientID or None,
        patient_name=source.PatientName or None,
        patient_birth_date=source.PatientBirthDate or None,
        patient_sex=source.PatientSex or None,
        accession_number=source.AccessionNumber or None,
        study_id=source.StudyID or None,
        study_date=source.StudyDate or None,
        study_time=source.StudyTime or None,
        referring_physician_name=source.get("ReferringPhysicianName") or None,
        series_description=PDF_SERIES_DESCRIPTION,
        software_versions=tumorlib.__version__,
        specific_character_set=UTF8,
        content_date=now.date(),
        content_time=now.time(),
    )
    document.ConversionType = "WSD"  # SC Equipment (Type 1): made on a workstation
    document.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    document.BurnedInAnnotation = "YES"  # the PDF shows the slices with their answer
    document.DocumentTitle = DOCUMENT_TITLE
    document.ConceptNameCodeSequence = []
    document.MIMETypeOfEncapsulatedDocument = MIME_PDF
    document.EncapsulatedDocumentLength = len(pdf)
    document.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    sources = []
    for index in result.verdict.key_slices:
        ref = slice_ref(result, index)
        if ref.sop_instance_uid and ref.sop_class_uid:
            sources.append(_reference(ref.sop_class_uid, ref.sop_instance_uid))
    sources += [_reference(str(d.SOPClassUID), str(d.SOPInstanceUID)) for d in references]
    if sources:
        document.SourceInstanceSequence = sources
    return document


def document_pdf(ds: Dataset) -> bytes:
    """The PDF an Encapsulated PDF instance holds, without the even-length padding."""
    data = bytes(ds.EncapsulatedDocument)
    length = int(ds.get("EncapsulatedDocumentLength", len(data)))
    return data[:length]
