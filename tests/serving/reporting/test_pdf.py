"""The PDF report: it renders, says what the page says (read back with pypdf), carries the
similar cases, the model and the audit record, and names no patient unless asked."""

from __future__ import annotations

import io
import shutil
import subprocess

import pytest
from pypdf import PdfReader

from serving.clients.backend import Settings, make_backend
from serving.clients.prediction import Prediction
from serving.reporting.build import case_pdf
from serving.reporting.content import DISCLAIMER_TEXT
from tests.fixtures.ci import require
from tests.fixtures.serving import make_images
from tumorlib.contracts.serving_contract import NOT_BRAIN_MRI_MESSAGE, UNCERTAIN_MESSAGE

PATIENT = {"Patient's name": "DOE^JANE-SECRET", "Patient ID": "ID-424242"}


def text_of(pdf: bytes) -> str:
    reader = PdfReader(io.BytesIO(pdf))
    return "\n".join(page.extract_text() for page in reader.pages)


@pytest.fixture(scope="module")
def backend(similar_export):
    return make_backend(Settings(model_base_path=similar_export.base_path))


@pytest.fixture(scope="module")
def answered(backend):
    image = make_images(1, seed=71)[0]
    return image, backend.predict([image], None)[0]


def test_a_case_report_says_what_the_page_says(backend, answered):
    image, prediction = answered
    pdf = case_pdf(backend, image, prediction, None, k=4, audit_id="rec-1234", title="Image 1")
    reader = PdfReader(io.BytesIO(pdf))
    text = text_of(pdf)
    confidence = prediction.probabilities[prediction.class_name]
    assert f"({confidence:.1%})" in text and "Calibrated probabilities" in text
    assert DISCLAIMER_TEXT.split(".")[0] in text and "rec-1234" in text
    assert "4 most similar confirmed cases" in text and "similarity" in text
    assert "brain_mri version 1" in text and "80 clean/train slices" in text
    assert "Grad-CAM" in text and "SARTAJ (Bhuvaji et al., 2020)" in text
    images = sum(len(page.images) for page in reader.pages)
    assert images >= 2 + 4  # the slice, its heatmap, four thumbnails
    assert reader.metadata.title and "DOE" not in str(reader.metadata)
    for secret in PATIENT.values():
        assert secret.split("^")[0] not in text


def test_patient_identifiers_appear_only_when_passed(backend, answered):
    image, prediction = answered
    text = text_of(case_pdf(backend, image, prediction, None, k=0, patient=PATIENT))
    assert "DOE^JANE-SECRET" in text and "ID-424242" in text


def test_uncertain_and_refused_answers_read_as_on_the_page(backend, answered):
    image, prediction = answered
    probabilities = dict(prediction.probabilities)
    uncertain = Prediction(probabilities, prediction.class_index, prediction.class_name,
                           abstain=True)  # fmt: skip
    text = text_of(case_pdf(backend, image, uncertain, None, k=3))
    assert UNCERTAIN_MESSAGE in text and "not a reliable answer" in text
    refused = Prediction(probabilities, prediction.class_index, prediction.class_name,
                         in_distribution=False, gate_score=3.2)  # fmt: skip
    pdf = case_pdf(backend, image, refused, None, k=3)
    text = text_of(pdf)
    assert NOT_BRAIN_MRI_MESSAGE in text and "score 3.20" in text
    assert "similar confirmed cases" not in text and "Calibrated probabilities" not in text
    assert sum(len(p.images) for p in PdfReader(io.BytesIO(pdf)).pages) == 1  # the slice only


def test_the_pages_render(backend, answered, tmp_path):
    require(shutil.which("pdftoppm") is not None, "pdftoppm missing: apt-get install poppler-utils")
    image, prediction = answered
    path = tmp_path / "case.pdf"
    path.write_bytes(case_pdf(backend, image, prediction, None, k=5))
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(path), str(tmp_path / "page")], check=True)
    assert sorted(p.name for p in tmp_path.glob("page-*.png"))
