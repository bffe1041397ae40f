"""The study's PDF report as an Encapsulated PDF in a real Orthanc: stored next to the SR, read
back with the right study, patient and source references, its text the verdict's, no patient
name inside the PDF, valid DICOM."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pydicom
import pytest
from pypdf import PdfReader

from serving.clients.backend import Settings, make_backend
from serving.pacs.dicomweb import Pacs
from serving.pacs.report_pdf import DOCUMENT_TITLE, document_pdf
from serving.pacs.round_trip import classify_study
from tests.fixtures.dicom_validation import dciodvfy_errors
from tests.fixtures.orthanc import OrthancServer, start_orthanc
from tests.fixtures.studies import PATIENT_ID, PATIENT_NAME, make_dicom_series, phantom
from tests.serving.pacs.test_pacs_orthanc import _series
from tumorlib.contracts.serving_contract import DISCLAIMER
from tumorlib.studies.study import verdict_words

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def orthanc() -> Iterator[OrthancServer]:
    yield from start_orthanc()


def test_the_pdf_report_is_stored_beside_the_sr_and_reads_back_with_its_references(
    orthanc: OrthancServer, similar_export, tmp_path
):
    files = make_dicom_series(phantom(6, size=48, seed=3))
    orthanc.upload(files)
    headers = [pydicom.dcmread(io.BytesIO(b), stop_before_pixels=True) for _, b in files]
    study_uid = str(headers[0].StudyInstanceUID)
    pacs = Pacs(orthanc.dicomweb_url, user=orthanc.user, password=orthanc.password)
    backend = make_backend(Settings(model_base_path=similar_export.base_path))

    (report,) = classify_study(pacs, study_uid, backend, None)
    assert report.pdf_uid in report.stored and not report.notes
    stored = _series(orthanc, study_uid)
    (sr,), (document,) = stored["SR"], stored["DOC"]
    assert str(document.SOPInstanceUID) == report.pdf_uid
    assert document.SOPClassUID == pydicom.uid.EncapsulatedPDFStorage
    assert document.StudyInstanceUID == study_uid and document.PatientID == PATIENT_ID
    assert document.SeriesInstanceUID not in {sr.SeriesInstanceUID, headers[0].SeriesInstanceUID}
    assert document.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert document.DocumentTitle == DOCUMENT_TITLE
    sources = {
        (str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID))
        for i in document.SourceInstanceSequence
    }
    key_slices = {
        (str(headers[0].SOPClassUID), str(report.result.series.slices[i].ref.sop_instance_uid))
        for i in report.result.verdict.key_slices
    }
    assert sources == key_slices | {(str(sr.SOPClassUID), str(sr.SOPInstanceUID))}

    pdf = document_pdf(document)
    assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF")
    text = " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert f"Study: {verdict_words(report.result.verdict.verdict)}" in text
    assert DISCLAIMER in text and "most similar confirmed cases" in text
    assert PATIENT_NAME.split("^")[0] not in text and PATIENT_ID not in text
    assert dciodvfy_errors(document, tmp_path) == []
