"""``tumorlib audit`` as a careless or hostile user drives it: reports never create or change a
database, a downgrade that would drop records needs ``--yes-delete-records``, exports are private
and their cells never run as formulas, and bad URLs or outputs are words, not tracebacks."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import stat

import pytest

from serving.audit import records
from serving.audit.store import AuditStore, sqlite_file
from tests.fixtures.audit import postgres_cluster  # noqa: F401 (fixture)
from tests.serving.audit.test_performance import _prediction
from tumorlib_cli.__main__ import main as tumorlib

REPORTS = [
    ["performance"],
    ["drift"],
    ["export", "--output", "OUT"],
    ["dataset", "--output", "OUT"],
]
HOSTILE_NOTES = ['=HYPERLINK("http://x","y")', "@SUM(A1)", "+1+1", "-2+3", "\tcmd", "a\x1b[2Jb"]


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.sqlite'}"
    return request.getfixturevalue("postgres_cluster").new_database()


def _fill(url: str) -> str:
    """One model, one prediction with a hostile note in its feedback and a kept image."""
    store = AuditStore(url)
    model = records.ModelInfo("brain_mri", 3, {})
    row = records.prediction_row(_prediction(0, 0.9), b"x", model=model, backend="b", source="test")
    rows = [("model", records.model_row(model)), ("prediction", row)]
    rows += [("feedback", records.feedback_row(row["id"], "agree", note=n)) for n in HOSTILE_NOTES]
    rows.append(("kept_image", records.kept_image_row(row["id"], _png())))
    store.write(rows)
    store.engine.dispose()
    return row["id"]


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8, 8), 90).save(buffer, format="PNG")
    return buffer.getvalue()


def _fingerprint(url: str) -> str:
    path = sqlite_file(url)
    if path is None:  # PostgreSQL: the revision and the row counts
        store = AuditStore(url, read_only=True)
        try:
            return f"{store.current_revision()}:{store.record_count()}"
        finally:
            store.engine.dispose()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("report", REPORTS, ids=lambda r: r[0])
def test_reports_never_create_a_database_or_its_folder(report, tmp_path, capsys):
    target = tmp_path / "no" / "such" / "dir" / "x.sqlite"
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in report]
    assert tumorlib(["audit", "--url", f"sqlite:///{target}", *argv]) == 1
    err = capsys.readouterr().err
    assert "there is no audit database" in err and "Traceback" not in err
    assert not (tmp_path / "no").exists()
    assert tumorlib(["audit", "--url", f"sqlite:///{target}", "purge"]) == 1
    assert not (tmp_path / "no").exists()


def test_a_sqlite_uri_url_never_makes_a_file_colon_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "missing.sqlite"
    assert tumorlib(["audit", "--url", f"sqlite:///file:{missing}?mode=ro&uri=true", "drift"]) == 1
    assert "there is no audit database" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == []
    # migrate does create — the file the URI names, not a ./file: tree
    created = tmp_path / "db" / "made.sqlite"
    assert (
        tumorlib(["audit", "--url", f"sqlite:///file:{created}?mode=rwc&uri=true", "migrate"]) == 0
    )
    assert created.is_file() and sorted(os.listdir(tmp_path)) == ["db"]


def test_reports_open_read_only_and_never_migrate(url, tmp_path, capsys):
    _fill(url)
    before = _fingerprint(url)
    for report in REPORTS[:2]:
        assert tumorlib(["audit", "--url", url, *report]) == 0
    assert _fingerprint(url) == before
    store = AuditStore(url, read_only=True)
    try:
        with pytest.raises(Exception, match="(?i)read.?only"):
            store.write([("model", records.model_row(records.ModelInfo("m", 9, {})))])
    finally:
        store.engine.dispose()

    assert tumorlib(["audit", "--url", url, "migrate", "--down", "--revision", "base",
                     "--yes-delete-records"]) == 0  # fmt: skip
    outdated = _fingerprint(url)
    capsys.readouterr()
    assert tumorlib(["audit", "--url", url, "performance"]) == 1
    assert "run `tumorlib audit migrate` first" in capsys.readouterr().err
    assert _fingerprint(url) == outdated  # the report did not migrate it


def test_a_downgrade_that_drops_records_needs_yes_delete_records(url, capsys):
    _fill(url)
    down = ["audit", "--url", url, "migrate", "--down", "--revision", "base"]
    assert tumorlib(down) == 1
    err = capsys.readouterr().err
    assert "drops tables holding 9 record(s)" in err and "--yes-delete-records" in err
    store = AuditStore(url, read_only=True)
    try:
        assert store.record_count() == 9 and store.current_revision() == "0001"
    finally:
        store.engine.dispose()
    assert tumorlib([*down, "--yes-delete-records"]) == 0
    assert tumorlib(down) == 0  # nothing left to lose: no flag needed


def test_exports_are_private_and_their_cells_never_formulas(tmp_path):
    url = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    _fill(url)
    out = tmp_path / "export"
    assert tumorlib(["audit", "--url", url, "export", "--output", str(out)]) == 0
    assert tumorlib(["audit", "--url", url, "dataset", "--output", str(tmp_path / "ds")]) == 0
    for folder in (out, tmp_path / "ds"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        for path in folder.rglob("*"):
            expected = 0o700 if path.is_dir() else 0o600
            assert stat.S_IMODE(path.stat().st_mode) == expected, path
    assert len(list((tmp_path / "ds").rglob("*.png"))) == 1
    with open(out / "feedback.csv", newline="") as handle:
        notes = [row["note"] for row in csv.DictReader(handle)]
    assert len(notes) == len(HOSTILE_NOTES)
    for note in notes:
        assert not note.startswith(("=", "+", "-", "@", "\t")), note
        assert "\x1b" not in note
    assert '\'=HYPERLINK("http://x","y")' in notes and "a\\x1b[2Jb" in notes


def test_an_export_onto_a_file_is_words_not_a_traceback(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    _fill(url)
    existing = tmp_path / "report.csv"
    existing.write_text("keep me")
    for action in ("export", "dataset"):
        assert tumorlib(["audit", "--url", url, action, "--output", str(existing)]) == 1
        err = capsys.readouterr().err
        assert "is a file, not a folder" in err and "Traceback" not in err
    assert existing.read_text() == "keep me"


@pytest.mark.parametrize(
    "bad",
    ["garbage://x", "postgresql+nosuchdriver://u:s3cret-pw@h/db", "sqlite:///" + "\x1b[2J.sqlite"],
)
def test_a_bad_url_is_one_line_without_its_password(bad, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert tumorlib(["audit", "--url", bad, "performance"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: audit database") and "Traceback" not in err
    assert "s3cret-pw" not in err and "\x1b" not in err
    assert os.listdir(tmp_path) == []
