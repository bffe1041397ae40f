"""Audit records from the apps: the upload page (Streamlit AppTest, in-process fixture model)
with a radiologist's feedback round trip and a database that is down, and ``tumorlib predict``."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from serving.audit.store import AuditStore
from streamlit_app import backend as backends
from tests.fixtures import audit as audit_fixtures
from tests.fixtures.paths import APP
from tests.fixtures.serving import make_images
from tests.tumorlib.inputs.test_dicom import PATIENT, make_dicom, ramp
from tumorlib_cli.predict import main as predict

audit_env = audit_fixtures.audit_env


def wait_for(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    return condition()


def rows(path: Path, kind: str) -> list[dict]:
    if not path.exists():
        return []
    store = AuditStore(f"sqlite:///{path}")
    try:
        return store.rows(kind, with_data=kind == "kept_image")
    finally:
        store.engine.dispose()


@pytest.fixture
def page(monkeypatch, fixture_export, audit_env):
    for key in (backends.ENV_URL, backends.ENV_MODEL_NAME, backends.ENV_TIMEOUT):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv(backends.ENV_MODEL_BASE_PATH, str(fixture_export))
    return AppTest.from_file(str(APP), default_timeout=120)


def upload(at: AppTest, files: list[tuple[str, bytes]]) -> AppTest:
    at.file_uploader[0].set_value([(name, data, "image/png") for name, data in files])
    return at.run()


def by_key(elements, prefix: str):
    return [e for e in elements if str(e.key or "").startswith(prefix)]


def test_page_records_each_answer_once_and_feedback_round_trips(page, audit_env):
    images = make_images(2, seed=5)
    at = upload(page.run(), [("patient-x-1.png", images[0]), ("patient-x-2.png", images[1])])
    assert not at.exception
    assert sum(m.value.startswith("#### ") for m in at.markdown) == 2
    at.run()  # a rerun shows the same answers: not new predictions
    records = wait_for(
        lambda: len(rows(audit_env, "prediction")) == 2 and rows(audit_env, "prediction")
    )
    assert {r["input_sha256"] for r in records} == {hashlib.sha256(i).hexdigest() for i in images}
    assert {(r["source"], r["backend"], r["model_version"]) for r in records} == {
        ("page", "in-process", 1)
    }
    assert "patient-x" not in str(records)
    by_hash = {r["input_sha256"]: r["id"] for r in records}
    first = by_hash[hashlib.sha256(images[0]).hexdigest()]
    at.radio(key=f"verdict_{first}").set_value("disagree")
    at.selectbox(key=f"corrected_{first}").set_value("pituitary")
    at.text_input(key=f"note_{first}").set_value("looks pituitary")
    at.toggle(key=f"keep_{first}").set_value(True)
    submit = [b for b in at.button if b.label == "Submit feedback"]
    submit[0].click()
    at.run()
    assert not at.exception
    assert any("Feedback recorded" in s.value for s in at.success)
    feedback = wait_for(lambda: rows(audit_env, "feedback"))
    assert [
        (f["prediction_id"], f["verdict"], f["corrected_class"], f["note"]) for f in feedback
    ] == [(first, "disagree", "pituitary", "looks pituitary")]
    kept = wait_for(lambda: rows(audit_env, "kept_image"))
    assert [k["prediction_id"] for k in kept] == [first] and kept[0]["data"][:4] == b"\x89PNG"
    assert len(rows(audit_env, "prediction")) == 2

    at.sidebar.toggle(key="show_performance").set_value(True)
    at.run()
    assert not at.exception
    assert any("brain_mri version 1" in m.value for m in at.markdown)


def test_page_with_the_database_down_still_answers_and_writes_later(page, audit_env, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the database folder should be")
    database = blocker / "audit.sqlite"
    monkeypatch.setenv("TUMORLIB_AUDIT_URL", f"sqlite:///{database}")
    at = upload(page.run(), [("a.png", make_images(1, seed=9)[0])])
    assert not at.exception
    assert sum(m.value.startswith("#### Predicted") for m in at.markdown) == 1
    time.sleep(1.0)
    at.run()
    warnings = " ".join(w.value for w in at.warning)
    assert "audit database" in warnings and "waiting" in warnings
    blocker.unlink()  # the database comes back
    assert wait_for(lambda: len(rows(database, "prediction")) == 1, timeout=40)


@pytest.fixture
def slices(tmp_path) -> Path:
    folder = tmp_path / "slices"
    folder.mkdir()
    (folder / "a.png").write_bytes(make_images(1, seed=3)[0])
    (folder / "c.dcm").write_bytes(make_dicom(ramp()))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


def test_cli_records_every_answered_file_without_patient_data(fixture_export, slices, tmp_path,
                                                              audit_env, monkeypatch):  # fmt: skip
    monkeypatch.setenv("TUMORLIB_AUDIT_SALT", "pepper")
    out = tmp_path / "out.csv"
    argv = [str(slices), "-o", str(out), "--model-base-path", str(fixture_export), "--no-progress"]
    predict([*argv, "--audit-sop-uid"])
    assert out.is_file()
    records = rows(audit_env, "prediction")
    assert len(records) == 2  # the broken file has no answer, so no record
    dicom = (slices / "c.dcm").read_bytes()
    by_hash = {r["input_sha256"]: r for r in records}
    assert by_hash[hashlib.sha256(dicom).hexdigest()]["sop_uid_hash"]
    assert by_hash[hashlib.sha256((slices / "a.png").read_bytes()).hexdigest()]["frame"] is None
    assert {r["source"] for r in records} == {"cli"}
    text = str(records) + str(rows(audit_env, "model"))
    assert PATIENT not in text and "ID-424242" not in text and "19700101" not in text
    predict([*argv, "--no-audit"])
    assert len(rows(audit_env, "prediction")) == 2


def test_cli_with_the_database_down_still_writes_its_csv(
    fixture_export, slices, tmp_path, audit_env, monkeypatch, caplog
):
    monkeypatch.setenv("TUMORLIB_AUDIT_URL", "postgresql+psycopg://x@127.0.0.1:1/none")
    out = tmp_path / "out.csv"
    predict([str(slices / "a.png"), "-o", str(out), "--model-base-path", str(fixture_export),
             "--no-progress"])  # fmt: skip
    assert out.read_text().count("\n") == 2
    spool = audit_env.parent / "spool.jsonl"
    assert spool.read_text().count("\n") == 2  # the model row and the prediction, for later
    assert "unreachable" in caplog.text
