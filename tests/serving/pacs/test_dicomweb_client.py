"""The DICOMweb client against hostile PACSes on 127.0.0.1 (no Orthanc needed): silent,
trickling, answering 3 GB or 503 forever, not DICOMweb at all, refusing part of an upload, and a
series that streams more instances than its count said. Each ends in words, within the deadline,
with the credentials and patient values nowhere in what is printed."""

from __future__ import annotations

import json
import time

import pytest
from pydicom.uid import generate_uid

from serving.pacs.dicomweb import Pacs, PacsError
from tests.fixtures.http_servers import (
    always,
    endless,
    hostile_server,
    response,
    silent,
    trickle,
)
from tests.fixtures.serving import free_port
from tests.fixtures.studies import make_dicom_series, phantom
from tumorlib_cli.__main__ import main as tumorlib

SLACK_S = 1.5
SECRET = "pacs-" + "pa55"


def _studies_json(description: str = "MR brain", uid: str = "1.2.3") -> bytes:
    return json.dumps(
        [
            {
                "0020000D": {"vr": "UI", "Value": [uid]},
                "00081030": {"vr": "LO", "Value": [description]},
                "00080061": {"vr": "CS", "Value": ["MR"]},
                "00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^JANE-SECRET"}]},
                "00100030": {"vr": "DA", "Value": ["not-a-date-1970-SECRET"]},
            }
        ]
    ).encode()


def test_a_silent_pacs_is_an_error_in_words_within_the_timeout(capsys):
    with hostile_server(silent) as server:
        start = time.monotonic()
        code = tumorlib(["pacs", "studies", "--url", server.url, "--timeout", "1"])
        took = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 1 and "did not answer within 1 s" in err and "Traceback" not in err
    assert took < 1 + SLACK_S


def test_a_trickling_pacs_is_stopped_by_the_command_deadline(capsys):
    with hostile_server(trickle(0.3)) as server:
        start = time.monotonic()
        argv = ["pacs", "studies", "--url", server.url, "--timeout", "30", "--deadline", "2"]
        code = tumorlib(argv)
        took = time.monotonic() - start
    err = capsys.readouterr().err
    assert code == 1 and "did not answer within" in err
    assert took < 2 + SLACK_S


def test_an_unreachable_pacs_never_shows_the_password_in_the_url(capsys):
    url = f"http://radiology:{SECRET}@127.0.0.1:{free_port()}/dicom-web"
    assert tumorlib(["pacs", "studies", "--url", url, "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert "Cannot reach the PACS at http://127.0.0.1:" in err
    assert SECRET not in err and "radiology:" not in err


def test_a_3_gb_search_answer_stops_at_the_cap(capsys):
    with hostile_server(endless(3 * 1024**3)) as server:
        assert tumorlib(["pacs", "studies", "--url", server.url, "--timeout", "60"]) == 1
        time.sleep(0.2)
        assert server.sent < 3 * 1024**3 / 20
    err = capsys.readouterr().err
    assert "answered with more than 16.0 MB" in err and "Traceback" not in err


def test_503_forever_is_an_http_status_in_words_not_a_retry_error(capsys):
    with hostile_server(always(503)) as server:
        pacs = Pacs(server.url, timeout_s=10)
        with pytest.raises(PacsError, match="answered HTTP 503"):
            pacs.find_studies()
        assert len(server.requests) == 4  # the first try and three retries of an idempotent GET
    with hostile_server(always(503)) as server:
        assert tumorlib(["pacs", "studies", "--url", server.url]) == 1
    assert "RetryError" not in capsys.readouterr().err


def test_a_server_that_is_not_dicomweb_is_named_as_such(capsys):
    page = response(
        200, b"<html><body>Orthanc Explorer</body></html>", {"Content-Type": "text/html"}
    )
    with hostile_server(lambda conn, _r, srv: srv.send(conn, page)) as server:
        assert tumorlib(["pacs", "studies", "--url", server.url]) == 1
    err = capsys.readouterr().err
    assert "did not answer like a DICOMweb service" in err and "Expecting value" not in err


def test_patient_values_and_escape_sequences_from_a_pacs_never_reach_the_terminal(capsys):
    answer = response(200, _studies_json("MR \x1b[2J\x1b[31mbrain\x1b]0;owned\x07"))
    with hostile_server(lambda conn, _r, srv: srv.send(conn, answer)) as server:
        assert tumorlib(["pacs", "studies", "--url", server.url]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "\\x1b[2J" in out  # shown, not acted on
    assert "SECRET" not in out + err and "1970" not in out + err


def test_the_filters_are_sent_and_not_printed(capsys):
    answer = response(200, b"[]")
    with hostile_server(lambda conn, _r, srv: srv.send(conn, answer)) as server:
        argv = ["pacs", "studies", "--url", server.url, "--patient-id", "PID-SECRET-7"]
        assert tumorlib([*argv, "--accession", "ACC-99"]) == 0
        (request,) = server.requests
    query = request.split(b"\r\n", 1)[0].decode()
    assert "PatientID=PID-SECRET-7" in query and "AccessionNumber=ACC-99" in query
    assert "ModalitiesInStudy=MR" in query
    out, err = capsys.readouterr()
    assert "PID-SECRET" not in out + err and "0 studies" in err


def _dicomweb(series_count: int, files: list[bytes], stow: bytes | None = None):
    """A minimal DICOMweb server: QIDO for one series (with a stale count), WADO streaming
    ``files`` as multipart, STOW answering ``stow``."""
    boundary = "tumorlib-test-boundary"
    series = [
        {
            "0020000E": {"vr": "UI", "Value": ["9.9.9"]},
            "00080060": {"vr": "CS", "Value": ["MR"]},
            "00201209": {"vr": "IS", "Value": [series_count]},
        }
    ]

    def handle(conn, request: bytes, server) -> None:
        line = request.split(b"\r\n", 1)[0].decode()
        if line.startswith("POST"):
            server.send(conn, response(202, stow or b"{}", {"Content-Type": "application/json"}))
        elif "/series?" in line or line.split()[1].endswith("/series"):
            server.send(conn, response(200, json.dumps(series).encode()))
        else:
            body = (
                b"".join(
                    f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                    + f
                    + b"\r\n"
                    for f in files
                )
                + f"--{boundary}--\r\n".encode()
            )
            kind = f'multipart/related; type="application/dicom"; boundary={boundary}'
            server.send(conn, response(200, body, {"Content-Type": kind}))

    return handle


def test_a_series_streaming_more_instances_than_its_count_stops_at_the_limit():
    files = [data for _, data in make_dicom_series(phantom(6, size=16))]
    with hostile_server(_dicomweb(2, files)) as server:
        pacs = Pacs(server.url)
        assert len(pacs.retrieve_series("1.2.3", "9.9.9")) == 6  # no limit hit: all of them
        with pytest.raises(PacsError, match="holds 4 files; the limit is 3"):
            pacs.retrieve_series("1.2.3", "9.9.9", max_instances=3)  # the count said 2


def test_a_pacs_that_refuses_part_of_an_upload_is_an_error_that_says_how_much():
    import io

    import pydicom

    stored = {"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.1"]}}]}}
    failed = {"00081198": {"vr": "SQ", "Value": [{"00081197": {"vr": "US", "Value": [272]}}]}}
    answer = json.dumps({**stored, **failed}).encode()
    study = generate_uid()
    files = make_dicom_series(phantom(2, size=8), study_uid=study)
    datasets = [pydicom.dcmread(io.BytesIO(data)) for _, data in files]
    with hostile_server(_dicomweb(0, [], stow=answer)) as server:
        with pytest.raises(
            PacsError,
            match=r"refused 1 of 2 result instances \(failure reason 272\); 1 were stored",
        ):
            Pacs(server.url, timeout_s=10).store(datasets)
        assert len(server.requests) == 1  # a POST is never repeated


