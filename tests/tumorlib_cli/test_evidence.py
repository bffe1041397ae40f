"""``--similar K`` and ``--report DIR`` on ``tumorlib predict`` and ``tumorlib study``: the nearest
confirmed cases in the CSV and on the terminal, numbered PDF reports that name no patient and no
input file, on the fixture export with a similar-cases index."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from pypdf import PdfReader

from serving.clients.inprocess import InProcessModel
from tests.fixtures.studies import PATIENT_NAME, make_dicom_series, phantom
from tests.tumorlib.inputs.test_dicom import PATIENT, make_dicom, ramp
from tests.tumorlib_cli.test_predict import encode
from tumorlib_cli.predict import main as predict
from tumorlib_cli.study import main as study


def pdf_text(path) -> str:
    return "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(path.read_bytes())).pages)


@pytest.fixture()
def slices(tmp_path):
    rng = np.random.default_rng(5)
    folder = tmp_path / "slices"
    folder.mkdir()
    (folder / "DOE_JANE_scan.png").write_bytes(
        encode(rng.integers(0, 255, (40, 50, 3), np.uint8), "PNG")
    )
    (folder / "c.dcm").write_bytes(make_dicom(np.stack([ramp()])))
    return folder


def test_predict_adds_similar_cases_and_a_report_per_image(
    similar_export, slices, tmp_path, capsys
):
    out, reports = tmp_path / "results.csv", tmp_path / "reports"
    argv = [str(slices), "-o", str(out), "--model-base-path", str(similar_export.base_path),
            "--similar", "3", "--report", str(reports), "--no-progress"]  # fmt: skip
    assert predict(argv) == 0, capsys.readouterr().err
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    model = InProcessModel(similar_export.base_path)
    for row in rows:
        data = (slices / "DOE_JANE_scan.png").read_bytes() if row["path"].endswith(".png") else None
        cases = row["similar_cases"].split("; ")
        assert len(cases) == 3 and all(":" in c for c in cases)
        assert row["neighbours_agree"] in ("true", "false") and row["neighbour_majority"]
        if data is not None:  # the CSV's neighbours are the model's, nearest first
            expected = model.similar([data], k=3)[0].cases
            assert [c.split(":")[0] for c in cases] == [c.label for c in expected]
    files = sorted(p.name for p in reports.iterdir())
    assert files == ["report-0001.pdf", "report-0002.pdf"]
    assert {row["report"] for row in rows} == {str(reports / f) for f in files}
    for name in files:
        text = pdf_text(reports / name)
        assert "3 most similar confirmed cases" in text and "Audit record" in text
        for secret in ("DOE", "JANE", PATIENT, "scan.png", "c.dcm"):
            assert secret not in text


def test_study_prints_similar_cases_and_writes_the_series_report(similar_export, tmp_path, capsys):
    folder = tmp_path / "series"
    folder.mkdir()
    for name, data in make_dicom_series(phantom(5, size=40, seed=2)):
        (folder / name).write_bytes(data)
    reports = tmp_path / "reports"
    argv = ["classify", str(folder), "--model-base-path", str(similar_export.base_path),
            "--similar", "2", "--report", str(reports), "--no-progress"]  # fmt: skip
    assert study(argv) == 0
    out = capsys.readouterr().out
    assert "similar to key slice" in out and f"report: {reports / 'study-report-01.pdf'}" in out
    text = pdf_text(reports / "study-report-01.pdf")
    assert "Study:" in text and "Key slice" in text and "2 most similar confirmed cases" in text
    assert PATIENT_NAME.split("^")[0] not in text
