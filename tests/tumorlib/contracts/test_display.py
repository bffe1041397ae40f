"""Untrusted text made safe: escapes, URLs without credentials, CSV cells that are never formulas,
and the CLI's logging that keeps libraries (and what they quote) off the terminal."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.fixtures.paths import REPO_ROOT
from tumorlib.contracts.display import csv_cell, printable, safe_url, without_credentials


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("MR \x1b[2J\x1b[31mbrain", "MR \\x1b[2J\\x1b[31mbrain"),
        ("title\x1b]0;owned\x07", "title\\x1b]0;owned\\x07"),
        ("two\nlines\r", "two\\x0alines\\x0d"),
        ("bidi \u202eevil", "bidi \\u202eevil"),
        ("Müller^Jörg 脳", "Müller^Jörg 脳"),
    ],
)
def test_printable_escapes_every_control_character_and_keeps_letters(raw, shown):
    assert printable(raw) == shown
    assert printable("x" * 500, 10) == "x" * 9 + "…"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://svc:pw@host:8501/v1", "http://host:8501/v1"),
        ("https://user@pacs/dicom-web?x=1", "https://pacs/dicom-web?x=1"),
        ("postgresql+psycopg://u:p%40ss@db:5432/audit", "postgresql+psycopg://db:5432/audit"),
        ("http://a:b@host:notaport/x", "http://host:notaport/x"),
        ("http://127.0.0.1:8501", "http://127.0.0.1:8501"),
        ("http://h/\x1b[2J", "http://h/\\x1b[2J"),
    ],
)
def test_safe_url_drops_credentials(url, shown):
    assert safe_url(url) == shown


def test_without_credentials_removes_the_urls_secrets_from_a_message():
    message = "failed for http://svc:s3cret@h/x (user svc, password s3cret)"
    cleaned = without_credentials(message, "http://svc:s3cret@h/x")
    assert "s3cret" not in cleaned and "svc:" not in cleaned


@pytest.mark.parametrize("value", ["=1+1", "+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"])
def test_csv_cells_that_a_spreadsheet_would_run_become_text(value):
    cell = csv_cell(value)
    assert cell.startswith("'") and "\t" not in cell and "\r" not in cell


def test_csv_cells_keep_numbers_and_plain_text():
    assert csv_cell(-2.5) == -2.5 and csv_cell(3) == 3 and csv_cell(None) is None
    assert csv_cell("glioma") == "glioma" and csv_cell("a\x1bb") == "a\\x1bb"


def test_the_cli_keeps_library_loggers_at_warning_and_quoting_ones_silent():
    """In a fresh process: our INFO shows; a library's INFO (highdicom's "copy attributes of
    module ...") does not; urllib3 and pydicom, which quote URLs and header values, say nothing
    even at WARNING; an error's escape sequences are shown, not run."""
    script = (
        "import logging\n"
        "from tumorlib.contracts.cli import CommandError, run_command\n"
        "def body():\n"
        "    logging.getLogger('serving.pacs').info('ours at info')\n"
        "    logging.getLogger('highdicom.base').info('copy attributes of module Patient')\n"
        "    logging.getLogger('somelib').info('a library at info')\n"
        "    logging.getLogger('somelib').warning('a library warning')\n"
        "    logging.getLogger('urllib3.connectionpool').warning('Retrying /?PatientID=P-1')\n"
        "    logging.getLogger('pydicom').warning('Invalid value for VR DA: 1970-P-1')\n"
        "    raise CommandError('bad \\x1b[2J thing')\n"
        "raise SystemExit(run_command(body))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )
    assert done.returncode == 1
    err = done.stderr
    assert "ours at info" in err and "a library warning" in err
    assert "copy attributes" not in err and "a library at info" not in err
    assert "P-1" not in err and "\x1b" not in err and "error: bad \\x1b[2J thing" in err
