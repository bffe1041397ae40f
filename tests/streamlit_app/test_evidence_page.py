"""The page's evidence (AppTest, real export with a similar-cases index): the nearest confirmed
cases under each answer with label, similarity and collection; the PDF report button with the
audit record id; no patient name in a DICOM upload's report; nothing for an export without index.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from pypdf import PdfReader

from serving.clients.inprocess import InProcessModel
from streamlit_app import backend as backends
from streamlit_app.feedback import RECORDS_KEY
from streamlit_app.report_view import PDFS_KEY
from tests.streamlit_app.test_app import (
    _assert_no_stack_trace,
    _images,
    _page,
    _upload,
    good_png,
    page_env,  # noqa: F401  (fixture)
)
from tests.tumorlib.inputs.test_dicom import PATIENT, make_dicom, ramp
from tumorlib.contracts.classes import DISPLAY_NAMES


def pdf_text(pdf: bytes) -> str:
    return "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)


@pytest.fixture()
def page(page_env, similar_export):  # noqa: F811
    page_env.setenv(backends.ENV_MODEL_BASE_PATH, str(similar_export.base_path))
    return _page().run()


def test_the_page_shows_the_nearest_confirmed_cases_and_a_pdf_report(page, similar_export):
    data = good_png(81)
    at = _upload(page, [("DOE_JANE.png", data)])
    _assert_no_stack_trace(at)
    assert at.checkbox(key="similar_show_0").value is True
    expected = InProcessModel(similar_export.base_path).similar([data], k=10)[0]
    shown = [caption for caption, _ in _images(at)][1:]  # after the uploaded slice itself
    assert shown == [
        f"{DISPLAY_NAMES[c.label]} · {c.similarity:.2f} · {c.source}" for c in expected.cases[:5]
    ]
    words = " ".join(str(e.value) for e in [*at.caption, *at.warning])
    assert "nearest confirmed cases are mostly" in words and "80 indexed" in words

    at.button(key="report_make_0").click().run()
    _assert_no_stack_trace(at)
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Download report (PDF): image 1" in labels
    (pdf,) = at.session_state[PDFS_KEY].values()
    text = pdf_text(pdf)
    (record_id,) = at.session_state[RECORDS_KEY].values()
    assert record_id in text and "5 most similar confirmed cases" in text
    assert f"Predicted: {DISPLAY_NAMES[expected.class_name]}" in text or "Uncertain" in text
    assert "DOE" not in text and "JANE" not in text  # never the upload's file name

    at.checkbox(key="similar_show_0").uncheck().run()
    assert len(_images(at)) == 1


def test_a_dicom_uploads_report_names_no_patient(page):
    dicom = make_dicom(np.stack([ramp()]), window=(2000.0, 4000.0))
    at = _upload(page, [("scan.dcm", dicom)])
    _assert_no_stack_trace(at)
    at.button(key="report_make_0").click().run()
    (pdf,) = at.session_state[PDFS_KEY].values()
    text = pdf_text(pdf)
    assert "Image 1" in text
    for secret in (PATIENT, PATIENT.split("^")[0], "scan.dcm"):
        assert secret not in text


def test_the_study_view_shows_similar_cases_and_the_study_report(page):
    from tests.fixtures.studies import PATIENT_NAME, make_dicom_series, phantom

    files = make_dicom_series(phantom(5, size=40, seed=4))
    page.file_uploader[0].set_value([(name, data, "application/dicom") for name, data in files])
    at = page.run()
    _assert_no_stack_trace(at)
    assert at.checkbox(key="similar_show_study_0").value is True
    assert any("nearest confirmed cases" in str(c.value) for c in [*at.caption, *at.warning])
    at.button(key="report_make_study_0").click().run()
    _assert_no_stack_trace(at)
    (pdf,) = at.session_state[PDFS_KEY].values()
    text = pdf_text(pdf)
    assert "Study:" in text and "Key slice" in text and "most similar confirmed cases" in text
    assert PATIENT_NAME.split("^")[0] not in text  # the patient tags were not asked for


def test_an_export_without_an_index_shows_no_similar_cases(page_env, serving_stack):  # noqa: F811
    page_env.setenv(backends.ENV_MODEL_BASE_PATH, str(serving_stack.base_path))
    at = _upload(_page().run(), [("slice.png", good_png(82))])
    _assert_no_stack_trace(at)
    assert not [c for c in at.checkbox if c.key.startswith("similar_show")]
