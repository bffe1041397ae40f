"""``tumorlib pacs`` against a real Orthanc: a study goes in, is classified by the fixture model,
and its SR and Grad-CAM captures come back in the same study; refused credentials are errors."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from serving.pacs.dicomweb import PASSWORD_ENV, USER_ENV, Pacs, PacsError
from serving.pacs.round_trip import classify_study
from serving.pacs.sr import DISCLAIMER_CODE, SCHEME, VERDICT_CODES
from tests.fixtures.dicom_validation import dciodvfy_errors
from tests.fixtures.orthanc import OrthancServer, start_orthanc
from tests.fixtures.studies import PATIENT_ID, PATIENT_NAME, make_dicom_series, make_sr, phantom
from tumorlib.contracts.serving_contract import DISCLAIMER
from tumorlib.studies.study import verdict_words
from tumorlib_cli.__main__ import main as tumorlib

pytestmark = pytest.mark.slow
STANDARD_VALUES = {code.value for code in VERDICT_CODES.values()}


@pytest.fixture(scope="module")
def orthanc() -> Iterator[OrthancServer]:
    """One Orthanc for the module (it starts in under a second; the study is shared)."""
    yield from start_orthanc()


@pytest.fixture(scope="module")
def study(orthanc: OrthancServer) -> dict:
    """A generated 6-slice MR series with fake patient tags, stored in Orthanc."""
    files = make_dicom_series(phantom(6, size=48))
    orthanc.upload(files)
    headers = [pydicom.dcmread(io.BytesIO(b), stop_before_pixels=True) for _, b in files]
    return {
        "study_uid": str(headers[0].StudyInstanceUID),
        "series_uid": str(headers[0].SeriesInstanceUID),
        "sop_uids": {str(h.SOPInstanceUID) for h in headers},
    }


@pytest.fixture
def credentials(monkeypatch, orthanc: OrthancServer) -> None:
    monkeypatch.setenv(USER_ENV, orthanc.user)
    monkeypatch.setenv(PASSWORD_ENV, orthanc.password)


def _series(orthanc: OrthancServer, study_uid: str) -> dict[str, list[pydicom.Dataset]]:
    """Every instance of the study read back over WADO-RS, by modality."""
    client = DICOMwebClient(orthanc.dicomweb_url, session=_session(orthanc))
    by_modality: dict[str, list[pydicom.Dataset]] = {}
    for series in client.search_for_series(study_uid):
        uid = pydicom.Dataset.from_json(series).SeriesInstanceUID
        for ds in client.retrieve_series(study_uid, uid):
            by_modality.setdefault(ds.Modality, []).append(ds)
    return by_modality


def _session(orthanc: OrthancServer) -> requests.Session:
    session = requests.Session()
    session.auth = orthanc.auth
    return session


def _items(content) -> list:
    found = []
    for item in content:
        found.append(item)
        found += _items(item.get("ContentSequence", []))
    return found


def test_classify_stores_an_sr_and_captures_in_the_study(
    orthanc: OrthancServer,
    study,
    credentials,
    fixture_export,
    capsys,
    tmp_path,
):
    base = ["pacs", "classify", "--url", orthanc.dicomweb_url, "--study", study["study_uid"]]
    model = ["--model-base-path", str(fixture_export)]

    assert tumorlib([*base, *model, "--no-store"]) == 0
    assert set(_series(orthanc, study["study_uid"])) == {"MR"}  # --no-store stored nothing

    assert tumorlib([*base, *model]) == 0
    out, err = capsys.readouterr()
    assert f"series {study['series_uid']}" in out and "stored in the study: 1 SR" in out
    assert DISCLAIMER in out
    for secret in (PATIENT_NAME, PATIENT_ID):
        assert secret not in out and secret not in err

    stored = _series(orthanc, study["study_uid"])
    assert sorted(stored) == ["DOC", "MR", "OT", "SR"]  # DOC: the PDF report (issue 26)
    (sr,) = stored["SR"]
    assert sr.StudyInstanceUID == study["study_uid"] and sr.PatientID == PATIENT_ID
    assert sr.SeriesInstanceUID != study["series_uid"] and sr.Manufacturer == "tumorlib"

    items = _items(sr.ContentSequence)
    verdicts = {
        (c.CodeValue, c.CodingSchemeDesignator)
        for i in items
        if i.ValueType == "CODE"
        for c in i.ConceptCodeSequence
    }
    assert {(c.value, c.scheme_designator) for c in VERDICT_CODES.values()} & verdicts
    assert all(scheme != SCHEME for _, scheme in verdicts if _ in STANDARD_VALUES)
    # The study verdict (the Finding with the reason under it) is what the command printed.
    (verdict,) = [
        i.ConceptCodeSequence[0]
        for i in sr.ContentSequence
        if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeValue == "121071"
    ]
    printed = next(line for line in out.splitlines() if line.startswith("series "))
    stated = [v for v, code in VERDICT_CODES.items() if code.value == verdict.CodeValue]
    assert stated and printed.endswith(f"): {verdict_words(stated[0])}")
    assert verdict.CodingSchemeDesignator in ("SCT", "DCM")
    texts = {
        i.ConceptNameCodeSequence[0].CodeValue: i.TextValue for i in items if i.ValueType == "TEXT"
    }
    assert texts[DISCLAIMER_CODE.value] == DISCLAIMER
    key_refs = [
        i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in items if i.ValueType == "IMAGE"
    ]
    assert key_refs and set(key_refs) <= study["sop_uids"]

    captures = stored["OT"]
    assert len(captures) == len(key_refs)  # the fixture model has Grad-CAM: one per key slice
    capture_refs = {c.SourceImageSequence[0].ReferencedSOPInstanceUID for c in captures}
    assert capture_refs == set(key_refs)
    for stored_object in [sr, *captures]:  # what the PACS keeps is valid DICOM: no errors
        assert dciodvfy_errors(stored_object, tmp_path) == []
    for capture in captures:
        assert capture.StudyInstanceUID == study["study_uid"]
        assert capture.BurnedInAnnotation == "YES"
        assert "decision support, not a diagnosis" in capture.ImageComments
        assert capture.pixel_array.ndim == 3 and capture.pixel_array.shape[2] == 3


def test_studies_lists_the_study_without_patient_attributes(
    orthanc: OrthancServer,
    study,
    credentials,
    capsys,
):
    assert tumorlib(["pacs", "studies", "--url", orthanc.dicomweb_url]) == 0
    out, err = capsys.readouterr()
    assert study["study_uid"] in out
    for secret in (PATIENT_NAME, PATIENT_ID):
        assert secret not in out and secret not in err


def test_wrong_password_is_a_clear_error(
    orthanc: OrthancServer,
    study,
    monkeypatch,
    capsys,
):
    monkeypatch.setenv(USER_ENV, orthanc.user)
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    argv = ["pacs", "classify", "--url", orthanc.dicomweb_url, "--study", study["study_uid"]]
    assert tumorlib(argv) == 1
    err = capsys.readouterr().err
    assert "refused the credentials (HTTP 401)" in err and "Traceback" not in err
    assert "not-the-password" not in err


def test_no_credentials_are_refused(orthanc: OrthancServer, study, monkeypatch, capsys):
    monkeypatch.delenv(USER_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    answer = requests.get(f"{orthanc.dicomweb_url}/studies", timeout=10)
    assert answer.status_code == 401
    with pytest.raises(PacsError, match="requires credentials"):
        Pacs(orthanc.dicomweb_url).find_studies()
    assert tumorlib(["pacs", "studies", "--url", orthanc.dicomweb_url]) == 1
    assert "requires credentials" in capsys.readouterr().err


def test_retrieval_stops_at_the_policy_limit_before_downloading(
    orthanc: OrthancServer,
    study,
):
    pacs = Pacs(orthanc.dicomweb_url, user=orthanc.user, password=orthanc.password)
    with pytest.raises(PacsError, match="holds 6 files; the limit is 3"):
        pacs.retrieve_series(study["study_uid"], study["series_uid"], max_instances=3)
    with pytest.raises(PacsError, match="the limit is 0.0 MB"):
        pacs.retrieve_series(study["study_uid"], study["series_uid"], max_bytes=1000)


def test_every_mr_series_or_the_one_asked_is_classified(orthanc: OrthancServer, fixture_export):
    from pydicom.uid import generate_uid

    from serving.clients.backend import Settings, make_backend

    study_uid = generate_uid()
    first = make_dicom_series(phantom(4, size=40), study_uid=study_uid, prefix="A")
    second = make_dicom_series(phantom(5, size=40, seed=1), study_uid=study_uid, prefix="B")
    orthanc.upload(first + second)
    first_uid = str(pydicom.dcmread(io.BytesIO(first[0][1])).SeriesInstanceUID)
    pacs = Pacs(orthanc.dicomweb_url, user=orthanc.user, password=orthanc.password)
    backend = make_backend(Settings(model_base_path=fixture_export))

    (only,) = classify_study(pacs, study_uid, backend, None, series_uid=first_uid)
    assert only.series_uid == first_uid and only.result.verdict.n_slices == 4
    assert len(_series(orthanc, study_uid)["SR"]) == 1

    reports = classify_study(pacs, study_uid, backend, None)  # the SR and OT series are skipped
    assert sorted(r.result.verdict.n_slices for r in reports) == [4, 5]
    stored = _series(orthanc, study_uid)
    assert len(stored["SR"]) == 3
    evidence = {
        str(
            sr.CurrentRequestedProcedureEvidenceSequence[0]
            .ReferencedSeriesSequence[0]
            .SeriesInstanceUID
        )
        for sr in stored["SR"]
    }
    assert len(evidence) == 2 and first_uid in evidence


def test_a_study_without_mr_series_is_a_clear_error(orthanc: OrthancServer):
    from pydicom.uid import generate_uid

    study_uid = generate_uid()
    orthanc.upload([("sr.dcm", make_sr(study_uid=study_uid))])
    pacs = Pacs(orthanc.dicomweb_url, user=orthanc.user, password=orthanc.password)
    with pytest.raises(PacsError, match="has no MR series to classify \\(modalities: SR\\)"):
        classify_study(pacs, study_uid, backend=None, version=None)  # type: ignore[arg-type]
    with pytest.raises(PacsError, match="has no series 1.2.3"):
        pacs.retrieve_series(study_uid, "1.2.3")


def _hostile_study(orthanc: OrthancServer) -> str:
    """A study whose tags attack the terminal and the date parser: an escape sequence in the
    descriptions, a birth date that is not a date (what pydicom and highdicom quote)."""
    from pydicom.uid import generate_uid

    study_uid = generate_uid()
    files = []
    for name, data in make_dicom_series(phantom(4, size=40, seed=3), study_uid=study_uid):
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.StudyDescription = "MR \x1b[2J\x1b[31mBRAIN"
        ds.SeriesDescription = "T1 \x1b]0;owned\x07AX"
        with warnings.catch_warnings():  # pydicom objects to it, quoting it: that is the point
            warnings.simplefilter("ignore")
            ds.PatientBirthDate = HOSTILE_BIRTH_DATE
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        files.append((name, buffer.getvalue()))
    orthanc.upload(files)
    return study_uid


HOSTILE_BIRTH_DATE = "not-a-date-SECRET"


def test_hostile_tags_never_reach_the_terminal_and_results_are_still_stored(
    orthanc: OrthancServer, credentials, fixture_export, capsys, tmp_path
):
    study_uid = _hostile_study(orthanc)
    assert tumorlib(["pacs", "studies", "--url", orthanc.dicomweb_url]) == 0
    base = ["pacs", "classify", "--url", orthanc.dicomweb_url, "--study", study_uid]
    assert tumorlib([*base, "--model-base-path", str(fixture_export), "--no-store"]) == 0
    assert tumorlib([*base, "--model-base-path", str(fixture_export)]) == 0
    out, err = capsys.readouterr()
    for secret in ("SECRET", PATIENT_NAME, PATIENT_ID, "\x1b", "\x07"):
        assert secret not in out + err, secret
    assert "\\x1b[2J" in out  # the description is shown, escaped
    stored = _series(orthanc, study_uid)
    (sr,) = stored["SR"]
    assert sr.PatientBirthDate == "" and sr.PatientID == PATIENT_ID
    for stored_object in [sr, *stored["OT"]]:
        assert dciodvfy_errors(stored_object, tmp_path) == []


def test_a_missing_study_is_reported_before_any_model_is_loaded(
    orthanc: OrthancServer, credentials, tmp_path, capsys
):
    no_model = tmp_path / "no-models-here"
    argv = ["pacs", "classify", "--url", orthanc.dicomweb_url, "--study", "1.2.3.4.5.6.7"]
    assert tumorlib([*argv, "--model-base-path", str(no_model)]) == 1
    err = capsys.readouterr().err
    assert "has no study 1.2.3.4.5.6.7" in err and "No exported model" not in err


def test_the_rest_root_instead_of_the_dicomweb_root_is_named(orthanc, credentials, capsys):
    assert tumorlib(["pacs", "studies", "--url", orthanc.url]) == 1
    err = capsys.readouterr().err
    assert f"is {orthanc.url} the DICOMweb root" in err
    assert "Traceback" not in err and "Expecting value" not in err


def test_the_patient_and_accession_filters_find_only_their_study(
    orthanc: OrthancServer, study, credentials, capsys
):
    url = ["pacs", "studies", "--url", orthanc.dicomweb_url]
    assert tumorlib([*url, "--patient-id", PATIENT_ID]) == 0
    assert study["study_uid"] in capsys.readouterr().out
    assert tumorlib([*url, "--patient-id", "NO-SUCH-PATIENT"]) == 0
    out, err = capsys.readouterr()
    assert study["study_uid"] not in out and "0 studies" in err
    assert tumorlib([*url, "--accession", "NO-SUCH-ACCESSION"]) == 0
    assert study["study_uid"] not in capsys.readouterr().out