def test_library_loggers_never_reach_the_terminal_of_a_real_command(tmp_path):
    """A fresh ``tumorlib pacs studies`` process against a PACS answering 503: urllib3 would log
    each retry with the URL — whose query holds the PatientID filter — and dicomweb-client its
    requests; the command's stderr has our one error line and nothing else."""
    import subprocess
    import sys

    from tests.fixtures.paths import REPO_ROOT

    with hostile_server(always(503)) as server:
        argv = ["pacs", "studies", "--url", server.url, "--patient-id", "PID-SECRET-9"]
        done = subprocess.run(
            [sys.executable, "-m", "tumorlib_cli", *argv, "--timeout", "5"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO_ROOT,
        )
        assert len(server.requests) == 4  # it did retry, three times
    assert done.returncode == 1
    native = ("I0000", "W0000", "E0000", "WARNING: All log messages", "To enable the following")
    lines = [ln for ln in done.stderr.splitlines() if ln.strip() and not ln.startswith(native)]
    assert len(lines) == 1 and lines[0].startswith("error: The PACS at"), done.stderr
    assert "PID-SECRET" not in done.stdout + done.stderr and "Retrying" not in done.stderr


def test_a_series_streaming_past_the_study_byte_limit_is_stopped_while_it_streams():
    """One instance of 3 GB (a 600 MB one took 4.6 GB before): refused at the study byte limit
    plus the multipart framing, having read only that much."""
    series = [
        {"0020000E": {"vr": "UI", "Value": ["9.9.9"]}, "00080060": {"vr": "CS", "Value": ["MR"]}}
    ]
    boundary = "b"

    def handle(conn, request: bytes, server) -> None:
        if b"/series?" in request.split(b"\r\n", 1)[0] or request.split(b" ")[1].endswith(
            b"/series"
        ):
            server.send(conn, response(200, json.dumps(series).encode()))
            return
        kind = f"multipart/related; type=application/dicom; boundary={boundary}"
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nConnection: close\r\n\r\n"
        server.send(
            conn,
            head.encode() + f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
        )
        block = bytes(1 << 20)
        for _ in range(3 * 1024):
            server.send(conn, block)
        raise OSError("done")

    limit = 8 * 1024 * 1024
    with hostile_server(handle) as server:
        with pytest.raises(PacsError, match="sent more than 8.0 MB, the limit for a study"):
            Pacs(server.url, timeout_s=60).retrieve_series("1.2.3", "9.9.9", max_bytes=limit)
        time.sleep(0.2)
        assert server.sent < 3 * 1024**3 / 20
